"""BertCrf: CRF decoding against a brute-force oracle, and the overfit-and-round-trip smoke test."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from model import bert_crf  # noqa: E402
from model.data import Example, write_jsonl  # noqa: E402
from model.train import TrainConfig, load_checkpoint, predict, train  # noqa: E402
from stream.tagging.spans import Span, label_list, split_tag, transition_rules  # noqa: E402
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


def test_a_softmax_head_learns_each_unit_alone_and_serves_as_a_crf_that_allows_only_bioes_paths(tmp_path):
    from export.bundle import export_bundle
    from export.config import ExportConfig
    from stream.tagging.tagger import Tagger

    examples = [Example(str(i), text, tuple(Span(s, e, label) for s, e, label in spans))
                for i, (text, spans) in enumerate(SENTENCES)]
    data = tmp_path / "ten.jsonl"
    write_jsonl(data, examples)
    result = train(TrainConfig(train=(str(data),), dev=str(data), out=str(tmp_path / "ck"), layers=1, hidden=64,
                               heads=2, epochs=60, batch_size=5, lr=3e-3, head_lr=1e-2, warmup=0.05, patience=60,
                               dropout=0.0, threads=2, head="softmax"), log=lambda _: None)
    assert result.dev.micro.f1 == 1.0
    checkpoint = load_checkpoint(tmp_path / "ck")
    assert checkpoint.model.head == "softmax" and checkpoint.meta["head"] == "softmax"
    # The untrained CRF holds BIOES's rules and nothing else: 0 where a tag may come, DISALLOWED where not.
    opens, follows, closes = transition_rules(checkpoint.labels)
    crf = checkpoint.model.crf
    for param, allowed in ((crf.start_transitions, opens), (crf.transitions, follows), (crf.end_transitions, closes)):
        assert param.tolist() == torch.where(torch.tensor(allowed), 0.0, bert_crf.DISALLOWED).tolist()
    held_out = write_synth(tmp_path / "held.jsonl", 200, seed=5)
    bundle = export_bundle(ExportConfig(checkpoint=str(tmp_path / "ck"), out=str(tmp_path / "bundle"),
                                        held_out=(str(held_out),)), log=lambda _: None)
    tagger = Tagger.load(bundle, device="cpu")
    onnx_spans = [[Span(t.start, t.end, t.type) for t in spans] for spans in tagger.tag_texts([e.text for e in examples])]
    assert onnx_spans == [list(e.spans) for e in examples]
    with pytest.raises(ValueError, match="CRF head"):
        TrainConfig(train=(str(data),), out=str(tmp_path / "x"), head="softmax", weak=(str(data),))


def _legal(labels, path) -> bool:
    previous, previous_type = "O", None
    for tag in path:
        prefix, entity = split_tag(labels[tag])
        continues = prefix in {"I", "E"}
        if (previous in {"B", "I"}) != continues or (continues and entity != previous_type):
            return False
        previous, previous_type = prefix, entity
    return previous not in {"B", "I"}


def test_a_constrained_softmax_head_decodes_the_best_legal_bioes_path_and_the_argmax_when_it_is_legal():
    labels = label_list(["brand", "color"])
    torch.manual_seed(3)
    model = bert_crf.BertCrf(bert_crf.scratch_encoder(50, 1, 16, 2, 64), num_tags=len(labels), head="softmax")
    bert_crf.constrain_softmax(model, labels)
    index = {tag: i for i, tag in enumerate(labels)}
    # Taken unit by unit these say B-brand O E-brand: two broken halves of one entity.
    broken = torch.full((1, 3, len(labels)), -5.0)
    for unit, (tag, score) in enumerate([("B-brand", 3.0), ("O", 1.0), ("E-brand", 3.0)]):
        broken[0, unit, index[tag]] = score
    broken[0, 1, index["I-brand"]] = 0.5
    assert [labels[t] for t in model.crf.decode(broken)[0]] == ["B-brand", "I-brand", "E-brand"]
    for _ in range(20):
        emissions = torch.randn(1, 4, len(labels)) * 3
        best = max((p for p in itertools.product(range(len(labels)), repeat=4) if _legal(labels, p)),
                   key=lambda p: sum(float(emissions[0, i, t]) for i, t in enumerate(p)))
        assert tuple(model.crf.decode(emissions)[0]) == best
        argmax = tuple(emissions[0].argmax(-1).tolist())
        assert not _legal(labels, argmax) or best == argmax
    crf_head = bert_crf.BertCrf(bert_crf.scratch_encoder(50, 1, 16, 2, 64), num_tags=len(labels))
    before = [p.clone() for p in crf_head.crf.parameters()]
    bert_crf.constrain_softmax(crf_head, labels)   # a trained CRF keeps what it learnt
    assert all(torch.equal(a, b) for a, b in zip(before, crf_head.crf.parameters()))


def test_the_average_of_the_last_epochs_is_their_mean_and_kept_only_when_dev_says_better(tmp_path):
    from model.metrics import entity_scores
    from model.schedule import LastEpochs

    model = bert_crf.BertCrf(bert_crf.scratch_encoder(50, 1, 16, 2, 64), num_tags=3)
    last = LastEpochs(3)
    for value in (1.0, 2.0, 3.0, 6.0):      # four epochs: the first falls out
        with torch.no_grad():
            model.emit.weight.fill_(value)
        last.add(model)
    perfect = entity_scores([[Span(0, 1, "brand")]], [[Span(0, 1, "brand")]])
    lines = []
    assert last.keep_average_if_better(model, lambda: perfect, 0.5, tmp_path, lines.append) is perfect
    assert torch.allclose(model.emit.weight, torch.full_like(model.emit.weight, 11 / 3))
    saved = torch.load(tmp_path / bert_crf.WEIGHTS, weights_only=True)
    assert torch.allclose(saved["emit.weight"], model.emit.weight)
    assert "average of the last 3 epochs" in lines[0] and lines[0].endswith("kept")
    assert last.keep_average_if_better(model, lambda: perfect, 1.0, tmp_path / "no", lines.append) is None
    assert not (tmp_path / "no").exists() and lines[1].endswith("not kept")
    assert LastEpochs(1).keep_average_if_better(model, lambda: perfect, 0.0, tmp_path, print) is None


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


# ----------------------------------------------------------------------------- lexicon features at the input

def _flag_effect(lexicon_at: str) -> tuple[float, float]:
    """How much the emissions of token 1 and of token 3 move when only token 3's flags change."""
    torch.manual_seed(0)
    model = bert_crf.BertCrf(bert_crf.scratch_encoder(50, 1, 16, 2, 64), num_tags=3, lexicon_width=8,
                             lexicon_at=lexicon_at).eval()
    ids, mask = torch.randint(5, 50, (1, 6)), torch.ones((1, 6), dtype=torch.long)
    flags = torch.zeros((1, 6, 8))
    flagged = flags.clone()
    flagged[0, 3, [0, 5]] = 1.0
    with torch.no_grad():
        moved = (model(ids, mask, flagged) - model(ids, mask, flags)).abs()[0].sum(-1)
    return float(moved[1]), float(moved[3])


