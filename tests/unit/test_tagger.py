"""The serving tagger: bundle verification, providers, spans, and no PyTorch on the serving path."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from stream.tagging.bundle import BundleError, promote, read_bundle, rollback
from stream.tagging.manifest import Manifest
from stream.tagging.pipeline import Pipeline
from stream.tagging.tagger import Tagger, cuda_device_count
from tests.conftest import ROOT

TEXTS = ["耐克 Nike 男士跑步鞋 黑色 42码 2026新款 包邮", "UNIQLO cotton T-shirt white M free shipping", "", "   "]


def _copy(bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def test_spans_index_into_the_original_text(tiny_bundle):
    tagger = Tagger.load(tiny_bundle, device="cpu")
    for text, spans in zip(TEXTS, tagger.tag_texts(TEXTS)):
        for s in spans:
            assert text[s.start:s.end] == s.text and 0.0 <= s.confidence <= 1.0
    assert tagger.tag_texts(["", "   "]) == [[], []]


def test_long_text_is_tagged_in_windows(tiny_bundle):
    tagger = Tagger.load(tiny_bundle, device="cpu")
    text = "耐克 黑色 跑步鞋 " * 80  # far beyond max_length sub-tokens
    spans = tagger.tag_texts([text])[0]
    assert len(tagger.encoder.windows(tagger.encoder.units([text])[0])) > 1
    assert spans and spans[-1].end > len(text) - 20, "the tail of a long text is tagged too"
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))


def test_the_pipeline_tags_products_with_fields_nodes_and_token_counts(tiny_bundle):
    pipeline = Pipeline.load(tiny_bundle, device="cpu")
    products = [{"title": "耐克黑色跑步鞋", "description": "Nike 男士 跑步鞋, 黑色"}, {"title": "华为手机"}, {"title": ""}]
    found = pipeline(products)
    assert [[s.field for s in f.texts] for f in found] == [["title", "description"], ["title"], []]
    for product, f in zip(products, found):
        for t in f.tags:
            assert product[t.field][t.start:t.end] == t.text
            node = pipeline.taxonomy.lookup(t.type, t.text)
            assert t.in_taxonomy == (node is not None) and (t.tag == node.id if node else True)
            assert list(t.path) == (pipeline.taxonomy.path(node) if node else [])
        for stats in f.texts:
            units = pipeline.tagger.encoder.units([product[stats.field]])[0]
            assert (stats.tokens, stats.unknown_tokens) == (len(units.token_ids), units.unknown_tokens)
    # The same spans as the tagger alone, only tied to the taxonomy.
    spans = pipeline.tagger.tag_texts([products[0]["title"]], ["title"])[0]
    assert [(s.start, s.end, s.type) for s in spans] == [(t.start, t.end, t.type) for t in found[0].tags
                                                         if t.field == "title"]


def test_cpu_is_what_the_session_really_got_here(tiny_bundle):
    tagger = Tagger.load(tiny_bundle, device="auto", threads=1)
    if cuda_device_count() == 0:
        assert tagger.providers == ["CPUExecutionProvider"]
    assert Tagger.load(tiny_bundle, device="cpu").providers == ["CPUExecutionProvider"]


def test_int8_variant_loads_and_tags(tiny_bundle):
    tagger = Tagger.load(tiny_bundle, variant="int8", device="cpu")
    assert len(tagger.tag_texts(TEXTS)) == len(TEXTS)
    with pytest.raises(BundleError, match="has no fp16 model"):
        Tagger.load(tiny_bundle, variant="fp16", device="cpu")


def test_variant_auto_serves_int8_only_on_a_cpu_with_vnni_and_a_bundle_that_has_it(tiny_bundle, tmp_path,
                                                                                      monkeypatch):
    from stream.tagging import tagger as tagger_module

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n\n"
                       "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert tagger_module.cpu_has_vnni(str(cpuinfo))
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx_vnni\n")
    assert tagger_module.cpu_has_vnni(str(cpuinfo))
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_vnnix\n")
    assert not tagger_module.cpu_has_vnni(str(cpuinfo))
    assert not tagger_module.cpu_has_vnni(str(tmp_path / "missing"))

    for vnni, want in ((True, "int8"), (False, "fp32")):
        monkeypatch.setattr(tagger_module, "cpu_has_vnni", lambda: vnni)
        assert Tagger.load(tiny_bundle, variant="auto", device="cpu").variant == want
    bundle = read_bundle(tiny_bundle)
    files = {name: digest for name, digest in bundle.manifest.files.items() if name != "model.int8.onnx"}
    fp32_only = dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, files=files))
    cpu = ["CPUExecutionProvider"]
    assert tagger_module.choose_variant(fp32_only, cpu, True) == ("fp32", "the bundle has no int8 model")
    assert tagger_module.choose_variant(bundle, ["CUDAExecutionProvider", *cpu], True)[0] == "fp32"
    with pytest.raises(ValueError, match="variant must be auto or one of"):
        Tagger.load(tiny_bundle, variant="int4", device="cpu")


def test_manifest_records_parity_and_hashes(tiny_bundle):
    manifest = read_bundle(tiny_bundle).manifest
    assert manifest.parity["passed"] and manifest.parity["texts"] >= 200
    assert manifest.parity["max_abs_emission_diff"] <= 1e-4 and manifest.parity["decoded_mismatches"] == 0
    assert "int8_f1_change" in manifest.parity
    assert set(manifest.files) >= {"model.onnx", "model.int8.onnx", "crf.npz", "tokenizer.json", "taxonomy.json",
                                   "reference.json"}
    reference = json.loads((tiny_bundle / "reference.json").read_text())
    assert reference["texts"] >= 200 and reference["type_counts"]
    assert manifest.units == "words"


def test_a_manifest_from_before_sub_token_units_reads_as_words(tiny_bundle):
    data = read_bundle(tiny_bundle).manifest.to_json()
    del data["units"]
    assert Manifest.from_json(data).units == "words"


@pytest.mark.parametrize("damage, message", [
    (lambda b: (b / "crf.npz").unlink(), "missing file crf.npz"),
    (lambda b: (b / "model.onnx").write_bytes((b / "model.onnx").read_bytes()[:-10] + b"0123456789"),
     "model.onnx: sha256 mismatch"),
    (lambda b: (b / "manifest.json").write_text(
        (b / "manifest.json").read_text().replace('"format_version": 1', '"format_version": 99')),
     "unknown format version 99"),
    (lambda b: (b / "manifest.json").write_text("{not json"), "manifest.json: not valid JSON"),
    (lambda b: (b / "manifest.json").unlink(), "missing file manifest.json"),
    (lambda b: (b / "manifest.json").write_text(
        (b / "manifest.json").read_text().replace('"units": "words"', '"units": "letters"')),
     "manifest units must be one of words, tokens, got 'letters'"),
])
def test_corrupt_bundles_are_refused_with_what_is_wrong(tiny_bundle, tmp_path, damage, message):
    bundle = _copy(tiny_bundle, tmp_path)
    damage(bundle)
    with pytest.raises(BundleError, match=message.replace("(", r"\(")):
        Tagger.load(bundle, device="cpu")


def test_promote_and_rollback_move_the_pointer(tiny_bundle, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    shutil.copytree(tiny_bundle, store / "a")
    shutil.copytree(tiny_bundle, store / "b")
    promote(store, "a")
    promote(store, "b")
    assert Tagger.load(store, device="cpu").bundle.path == (store / "b").resolve()
    assert rollback(store) == ("b", "a")
    assert read_bundle(store).path == (store / "a").resolve()
    with pytest.raises(BundleError, match="no earlier bundle"):
        rollback(store)


BLOCK_TORCH = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in {'torch', 'transformers', 'torchcrf'}:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
    sys.meta_path.insert(0, Block())
""")


