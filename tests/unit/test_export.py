"""The exporter's parts one by one (graph, fp16, int8, parity, taxonomy) and composed: which
taxonomy a bundle ships, the parity gate, and a retrain that keeps the champion's taxonomy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest

from export.config import ExportConfig, ExportError, RetrainConfig
from export.taxonomy import empty_taxonomy, shipped_taxonomy
from model.config import TrainConfig
from stream.tagging.taxonomy import Taxonomy
from tests.conftest import DEMO_TAXONOMY, ROOT

LABELS = ["O", "B-brand", "I-brand", "E-brand", "S-brand", "B-color", "I-color", "E-color", "S-color"]


def _custom_taxonomy(path: Path) -> Path:
    """The demo taxonomy renamed and grown by one brand: a taxonomy no default would produce."""
    data = json.loads(DEMO_TAXONOMY.read_text(encoding="utf-8"))
    data.update(name="shop-live", version="7")
    data["nodes"].append({"id": "brand.zewos", "type": "brand", "zh": "泽沃斯", "en": "Zewos", "synonyms": [],
                          "parent": None})
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- which taxonomy (no torch)

def test_the_shipped_taxonomy_is_the_one_asked_for_else_the_checkpoints_else_empty(tmp_path):
    custom = _custom_taxonomy(tmp_path / "custom.json")
    asked = shipped_taxonomy(str(custom), DEMO_TAXONOMY, LABELS)
    assert (asked.origin, asked.name, asked.content) == ("asked", "shop-live", custom.read_bytes())
    carried = shipped_taxonomy(None, custom, LABELS)
    assert (carried.origin, carried.path, carried.content) == ("checkpoint", str(custom), custom.read_bytes())

    empty = shipped_taxonomy(None, None, LABELS)
    assert empty.origin == "empty" and empty.content != DEMO_TAXONOMY.read_bytes()
    taxonomy = Taxonomy.from_dict(json.loads(empty.content))
    assert sorted(taxonomy.types) == ["brand", "color"] and not taxonomy.nodes
    assert "empty taxonomy" in empty.describe()
    assert empty_taxonomy(["O"])["types"] == []


def test_a_missing_or_invalid_taxonomy_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ExportError, match="no such taxonomy file"):
        shipped_taxonomy(str(tmp_path / "nowhere.json"), None, LABELS)
    bad = tmp_path / "bad.json"
    bad.write_text('{"nodes": [{"id": "x", "type": "brand"}]}', encoding="utf-8")
    with pytest.raises(ExportError, match="needs a 'zh' or 'en' name"):
        shipped_taxonomy(str(bad), None, LABELS)


def test_every_config_field_has_help_and_the_configs_import_without_torch():
    from model.config import PretrainConfig

    for config in (TrainConfig, PretrainConfig, ExportConfig, RetrainConfig):
        assert all(f.metadata.get("help") for f in fields(config)), config.__name__
    assert ExportConfig(checkpoint="c", out="o").taxonomy is None
    script = ("import sys\n"
              "class Block:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name.split('.')[0] in {'torch', 'transformers', 'onnx', 'torchcrf'}:\n"
              "            raise ImportError(name)\n"
              "sys.meta_path.insert(0, Block())\n"
              "from export.config import ExportConfig, ExportError, RetrainConfig\n"
              "from model.config import PretrainConfig, TrainConfig\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------------------- the checkpoint's taxonomy

def test_training_saves_the_taxonomy_it_was_given(tiny_checkpoint):
    from model.train import load_checkpoint

    checkpoint = load_checkpoint(tiny_checkpoint)
    assert checkpoint.taxonomy is not None
    assert checkpoint.taxonomy.read_bytes() == DEMO_TAXONOMY.read_bytes()
    assert checkpoint.meta["taxonomy"] == str(DEMO_TAXONOMY)


def test_which_taxonomy_a_checkpoint_carries(tmp_path):
    pytest.importorskip("torch")
    from model.data import DataError
    from model.train import checkpoint_taxonomy

    custom = _custom_taxonomy(tmp_path / "custom.json")
    words = tmp_path / "brands.txt"
    words.write_text("Nike\n", encoding="utf-8")
    base = TrainConfig(train=("t",), out="o")

    def carried(**changes):
        return checkpoint_taxonomy(replace(base, **changes))

    assert carried() is None
    assert carried(taxonomy=str(custom)) == custom
    assert carried(lexicon=(str(DEMO_TAXONOMY), f"brand={words}")) == DEMO_TAXONOMY   # the one taxonomy source
    assert carried(lexicon=(str(DEMO_TAXONOMY), str(custom))) is None                  # two: none is guessed
    assert carried(lexicon=(str(DEMO_TAXONOMY),), taxonomy=str(custom)) == custom      # asked for wins
    with pytest.raises(DataError, match="not JSON"):
        carried(taxonomy=str(words))


# ----------------------------------------------------------------------------- the parts alone

def test_graph_fp16_and_int8_each_give_a_runnable_model(tmp_path):
    torch = pytest.importorskip("torch")
    import onnx
    import onnxruntime as ort

    from export.graph import convert_fp16, export_onnx
    from export.quantize import quantize_int8, quantize_int8_static
    from model import bert_crf

    torch.manual_seed(0)
    model = bert_crf.BertCrf(bert_crf.scratch_encoder(60, 1, 32, 2, 64), num_tags=5).eval()
    export_onnx(model, tmp_path / "model.onnx", opset=17)
    convert_fp16(tmp_path / "model.onnx", tmp_path / "model.fp16.onnx")
    quantize_int8(tmp_path / "model.onnx", tmp_path / "model.int8.onnx")

    ids = np.random.default_rng(0).integers(5, 60, (3, 9)).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    quantize_int8_static(tmp_path / "model.onnx", tmp_path / "model.static.onnx", [feeds])
    with torch.no_grad():
        # shape: (batch, seq, tags)
        reference = model(torch.from_numpy(ids), torch.from_numpy(feeds["attention_mask"])).numpy()
    for name, atol in (("model.onnx", 1e-4), ("model.fp16.onnx", 5e-2), ("model.int8.onnx", 0.5),
                       ("model.static.onnx", 0.5)):
        session = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
        got = session.run(["emissions"], feeds)[0]
        assert got.dtype == np.float32 and got.shape == (3, 9, 5)   # fp16 keeps float32 inputs and outputs
        assert np.abs(got - reference).max() <= atol, name
    assert (tmp_path / "model.int8.onnx").stat().st_size < (tmp_path / "model.onnx").stat().st_size
    static = [node.op_type for node in onnx.load(str(tmp_path / "model.static.onnx")).graph.node]
    # Every weight product is integer with a float output; attention's two activation products stay fp32.
    assert static.count("MatMulIntegerToFloat") == 7 and static.count("MatMul") == 2
    assert "DequantizeLinear" not in static and "QLinearMatMul" not in static


def _one_matmul_model(rows: int = 4, columns: int = 3):
    """x (batch, seq, rows) @ w (rows, columns) + b; attention_mask is an input the graph does not read."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])], "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", rows]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", columns])],
        [numpy_helper.from_array(rng.normal(size=(rows, columns)).astype(np.float32), "w"),
         numpy_helper.from_array(np.linspace(-1.0, 2.0, columns).astype(np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_static_int8_scales_cover_every_real_token_and_no_padding(tmp_path):
    import onnx
    import onnxruntime as ort

    from export.quantize import activation_ranges, quantize_int8_static

    rng = np.random.default_rng(2)
    x = rng.uniform(-1.0, 3.0, (8, 50, 4)).astype(np.float32)
    mask = np.ones((8, 50), np.int64)
    mask[:, 40:] = 0
    x[:, 40:] = 1000.0                # padding: computed, never read, so never calibrated on
    x[5, 0, 2] = 20.0                 # one huge real value (BERT's [CLS] and [SEP] have such) is kept
    feeds = [{"x": x[i:i + 4], "attention_mask": mask[i:i + 4]} for i in (0, 4)]
    real = x[mask.astype(bool)]
    model = _one_matmul_model()
    assert activation_ranges(model, ["x"], feeds)["x"] == pytest.approx((real.min(), 20.0))

    onnx.save(model, str(tmp_path / "one.onnx"))
    quantize_int8_static(tmp_path / "one.onnx", tmp_path / "one.int8.onnx", feeds, smoothing=0.0)
    assert [n.op_type for n in onnx.load(str(tmp_path / "one.int8.onnx")).graph.node] == [
        "QuantizeLinear", "MatMulIntegerToFloat"]     # the bias joined the product
    want, got = (ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"]).run(None, feeds[0])[0]
                 for name in ("one.onnx", "one.int8.onnx"))
    real = mask[:4].astype(bool)
    assert np.abs(got - want)[real].max() < 0.5     # x is rounded to steps of 21 / 255


def test_smoothing_moves_an_outlier_channel_into_the_weights(tmp_path):
    import onnx
    import onnxruntime as ort

    from export.quantize import quantize_int8_static, smoothing_scales

    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 30, 64)).astype(np.float32)
    x[..., 1] *= 60.0                 # one outlier channel, as BERT's LayerNorm outputs have
    mask = np.ones((8, 30), np.int64)
    feeds = [{"x": x[i:i + 4], "attention_mask": mask[i:i + 4]} for i in (0, 4)]
    onnx.save(_one_matmul_model(64, 16), str(tmp_path / "one.onnx"))
    errors = {}
    for alpha in (0.0, 0.8):
        out = tmp_path / f"one.{alpha}.onnx"
        quantize_int8_static(tmp_path / "one.onnx", out, feeds, smoothing=alpha)
        want, got = (ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds[1])[0]
                     for path in (tmp_path / "one.onnx", out))
        errors[alpha] = float(np.abs(got - want).mean())
    # The input is divided by fixed constants before it is quantised: still one scale per tensor,
    # so a row's result does not depend on its batch.
    assert [n.op_type for n in onnx.load(str(tmp_path / "one.0.8.onnx")).graph.node] == [
        "Mul", "QuantizeLinear", "MatMulIntegerToFloat"]
    assert errors[0.8] < errors[0.0] / 3, errors

    # s_j = max|x_j|^a / max|w_j|^(1-a); a channel that is all zero keeps s = 1.
    low, high = np.array([-2.0, 0.0, -1.0]), np.array([8.0, 0.0, 0.5])
    weight = np.array([[0.5, -2.0], [1.0, 1.0], [0.25, 0.0]])
    assert smoothing_scales(low, high, [weight], 0.5) == pytest.approx([2.0, 1.0, 2.0])
    assert smoothing_scales(low, high, [weight, 4 * weight], 1.0) == pytest.approx([8.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="smoothing"):
        quantize_int8_static(tmp_path / "one.onnx", tmp_path / "bad.onnx", feeds, smoothing=1.5)


def test_parity_passes_for_the_exported_graph_and_fails_for_changed_weights(tiny_checkpoint, tiny_bundle):
    torch = pytest.importorskip("torch")
    from export.parity import check_parity
    from model.train import load_checkpoint, load_examples
    from stream.tagging.tagger import Tagger

    held_out = load_examples([tiny_checkpoint.parent / "dev.jsonl"])[:200]
    checkpoint = load_checkpoint(tiny_checkpoint)
    fp32 = Tagger.load(tiny_bundle, device="cpu")
    result = check_parity(checkpoint, fp32, held_out, atol=1e-4,
                          variants={"int8": Tagger.load(tiny_bundle, variant="int8", device="cpu")})
    assert result.passed and result.report["texts"] == 200 and result.report["decoded_mismatches"] == 0
    assert result.report["max_abs_emission_diff"] <= 1e-4 and "int8_f1_change" in result.report
    assert set(result.metrics) == {"torch", "fp32", "int8"} and len(result.tagged) == 200
    assert "held-out micro-F1 fp32" in result.summary()

    with torch.no_grad():
        checkpoint.model.emit.bias[1] += 1e-2   # a weight the graph does not have
    changed = check_parity(checkpoint, fp32, held_out, atol=1e-4)
    assert not changed.passed and changed.report["max_abs_emission_diff"] > 1e-4
    assert changed.failure().startswith("parity failed: max |emission diff|")


# ----------------------------------------------------------------------------- composed

def _without_taxonomy(tiny_checkpoint, tmp_path) -> Path:
    """The tiny checkpoint as one trained without a taxonomy would be."""
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, checkpoint)
    (checkpoint / "taxonomy.json").unlink()
    meta = json.loads((checkpoint / "tagger.json").read_text(encoding="utf-8"))
    meta["taxonomy"] = None
    (checkpoint / "tagger.json").write_text(json.dumps(meta), encoding="utf-8")
    return checkpoint