def test_flags_at_the_input_reach_other_tokens_through_attention_and_at_the_output_only_their_own():
    elsewhere, own = _flag_effect("input")
    assert elsewhere > 1e-4 and own > 1e-4
    elsewhere, own = _flag_effect("output")
    assert elsewhere == 0.0 and own > 1e-4
    with pytest.raises(ValueError, match="lexicon_at"):
        bert_crf.BertCrf(bert_crf.scratch_encoder(50, 1, 16, 2, 64), num_tags=3, lexicon_width=8, lexicon_at="middle")


def test_an_input_lexicon_model_trains_exports_through_the_parity_gate_and_tags(tmp_path):
    import json

    import onnxruntime as ort

    from export.bundle import export_bundle
    from export.config import ExportConfig
    from stream.tagging.lexicon import LEXICON_FILE
    from stream.tagging.pipeline import Pipeline
    from tests.conftest import DEMO_TAXONOMY

    train_file = write_synth(tmp_path / "train.jsonl", 200, seed=11)
    dev_file = write_synth(tmp_path / "dev.jsonl", 200, seed=12)
    train(TrainConfig(train=(str(train_file),), dev=str(dev_file), out=str(tmp_path / "ck"), layers=1, hidden=32,
                      heads=2, epochs=2, batch_size=16, threads=2, vocab_size=1500, lexicon=(str(DEMO_TAXONOMY),),
                      lexicon_at="input"), log=lambda _: None)
    assert json.loads((tmp_path / "ck" / "tagger.json").read_text(encoding="utf-8"))["lexicon"]["at"] == "input"
    checkpoint = load_checkpoint(tmp_path / "ck")
    width = checkpoint.encoder.lexicon.width
    assert checkpoint.model.lexicon_at == "input"
    assert checkpoint.model.lexicon_embed.weight.shape == (32, width)   # into the 32-wide token embeddings
    assert checkpoint.model.emit.in_features == 32                      # nothing concatenated at the output

    bundle = export_bundle(ExportConfig(checkpoint=str(tmp_path / "ck"), out=str(tmp_path / "bundle"), int8=True,
                                        version="1"), log=lambda _: None)
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["parity"]["passed"] and manifest["parity"]["max_abs_emission_diff"] <= 1e-4
    assert LEXICON_FILE in manifest["files"]
    inputs = {i.name: i.shape for i in ort.InferenceSession(str(bundle / "model.onnx")).get_inputs()}
    assert list(inputs) == ["input_ids", "attention_mask", "lexicon"] and inputs["lexicon"][2] == width

    pipeline = Pipeline.load(bundle, device="cpu")
    titles = [json.loads(line)["text"] for line in dev_file.read_text(encoding="utf-8").splitlines()[:20]]
    tagged = pipeline([{"title": t} for t in titles])
    assert len(tagged) == 20 and any(r.tags for r in tagged)
    assert all(t.field == "title" and titles[i][t.start:t.end] == t.text for i, r in enumerate(tagged) for t in r.tags)


