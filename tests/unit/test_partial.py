"""Partial annotation: the constrained CRF loss against the ordinary NLL and a brute-force oracle,
and the allowed-tag masks that training builds from partial examples."""

from __future__ import annotations

import itertools
import json
import math

import pytest

torch = pytest.importorskip("torch")

from model import bert_crf  # noqa: E402
from model.data import DataError, Example, read_jsonl  # noqa: E402
from model.samples import collate, make_samples  # noqa: E402
from stream.tagging.spans import Span, label_list  # noqa: E402
from stream.tagging.tokenization import TextEncoder  # noqa: E402


def _crf(num_tags: int, seed: int = 0):
    from torchcrf import CRF

    torch.manual_seed(seed)
    crf = CRF(num_tags, batch_first=True)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_(0, 1.5)
    return crf


def _path_score(crf, emissions, tags) -> float:
    score = crf.start_transitions[tags[0]] + emissions[0, tags[0]]
    for t in range(1, len(tags)):
        score = score + crf.transitions[tags[t - 1], tags[t]] + emissions[t, tags[t]]
    return float((score + crf.end_transitions[tags[-1]]).detach())


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def test_a_weight_scales_each_sequences_loss():
    torch.manual_seed(1)
    model = bert_crf.BertCrf(bert_crf.scratch_encoder(50, 1, 16, 2, 64), num_tags=4).eval()
    batch = {"input_ids": torch.randint(5, 50, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long),
             "unit_positions": torch.tensor([[1, 2, 3, 4], [1, 3, 0, 0]]),
             "unit_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool),
             "tags": torch.tensor([[0, 1, 2, 0], [3, 0, 0, 0]])}
    allowed = torch.nn.functional.one_hot(batch["tags"], 4).bool()
    with torch.no_grad():
        first = model.loss(**{k: v[:1] for k, v in batch.items()})
        second = model.loss(**{k: v[1:] for k, v in batch.items()})
        weight = torch.tensor([1.0, 0.25])
        assert torch.allclose(model.loss(**batch, weight=weight), (first + 0.25 * second) / 2, atol=1e-5)
        assert torch.allclose(model.partial_loss(**batch, allowed=allowed, weight=weight), (first + 0.25 * second) / 2,
                              atol=1e-4)
        softmax = bert_crf.BertCrf(model.encoder, num_tags=4, head="softmax").eval()
        assert torch.allclose(softmax.loss(**batch), (softmax.loss(**{k: v[:1] for k, v in batch.items()})
                                                     + softmax.loss(**{k: v[1:] for k, v in batch.items()})) / 2)


def test_with_every_unit_known_the_partial_loss_is_the_ordinary_nll():
    crf = _crf(5)
    emissions = torch.randn(3, 6, 5) * 3
    tags = torch.randint(0, 5, (3, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] + [0] * 5], dtype=torch.bool)
    allowed = torch.nn.functional.one_hot(tags, 5).bool()
    nll = -crf(emissions, tags, mask=mask, reduction="none")
    assert torch.allclose(bert_crf.constrained_nll(crf, emissions, mask, allowed), nll, atol=1e-4)


def test_the_model_partial_loss_equals_its_loss_on_full_labels():
    torch.manual_seed(1)
    model = bert_crf.BertCrf(bert_crf.scratch_encoder(50, 1, 16, 2, 64), num_tags=4).eval()
    ids = torch.randint(5, 50, (2, 7))
    attention = torch.ones_like(ids)
    positions = torch.tensor([[1, 2, 3, 4], [1, 3, 0, 0]])
    unit_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    tags = torch.tensor([[0, 1, 2, 0], [3, 0, 0, 0]])
    allowed = torch.nn.functional.one_hot(tags, 4).bool()
    loss = model.loss(ids, attention, positions, unit_mask, tags)
    assert torch.allclose(model.partial_loss(ids, attention, positions, unit_mask, allowed, tags=tags), loss, atol=1e-4)
    with pytest.raises(ValueError, match=r"expected allowed of shape \(2, 4, 4\), got \(2, 4, 3\)"):
        model.partial_loss(ids, attention, positions, unit_mask, allowed[..., :3])