def test_tiny_bundle_ships_its_checkpoints_taxonomy_and_a_computed_reference(tiny_bundle):
    from stream.tagging.bundle import read_bundle

    manifest = read_bundle(tiny_bundle).manifest
    assert (tiny_bundle / "taxonomy.json").read_bytes() == DEMO_TAXONOMY.read_bytes()
    assert manifest.source["taxonomy"]["origin"] == "checkpoint"
    reference = json.loads((tiny_bundle / "reference.json").read_text(encoding="utf-8"))
    assert reference["texts"] == manifest.parity["texts"] and reference["spans"] > 0
    assert manifest.parity["passed"] and "reference.json" in manifest.files


def test_export_without_a_taxonomy_never_ships_the_demo_taxonomy(tiny_checkpoint, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import export.bundle
    from stream.tagging.bundle import read_bundle
    from stream.tagging.tagger import Tagger

    checkpoint = _without_taxonomy(tiny_checkpoint, tmp_path)
    written = []
    real_write = export.bundle.write_manifest
    monkeypatch.setattr(export.bundle, "write_manifest", lambda root, m: (written.append(m), real_write(root, m)))
    lines: list[str] = []
    out = export.bundle.export_bundle(ExportConfig(checkpoint=str(checkpoint), out=str(tmp_path / "bundle"),
                                                   version="1"), log=lines.append)
    assert len(written) == 1 and written[0].parity["passed"]   # the manifest is written once, after parity
    assert (out / "taxonomy.json").read_bytes() != DEMO_TAXONOMY.read_bytes()
    taxonomy = Taxonomy.load(out / "taxonomy.json")
    assert not taxonomy.nodes and sorted(taxonomy.types) == sorted({label[2:] for label in written[0].labels[1:]})
    assert read_bundle(out).manifest.source["taxonomy"]["origin"] == "empty"
    assert any("empty taxonomy" in line for line in lines)
    assert Tagger.load(out, device="cpu").tag_texts(["耐克 黑色 跑步鞋"])   # the bundle serves


def test_a_failed_parity_gate_writes_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import export.bundle
    from export.parity import ParityResult

    real_check = export.bundle.check_parity

    def failing(*args, **kwargs):
        result = real_check(*args, **kwargs)
        return ParityResult({**result.report, "passed": False}, result.metrics, result.tagged)

    monkeypatch.setattr(export.bundle, "check_parity", failing)
    out = tmp_path / "bundle"
    with pytest.raises(ExportError, match="parity failed.*bundle not written"):
        export.bundle.export_bundle(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(out)), log=lambda _: None)
    assert list(tmp_path.iterdir()) == []   # neither the bundle nor its staging folder