def test_a_sub_token_unit_model_keeps_its_units_through_checkpoint_export_and_serving(tmp_path):
    import json

    from export.bundle import export_bundle
    from export.config import ExportConfig
    from stream.tagging.pipeline import Pipeline

    train_file = write_synth(tmp_path / "train.jsonl", 150, seed=11, lang="en")
    dev_file = write_synth(tmp_path / "dev.jsonl", 200, seed=12, lang="en")
    train(TrainConfig(train=(str(train_file),), dev=str(dev_file), out=str(tmp_path / "ck"), layers=1, hidden=32,
                      heads=2, epochs=1, batch_size=16, threads=2, vocab_size=300, units="tokens"), log=lambda _: None)
    checkpoint = load_checkpoint(tmp_path / "ck")
    assert checkpoint.meta["units"] == "tokens" and checkpoint.encoder.unit_mode == "tokens"
    bundle = export_bundle(ExportConfig(checkpoint=str(tmp_path / "ck"), out=str(tmp_path / "bundle"), version="1"),
                           log=lambda _: None)
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["units"] == "tokens" and manifest["parity"]["passed"]
    encoder = Pipeline.load(bundle, device="cpu").tagger.encoder
    titles = [json.loads(line)["text"] for line in dev_file.read_text(encoding="utf-8").splitlines()[:20]]
    # A small vocabulary splits words into pieces: every piece is a unit of its own.
    assert encoder.unit_mode == "tokens"
    assert sum(len(u) for u in encoder.units(titles)) == sum(len(u.token_ids) for u in encoder.units(titles))


def test_bigram_buckets_pair_each_token_with_its_left_and_right_neighbour():
    ids = torch.tensor([[5, 7, 9]])
    left, right = bert_crf.bigram_buckets(ids, 1000)
    pair = lambda a, b: (a * bert_crf.BIGRAM_PRIME + b) % 1000   # noqa: E731
    assert right.tolist() == [[pair(5, 7), pair(7, 9), pair(9, 0)]]
    assert left.tolist() == [[pair(0, 5), pair(5, 7), pair(7, 9)]]


def test_a_bigram_model_exports_through_the_parity_gate_with_no_new_input(tmp_path):
    import json

    import onnxruntime as ort

    from export.bundle import export_bundle
    from export.config import ExportConfig

    train_file = write_synth(tmp_path / "train.jsonl", 150, seed=11)
    dev_file = write_synth(tmp_path / "dev.jsonl", 200, seed=12)
    train(TrainConfig(train=(str(train_file),), dev=str(dev_file), out=str(tmp_path / "ck"), layers=1, hidden=32,
                      heads=2, epochs=1, batch_size=16, threads=2, vocab_size=1500, bigrams=512), log=lambda _: None)
    checkpoint = load_checkpoint(tmp_path / "ck")
    assert checkpoint.model.bigram_embed.weight.shape == (512, 32)
    ids, mask = torch.tensor([[2, 40, 41, 42, 3]]), torch.ones((1, 5), dtype=torch.long)
    with torch.no_grad():
        before = checkpoint.model(ids, mask)
        # not a constant: the embeddings' LayerNorm takes a vector's mean away, and with it a uniform bump
        bucket = int(bert_crf.bigram_buckets(ids, 512)[1][0, 2])
        checkpoint.model.bigram_embed.weight[bucket] += torch.linspace(-1, 1, 32)
        moved = (checkpoint.model(ids, mask) - before).abs()[0].sum(-1)
    assert moved.min() > 0, "a bigram's vector reaches every token through attention"

    bundle = export_bundle(ExportConfig(checkpoint=str(tmp_path / "ck"), out=str(tmp_path / "bundle"), int8=True,
                                        version="1"), log=lambda _: None)
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["parity"]["passed"] and manifest["parity"]["max_abs_emission_diff"] <= 1e-4
    inputs = [i.name for i in ort.InferenceSession(str(bundle / "model.onnx")).get_inputs()]
    assert inputs == ["input_ids", "attention_mask"]


