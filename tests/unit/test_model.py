"""BertCrf: CRF decoding against a brute-force oracle, and the overfit-and-round-trip smoke test."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from model import bert_crf  # noqa: E402
from model.data import Example, write_jsonl  # noqa: E402
from model.train import TrainConfig, load_checkpoint, predict, train  # noqa: E402
from stream.tagging.spans import Span  # noqa: E402
from tests.conftest import write_synth  # noqa: E402


def _path_score(emissions, tags, crf):
    score = crf.start_transitions[tags[0]] + emissions[0, tags[0]]
    for prev, cur, t in zip(tags, tags[1:], range(1, len(tags))):
        score = score + crf.transitions[prev, cur] + emissions[t, cur]
    return score + crf.end_transitions[tags[-1]]


def test_crf_decode_is_the_brute_force_best_path():
    torch.manual_seed(0)
    model = bert_crf.BertCrf(bert_crf.scratch_encoder(50, 1, 16, 2, 64), num_tags=4).eval()
    with torch.no_grad():
        for p in model.crf.parameters():
            p.normal_(0, 2.0)  # sharp transitions, so the CRF really matters
    ids = torch.randint(5, 50, (3, 7))
    attention = torch.ones_like(ids)
    positions = torch.tensor([[1, 2, 3, 4, 5], [1, 3, 5, 0, 0], [2, 0, 0, 0, 0]])
    unit_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    paths = model.decode(ids, attention, positions, unit_mask)
    with torch.no_grad():
        emissions = model.unit_emissions(ids, attention, positions)
        for row, path in enumerate(paths):
            n = int(unit_mask[row].sum())
            best = max(itertools.product(range(4), repeat=n),
                       key=lambda tags: float(_path_score(emissions[row, :n], list(tags), model.crf)))
            assert tuple(path) == best


def test_loss_rejects_tags_of_the_wrong_shape():
    model = bert_crf.BertCrf(bert_crf.scratch_encoder(50, 1, 16, 2, 64), num_tags=3)
    with pytest.raises(ValueError, match=r"expected tags of shape \(1, 2\), got \(1, 3\)"):
        model.loss(torch.ones(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long),
                   torch.tensor([[1, 2]]), torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.long))


SENTENCES = [
    ("耐克黑色跑步鞋", [(0, 2, "brand"), (2, 4, "color"), (4, 7, "category")]),
    ("华为手机 雅川青 2026新款", [(0, 2, "brand"), (2, 4, "category"), (5, 8, "color")]),
    ("Nike running shoes black", [(0, 4, "brand"), (5, 18, "category"), (19, 24, "color")]),
    ("优衣库 纯棉 T恤 白色 M码", [(0, 3, "brand"), (4, 6, "material"), (7, 9, "category"), (10, 12, "color"), (13, 15, "size")]),
    ("Adidas cotton hoodie grey XL", [(0, 6, "brand"), (7, 13, "material"), (14, 20, "category"), (21, 25, "color"), (26, 28, "size")]),
    ("包邮 小米 扫地机器人", [(3, 5, "brand"), (6, 11, "category")]),
    ("Levi's 501 jeans blue", [(0, 6, "brand"), (7, 10, "model"), (11, 16, "category"), (17, 21, "color")]),
    ("李宁 男士 篮球鞋 秋冬款", [(0, 2, "brand"), (3, 5, "audience"), (6, 9, "category"), (10, 13, "season")]),
    ("Apple iPhone 15 Pro 256GB", [(0, 5, "brand"), (6, 12, "category"), (13, 19, "model"), (20, 25, "size")]),
    ("森马 女士 条纹 连衣裙", [(0, 2, "brand"), (3, 5, "audience"), (6, 8, "pattern"), (9, 12, "category")]),
]


def test_overfit_ten_sentences_then_round_trip_through_onnx(tmp_path):
    from export.bundle import export_bundle
    from export.config import ExportConfig
    from stream.tagging.tagger import Tagger

    examples = [Example(str(i), text, tuple(Span(s, e, label) for s, e, label in spans))
                for i, (text, spans) in enumerate(SENTENCES)]
    for ex in examples:
        assert all(ex.text[s.start:s.end].strip() == ex.text[s.start:s.end] for s in ex.spans)
    data = tmp_path / "ten.jsonl"
    write_jsonl(data, examples)
    result = train(TrainConfig(train=(str(data),), dev=str(data), out=str(tmp_path / "ck"), layers=1, hidden=64,
                               heads=2, epochs=60, batch_size=5, lr=3e-3, head_lr=1e-2, warmup=0.05, patience=60,
                               dropout=0.0, threads=2), log=lambda _: None)
    assert result.dev.micro.f1 == 1.0

    held_out = write_synth(tmp_path / "held.jsonl", 200, seed=5)
    bundle = export_bundle(ExportConfig(checkpoint=str(tmp_path / "ck"), out=str(tmp_path / "bundle"),
                                        held_out=(str(held_out),)), log=lambda _: None)
    tagger = Tagger.load(bundle, device="cpu")
    onnx_spans = [[Span(t.start, t.end, t.type) for t in spans] for spans in tagger.tag_texts([e.text for e in examples])]
    checkpoint = load_checkpoint(tmp_path / "ck")
    assert onnx_spans == predict(checkpoint.model, checkpoint.encoder, checkpoint.labels, examples)
    assert onnx_spans == [list(e.spans) for e in examples]


def test_a_time_budget_reaims_the_schedule_so_the_rate_decays_to_zero_within_it():
    from model.train import BudgetSchedule

    unbudgeted = BudgetSchedule(TrainConfig(train=("x",), out="y", epochs=1000, warmup=0.1), steps_per_epoch=100)
    unbudgeted.observe(20, wall=10.0, cpu=10.0)
    assert (unbudgeted.total, unbudgeted.warmup) == (100_000, 10_000)

    budgeted = BudgetSchedule(TrainConfig(train=("x",), out="y", epochs=1000, warmup=0.1, max_cpu_seconds=100),
                              steps_per_epoch=100)
    budgeted.observe(20, wall=30.0, cpu=10.0)             # 0.5 CPU-s a step: 200 steps fit
    assert (budgeted.total, budgeted.warmup) == (200, 20)
    assert budgeted.factor(10) == 0.5 and budgeted.factor(110) == 0.5 and budgeted.factor(200) == 0.0
    budgeted.observe(100, wall=90.0, cpu=40.0)            # faster than first measured: more steps fit
    assert (budgeted.total, budgeted.warmup) == (250, 20)


def test_the_lexicon_input_is_required_in_the_shape_the_model_was_built_for():
    model = bert_crf.BertCrf(bert_crf.scratch_encoder(50, 1, 16, 2, 64), num_tags=3, lexicon_width=8).eval()
    ids, mask = torch.ones((2, 5), dtype=torch.long), torch.ones((2, 5), dtype=torch.long)
    assert model(ids, mask, torch.zeros((2, 5, 8))).shape == (2, 5, 3)
    with pytest.raises(ValueError, match=r"expected lexicon features of shape \(2, 5, 8\), got None"):
        model(ids, mask)
    with pytest.raises(ValueError, match=r"got \(2, 5, 4\)"):
        model(ids, mask, torch.zeros((2, 5, 4)))