def test_retrain_keeps_the_champions_taxonomy(tiny_checkpoint, tmp_path):
    pytest.importorskip("torch")
    from export.bundle import export_bundle
    from export.retrain import retrain
    from stream.tagging.bundle import current, promote, read_bundle

    store = tmp_path / "store"
    custom = _custom_taxonomy(tmp_path / "live-taxonomy.json")
    export_bundle(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(store / "champion"), taxonomy=str(custom),
                               version="1"), log=lambda _: None)
    promote(store, "champion")
    data = tiny_checkpoint.parent
    # Trained with neither a taxonomy nor a lexicon: its checkpoint carries none.
    training = TrainConfig(train=(str(data / "train.jsonl"),), dev=str(data / "dev.jsonl"), out="", layers=1,
                           hidden=32, heads=2, epochs=1, batch_size=16, vocab_size=2000, threads=2)
    outcome = retrain(RetrainConfig(store=str(store), held_out=(str(data / "dev.jsonl"),), training=training,
                                    tolerance=1.0), log=lambda _: None)
    assert outcome.status == "promoted", outcome.report
    challenger = current(store)
    assert challenger != "champion"
    assert (store / challenger / "taxonomy.json").read_bytes() == custom.read_bytes()
    assert read_bundle(store).manifest.source["taxonomy"]["name"] == "shop-live"