def test_serving_path_imports_no_torch(tiny_bundle):
    script = BLOCK_TORCH + textwrap.dedent(f"""
        from stream.tagging.tagger import Tagger
        import stream.cli, stream.tagging.decode, stream.tagging.crf, stream.tagging.profile, stream.tagging.bundle
        tagger = Tagger.load({str(tiny_bundle)!r}, device="cpu")
        print(len(tagger.tag_texts(["耐克黑色跑步鞋"])[0]) >= 0)
        bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'torchcrf', 'model')]
        assert not bad, bad
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_training_verbs_without_torch_say_what_to_install(tmp_path):
    script = BLOCK_TORCH + "from stream.cli import main; sys.exit(main(sys.argv[1:]))"
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "1", "text": "Nike", "spans": [{"start": 0, "end": 4, "label": "brand"}]}\n')
    run = subprocess.run([sys.executable, "-c", script, "train", "--train", str(data), "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0
    assert "pip install 'tagstream[train]'" in run.stderr and "Traceback" not in run.stderr
    ok = subprocess.run([sys.executable, "-c", script, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and "train" in ok.stdout


def test_static_int8_tags_a_text_the_same_alone_and_in_any_batch(tiny_bundle):
    """Activation scales are fixed at export, so a replayed event gets the same record whatever
    else shares its batch (dynamic int8 computed them per batch and broke that)."""
    import random

    from model.synth import DEMO_TAXONOMY, generate, load_taxonomy_json

    manifest = json.loads((tiny_bundle / "manifest.json").read_text(encoding="utf-8"))
    assert "model.int8.onnx" in manifest["files"]
    titles = [r["text"] for r in generate(load_taxonomy_json(DEMO_TAXONOMY), 96, seed=5, lang="mixed")]
    alone_tagger = Tagger.load(tiny_bundle, variant="int8", device="cpu", batch_size=1)
    # What a record carries: spans and confidences to 4 decimals (numpy's marginals may move in the
    # 17th digit with the batch's shape).
    def record(spans):
        return [(s.start, s.end, s.type, round(s.confidence, 4)) for s in spans]

    alone = [record(alone_tagger.tag_texts([t])[0]) for t in titles]
    rng = random.Random(3)
    for batch_size in (7, 32, 96):
        tagger = Tagger.load(tiny_bundle, variant="int8", device="cpu", batch_size=batch_size)
        order = list(range(len(titles)))
        rng.shuffle(order)
        shuffled = tagger.tag_texts([titles[i] for i in order])
        together = [None] * len(titles)
        for position, i in enumerate(order):
            together[i] = record(shuffled[position])
        assert together == alone, f"batch size {batch_size}: a text's tags moved with its batch"