def test_the_constrained_marginal_is_the_brute_force_sum_over_allowed_paths():
    num_tags, seq = 3, 4
    crf = _crf(num_tags, seed=2)
    torch.manual_seed(3)
    emissions = torch.randn(3, seq, num_tags) * 2
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    allowed = torch.rand(3, seq, num_tags) > 0.45
    allowed[:, :, 0] |= ~allowed.any(-1)        # at least one tag allowed per unit
    allowed[2, 1] = True                         # a unit left unknown
    got = bert_crf.constrained_nll(crf, emissions, mask, allowed)
    for row in range(3):
        n = int(mask[row].sum())
        paths = list(itertools.product(range(num_tags), repeat=n))
        every = _logsumexp([_path_score(crf, emissions[row, :n], p) for p in paths])
        agreeing = _logsumexp([_path_score(crf, emissions[row, :n], p) for p in paths
                               if all(allowed[row, t, tag] for t, tag in enumerate(p))])
        assert got[row].item() == pytest.approx(every - agreeing, abs=1e-4)
    # Nothing known: every path agrees, nothing to learn.
    free = bert_crf.constrained_nll(crf, emissions, mask, torch.ones_like(allowed))
    assert torch.allclose(free, torch.zeros(3), atol=1e-5)


def test_partial_loss_gradients_are_finite_and_move_the_unknown_units():
    crf = _crf(3)
    emissions = torch.randn(1, 5, 3, requires_grad=True)
    mask = torch.ones(1, 5, dtype=torch.bool)
    allowed = torch.ones(1, 5, 3, dtype=torch.bool)
    allowed[0, 1] = torch.tensor([False, True, False])
    bert_crf.constrained_nll(crf, emissions, mask, allowed).sum().backward()
    assert torch.isfinite(emissions.grad).all()
    assert emissions.grad[0, 1].abs().sum() > 0 and emissions.grad[0, 3].abs().sum() > 0


# ----------------------------------------------------------------------------- samples and batches

def _encoder(wordpiece):
    return TextEncoder(wordpiece, max_length=32, stride=8)


def test_a_partial_example_allows_every_tag_outside_its_spans_and_only_its_tag_inside(wordpiece):
    labels = label_list(["brand", "color"])
    text = "耐克 跑步鞋 黑色"
    gold = Example("g", text, (Span(0, 2, "brand"), Span(7, 9, "color")))
    weak = Example("w", text, (Span(0, 2, "brand"),), partial=True)
    samples, snapped = make_samples(_encoder(wordpiece), [gold, weak], labels)
    assert snapped == 0 and samples[0].known is None
    known = samples[1].known
    allowed = samples[1].allowed(len(labels))
    units = len(samples[1].tags)
    assert sum(known) == 2 and allowed[[i for i in range(units) if known[i]]].sum(-1).tolist() == [1, 1]
    assert all(allowed[i].all() for i in range(units) if not known[i])
    assert samples[0].allowed(len(labels)).sum() == units    # gold: exactly its tag per unit
    batch = collate(samples, _encoder(wordpiece), len(labels))
    assert batch["allowed"].shape == (*batch["unit_mask"].shape, len(labels))
    assert "allowed" not in collate(samples[:1], _encoder(wordpiece), len(labels))   # gold-only: the old loss
    # 'o': unmatched positions are O, so a weak example is a gold one.
    naive, _ = make_samples(_encoder(wordpiece), [weak], labels, unmatched="o")
    assert naive[0].known is None and "allowed" not in collate(naive, _encoder(wordpiece), len(labels))


# ----------------------------------------------------------------------------- the data format