def test_an_explicit_taxonomy_beats_the_champions(tiny_bundle):
    from export.retrain import challenger_taxonomy
    from stream.tagging.tagger import Tagger

    champion = Tagger.load(tiny_bundle, device="cpu")
    training = TrainConfig(train=("t",), out="")
    config = RetrainConfig(store="s", held_out=("h",), training=training)
    assert challenger_taxonomy(config, champion) == str(champion.bundle.file("taxonomy.json"))
    assert challenger_taxonomy(config, None) is None   # the export then takes the checkpoint's
    assert challenger_taxonomy(RetrainConfig(store="s", held_out=("h",), training=training, taxonomy="a.json"),
                               champion) == "a.json"
    asked_in_training = TrainConfig(train=("t",), out="", taxonomy="b.json")
    assert challenger_taxonomy(RetrainConfig(store="s", held_out=("h",), training=asked_in_training),
                               champion) == "b.json"


def test_only_a_numerical_tie_excuses_a_decoding_difference(tiny_bundle):
    from export.parity import _numerical_tie, spans_of
    from stream.tagging.spans import Span
    from stream.tagging.tagger import Tagger

    tagger = Tagger.load(tiny_bundle, device="cpu")
    text = "耐克 Nike 男士跑步鞋 黑色 42码"
    ours = spans_of(tagger.tag_texts([text]))[0]
    assert _numerical_tie(tagger, text, ours, ours, delta=0.0)
    worse = [Span(0, len(text), "brand")]           # one brand over the whole title: far from the best path
    assert worse != ours
    assert not _numerical_tie(tagger, text, ours, worse, delta=1e-6)
    assert _numerical_tie(tagger, text, ours, worse, delta=1e3)   # within what emissions that far apart allow