# ----------------------------------------------------------------------------- rare labels

def test_scores_list_gold_types_the_model_never_learnt_and_count_their_spans_as_misses():
    from model.metrics import entity_scores

    gold = [[Span(0, 4, "brand"), Span(5, 9, "flavour")], [Span(0, 3, "flavour")]]
    scores = entity_scores(gold, [[Span(0, 4, "brand")], []], known=["brand", "color"])
    assert scores.unseen == ("flavour",)
    assert (scores.per_type["flavour"].support, scores.per_type["flavour"].recall) == (2, 0.0)
    assert (scores.micro.support, scores.micro.correct, scores.micro.precision) == (3, 1, 1.0)
    assert scores.to_json()["labels_unseen_in_training"] == ["flavour"]
    assert scores.table().splitlines()[-1].endswith("count as misses): flavour")
    assert "labels_unseen_in_training" not in entity_scores(gold, gold).to_json()   # not checked: not claimed


def test_dev_labels_absent_from_training_are_one_warning_and_scored_as_misses(tmp_path):
    import json

    examples = [Example(str(i), text, tuple(Span(s, e, label) for s, e, label in spans))
                for i, (text, spans) in enumerate(SENTENCES)]
    write_jsonl(tmp_path / "train.jsonl", examples)
    rare = [Example("r1", "薄荷味 牙膏", (Span(0, 3, "flavour"), Span(4, 6, "category"))),
            Example("r2", "Nike mint", (Span(0, 4, "brand"), Span(5, 9, "flavour")))]
    write_jsonl(tmp_path / "dev.jsonl", examples + rare)
    logged: list[str] = []
    result = train(TrainConfig(train=(str(tmp_path / "train.jsonl"),), dev=str(tmp_path / "dev.jsonl"),
                               out=str(tmp_path / "ck"), layers=1, hidden=16, heads=2, epochs=1, threads=2,
                               vocab_size=300), log=logged.append)
    warnings = [line for line in logged if line.startswith("warning:")]
    assert len(warnings) == 1 and "['flavour']" in warnings[0] and "dev spans (2) count as misses" in warnings[0]
    assert result.dev.unseen == ("flavour",) and result.dev.per_type["flavour"].support == 2
    assert result.dev.micro.support == sum(len(e.spans) for e in examples + rare)
    meta = json.loads((tmp_path / "ck" / "tagger.json").read_text(encoding="utf-8"))
    assert meta["dev"]["labels_unseen_in_training"] == ["flavour"] and "B-flavour" not in meta["labels"]


def test_a_scratch_model_given_another_checkpoints_tokenizer_reads_the_same_ids_and_a_bad_one_is_refused(
        tiny_checkpoint, tmp_path):
    from model.data import DataError

    data = tiny_checkpoint.parent
    given = str(tiny_checkpoint / "tokenizer.json")
    config = TrainConfig(train=(str(data / "train.jsonl"),), dev=str(data / "dev.jsonl"), out=str(tmp_path / "ck"),
                         layers=1, hidden=16, heads=2, epochs=1, threads=1, seed=99, tokenizer=given)
    train(config, log=lambda _: None)
    assert (tmp_path / "ck" / "tokenizer.json").read_text() == (tiny_checkpoint / "tokenizer.json").read_text()
    with pytest.raises(ValueError, match="--tokenizer is for models trained from scratch"):
        TrainConfig(train=("t.jsonl",), out="ck", base_model="base", tokenizer=given)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for path, message in ((broken, "not a tokenizer.json"), (tmp_path / "missing.json", "no such tokenizer file")):
        with pytest.raises(DataError, match=message):
            train(replace(config, tokenizer=str(path), out=str(tmp_path / "bad")), log=lambda _: None)
        assert not (tmp_path / "bad").exists()