def test_partial_is_read_and_written_back(tmp_path):
    path = tmp_path / "weak.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"id": "a", "text": "耐克跑鞋", "spans": [{"start": 0, "end": 2, "label": "brand"}], "partial": True},
        {"id": "b", "text": "Nike shoes", "spans": []},
        {"id": "c", "title": "Nike shoes", "spans": [], "partial": True},
    ]) + "\n", encoding="utf-8")
    a, b, c = read_jsonl(path)
    assert (a.partial, b.partial, c.partial, c.field) == (True, False, True, "title")
    assert a.to_json() == {"id": "a", "text": "耐克跑鞋", "spans": [{"start": 0, "end": 2, "label": "brand"}],
                           "partial": True}
    assert "partial" not in b.to_json()
    path.write_text(json.dumps({"id": "x", "text": "t", "partial": "yes"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"weak.jsonl:1: 'partial' must be true or false"):
        read_jsonl(path)


def test_the_o_prior_weighs_unknown_units_only():
    """Under a prior, unknown units favour O by log P(O); a uniform prior moves the loss by a
    constant, so it trains exactly as the plain partial CRF; the prior is estimated on gold units."""
    import numpy as np
    from torchcrf import CRF

    from model.bert_crf import constrained_nll
    from model.config import TrainConfig
    from model.samples import Sample, weak_o_prior

    torch.manual_seed(0)
    crf = CRF(4, batch_first=True)
    emissions = torch.randn(2, 5, 4, requires_grad=True)
    mask = torch.ones(2, 5, dtype=torch.bool)
    allowed = torch.ones(2, 5, 4, dtype=torch.bool)
    allowed[:, 0] = False
    allowed[:, 0, 1] = True                     # the first unit is known: tag 1; the rest unknown
    uniform = torch.zeros(2, 5, 4)
    uniform[:, 1:] = np.log(0.25)
    plain = constrained_nll(crf, emissions, mask, allowed)
    weighted = constrained_nll(crf, emissions, mask, allowed, uniform)
    assert torch.allclose(weighted - plain, torch.full((2,), -4 * np.log(0.25)), atol=1e-4)
    favour_o = uniform.clone()
    favour_o[:, 1:, 0] = np.log(0.97)
    favour_o[:, 1:, 1:] = np.log(0.01)
    assert (constrained_nll(crf, emissions, mask, allowed, favour_o) != weighted).all()
    gold = Sample(None, [0, 0, 0, 1])
    weak = Sample(None, [2, 0], known=(True, False))
    config = TrainConfig(train=("x",), out="y", weak=("w",))
    assert weak_o_prior(config, [gold, weak]) == 0.75
    assert weak_o_prior(TrainConfig(train=("x",), out="y", weak_o_prior=0.9), [gold, weak]) == 0.9
    assert weak_o_prior(TrainConfig(train=("x",), out="y", weak_unmatched="unknown"), [gold, weak]) is None


def test_partial_examples_are_training_data_only(tmp_path):
    from model.train import TrainConfig, _split

    gold = [{"id": f"g{i}", "text": "耐克跑鞋", "spans": [{"start": 0, "end": 2, "label": "brand"}]} for i in range(10)]
    partial = [{"id": f"p{i}", "text": "黑色跑鞋", "spans": [{"start": 0, "end": 2, "label": "color"}],
                "partial": True} for i in range(5)]
    empty = {"id": "e", "text": "包邮", "spans": [], "partial": True}
    train_file, weak_file, dev_file = tmp_path / "train.jsonl", tmp_path / "weak.jsonl", tmp_path / "dev.jsonl"
    train_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in gold + partial + [empty]))
    weak_file.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "partial"}, ensure_ascii=False) + "\n"
                                 for r in partial))
    logged = []
    train, dev, labels, weak = _split(TrainConfig(train=(str(train_file),), out="x", weak=(str(weak_file),),
                                                  dev_fraction=0.3, weak_unmatched="unknown"), logged.append)
    assert weak == 5 and not any(e.partial for e in dev) and len(dev) == 3
    assert sum(e.partial for e in train) == 10 and len(train) == 17     # the empty one is skipped
    assert "S-color" in labels and any("without spans skipped" in line for line in logged)
    train, _, _, _ = _split(TrainConfig(train=(str(train_file),), out="x", weak_unmatched="o"), logged.append)
    assert any(e.id == "e" for e in train)                              # all O under 'o'
    dev_file.write_text(json.dumps(partial[0], ensure_ascii=False) + "\n")
    with pytest.raises(DataError, match="dev data must be fully labelled"):
        _split(TrainConfig(train=(str(train_file),), out="x", dev=str(dev_file)), logged.append)