def test_an_ensemble_bundle_is_one_graph_of_its_members_and_refuses_members_that_read_other_inputs(
        tiny_checkpoint, tmp_path):
    import onnxruntime as ort

    from export.bundle import export_bundle
    from model.vocab import build_wordpiece
    from stream.tagging.bundle import read_bundle

    bundle = export_bundle(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(tmp_path / "ens"),
                                        members=(str(tiny_checkpoint),), version="1"), log=lambda _: None)
    manifest = read_bundle(bundle).manifest
    assert manifest.parity["passed"] and manifest.source["ensemble"] == [str(tiny_checkpoint)] * 2
    assert [i.name for i in ort.InferenceSession(str(bundle / "model.onnx")).get_inputs()] == ["input_ids",
                                                                                              "attention_mask"]
    other = tmp_path / "other"
    shutil.copytree(tiny_checkpoint, other)
    build_wordpiece(["a different vocabulary"], vocab_size=50).save(str(other / "tokenizer.json"))
    with pytest.raises(ExportError, match="its tokenizer differs"):
        export_bundle(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(tmp_path / "bad"), members=(str(other),)),
                      log=lambda _: None)
    assert not (tmp_path / "bad").exists()


def test_retrain_with_members_trains_one_seed_each_and_ships_their_ensemble(tiny_checkpoint, tmp_path,
                                                                           monkeypatch):
    pytest.importorskip("torch")
    import export.retrain
    from stream.tagging.bundle import current, read_bundle

    trained = []
    real_train = export.retrain.train

    def recording_train(config, log):   # the real training, noting which seed went where
        trained.append((Path(config.out).name, config.seed))
        return real_train(config, log=log)

    monkeypatch.setattr(export.retrain, "train", recording_train)
    store = tmp_path / "store"
    data = tiny_checkpoint.parent
    training = TrainConfig(train=(str(data / "train.jsonl"),), dev=str(data / "dev.jsonl"), out="", layers=1,
                           hidden=32, heads=2, epochs=1, batch_size=16, vocab_size=2000, threads=2, seed=7)
    outcome = export.retrain.retrain(RetrainConfig(store=str(store), held_out=(str(data / "dev.jsonl"),),
                                                   training=training, members=2), log=lambda _: None)
    assert outcome.status == "promoted", outcome.report
    assert trained == [("checkpoint", 7), ("checkpoint-1", 8)]
    challenger = outcome.report["challenger"]
    assert challenger["members"] == 2 and len(challenger["members_train_dev_f1"]) == 2
    manifest = read_bundle(store / current(store)).manifest
    assert [Path(p).name for p in manifest.source["ensemble"]] == ["checkpoint", "checkpoint-1"]
    assert manifest.parity["passed"]