def test_a_teachers_posteriors_weigh_the_unknown_units_of_weak_titles(tiny_checkpoint, tmp_path):
    """`--weak-unmatched teacher`: per unit, the gold-trained teacher's CRF posteriors in the student's
    tag order (rows sum to 1, never below the floor, a tag it lacks only the floor); collate puts their
    logs at unknown units only; and a student trains with them from the teacher checkpoint."""
    import numpy as np

    from model.config import TrainConfig
    from model.samples import Sample
    from model.teacher import FLOOR, unit_posteriors
    from model.train import load_checkpoint, train

    teacher = load_checkpoint(tiny_checkpoint)
    texts = [json.loads(line)["text"] for line in (tiny_checkpoint.parent / "dev.jsonl").read_text().splitlines()[:6]]
    labels = list(reversed(teacher.labels)) + ["S-unseen"]
    posteriors = unit_posteriors(teacher, texts + texts[:1], labels)
    assert len(posteriors) == len(texts)
    for text, units in zip(texts, teacher.encoder.units(texts)):
        p = posteriors[text]
        assert p.shape == (len(units), len(labels))
        assert np.allclose(p.sum(axis=-1), 1.0, atol=1e-5) and (p >= FLOOR / 2).all()
        assert (p[:, -1] <= FLOOR + 1e-9).all()          # the teacher never saw S-unseen
    in_order = unit_posteriors(teacher, texts[:1], teacher.labels)[texts[0]]
    assert np.allclose(in_order[:, ::-1], posteriors[texts[0]][:, :-1], atol=1e-3)

    prior = np.full((3, 4), 0.25, dtype=np.float32)
    prior[:, 0] = [0.7, 0.1, 0.4]
    prior[:, 1:] = ((1 - prior[:, :1]) / 3)
    weak = Sample(None, [2, 0, 0], known=(True, False, False), prior=prior)

    class _Pad:   # collate's padding step, for samples without real windows
        def pad(self, windows):
            from stream.tagging.tokenization import PaddedBatch

            n = len(windows)
            return PaddedBatch(np.zeros((n, 4), np.int64), np.ones((n, 4), np.int64), np.zeros((n, 3), np.int64),
                               np.ones((n, 3), bool))
    batch = collate([Sample(None, [0, 1, 0]), weak], _Pad(), num_tags=4)
    assert "weight" not in batch
    batch = collate([Sample(None, [0, 1, 0]), Sample(None, [2, 0, 0], known=(True, False, False), prior=prior,
                                                         weight=0.25)], _Pad(), num_tags=4)
    assert batch["weight"].tolist() == [1.0, 0.25]
    assert torch.allclose(batch["log_prior"][0], torch.zeros(3, 4))
    assert torch.allclose(batch["log_prior"][1, 0], torch.zeros(4))
    assert torch.allclose(batch["log_prior"][1, 1:], torch.log(torch.from_numpy(prior[1:])))

    gold, weak_file = tmp_path / "gold.jsonl", tmp_path / "weak.jsonl"
    rows = [json.loads(line) for line in (tiny_checkpoint.parent / "train.jsonl").read_text().splitlines()]
    gold.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[:40]), encoding="utf-8")
    weak_file.write_text("".join(json.dumps({**r, "spans": r["spans"][:1]}, ensure_ascii=False) + "\n"
                                 for r in rows[40:80]), encoding="utf-8")
    with pytest.raises(ValueError, match="--weak-teacher is for --weak-unmatched teacher"):
        TrainConfig(train=(str(gold),), out="x", weak=(str(weak_file),), weak_teacher=str(tiny_checkpoint))
    dev = str(tiny_checkpoint.parent / "dev.jsonl")
    result = train(TrainConfig(train=(str(gold),), dev=dev, out=str(tmp_path / "s"),
                               weak=(str(weak_file),), weak_unmatched="teacher", weak_teacher=str(tiny_checkpoint),
                               weak_weight=0.5, layers=1, hidden=32, heads=2, epochs=1, batch_size=16, threads=2,
                               vocab_size=500),
                   log=lambda _: None)
    meta = json.loads((result.out / "tagger.json").read_text())
    assert meta["weak"]["unmatched"] == "teacher" and meta["weak"]["teacher"] == str(tiny_checkpoint)
    assert meta["weak"]["weight"] == 0.5
