"""Drift reports and new-tag discovery on the real broker, with a model that knows brands when it
sees them (trained on synthetic titles whose brands include an invented long tail)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import orjson
import pytest

from stream.tagging.bundle import promote
from model.synth import generate, load_taxonomy_json
from stream.tagging.taxonomy import Taxonomy
from tests.conftest import DEMO_TAXONOMY, ROOT, train_on_synthetic_titles
from bench.broker import unique_name
from bench.harness import WorkerProcess, consume, event, free_port, produce, scrape, values

NEW_BRAND = "Velora"


@pytest.fixture(scope="module")
def brand_aware(tmp_path_factory):
    """(checkpoint, bundle): 2 layers, hidden 64, 2,000 synthetic titles, about 20 s of training."""
    pytest.importorskip("torch")
    from export.bundle import export_bundle
    from export.config import ExportConfig

    root = tmp_path_factory.mktemp("brand-aware")
    checkpoint = train_on_synthetic_titles(root, titles=2000, dev=300, layers=2, hidden=64, epochs=4, vocab_size=3000)
    export_bundle(ExportConfig(checkpoint=str(checkpoint), out=str(root / "bundle"), version="1"),
                  log=lambda _: None)
    return root / "checkpoint", root / "bundle"


def _products(n: int, seed: int) -> list[dict]:
    return generate(load_taxonomy_json(DEMO_TAXONOMY), n, seed=seed, lang="mixed", products=True)


def _records(products) -> list[tuple[bytes, bytes]]:
    return [(p["id"].encode(), event(p["id"], 1, p["title"], p["description"])) for p in products]


def _root_of(product: dict, taxonomy: Taxonomy) -> str | None:
    for span in product["spans"]:
        if span["field"] == "title" and span["label"] == "category":
            node = taxonomy.lookup("category", product["title"][span["start"]:span["end"]])
            if node:
                return taxonomy.path(node)[0]
    return None


def _worker(kafka, topics, bundle, tmp_path, **settings) -> tuple[WorkerProcess, str, str]:
    drift, candidates = unique_name("drift"), unique_name("candidates")
    worker = WorkerProcess(kafka, topics, bundle, tmp_path, drift_topic=drift, candidates_topic=candidates,
                           drift_window_events=200, drift_window_seconds=0, max_batch=32, **settings).wait_ready()
    return worker, drift, candidates


def test_a_stable_stream_raises_no_alert_and_a_shifted_category_mix_does(kafka, topics, brand_aware, tmp_path):
    _, bundle = brand_aware
    taxonomy = Taxonomy.load(DEMO_TAXONOMY)
    stable = _products(600, seed=60)
    beauty = [p for p in _products(3000, seed=61) if _root_of(p, taxonomy) == "category.beauty"][:200]
    assert len(beauty) == 200
    port = free_port()
    worker, drift, _ = _worker(kafka, topics, bundle, tmp_path, metrics_port=port)
    try:
        produce(kafka, topics.input, _records(stable))
        consume(kafka, topics.enriched, count=600, timeout=120)
        produce(kafka, topics.input, _records(beauty))
        reports = values(consume(kafka, drift, count=4, timeout=120))
        time.sleep(0.5)
        gauges = scrape(port)
    finally:
        worker.stop()
    for r in reports:
        m = r["metrics"]
        print(f"window of {r['window']['products']}: tag-type PSI {m['tag_type_psi']}, top-value PSI "
              f"{m['top_value_psi']}, JS {m['top_value_js']}, out of taxonomy {m['out_of_taxonomy_rate']}, "
              f"alerts {r['alerts']}")
    assert [r["window"]["products"] for r in reports] == [200, 200, 200, 200]
    assert not any(r["alert"] for r in reports[:3]), "three stable windows, no alert"
    assert reports[3]["alert"] and "top_value_psi" in reports[3]["alerts"], "the shifted window alerts"
    assert reports[3]["metrics"]["top_value_psi"] > reports[3]["thresholds"]["psi"]
    assert reports[0]["model"] == {"name": "tagstream-tagger", "version": "1"}
    assert gauges["tagstream_drift_alert"] == 1.0
    assert gauges['tagstream_drift_divergence{distribution="top_value",measure="psi"}'] == \
        reports[3]["metrics"]["top_value_psi"]
    assert gauges['tagstream_drift_windows_total{alert="true"}'] == 1.0
    assert gauges['tagstream_drift_windows_total{alert="false"}'] == 3.0

    chart = tmp_path / "drift.png"
    _cli("drift", "report", "--out", str(chart), env={"TAGSTREAM_KAFKA_BOOTSTRAP": kafka, "TAGSTREAM_DRIFT_TOPIC": drift})
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 20_000


def test_an_unseen_brand_becomes_a_candidate_then_an_in_taxonomy_tag(kafka, topics, brand_aware, tmp_path):
    checkpoint, bundle = brand_aware
    store = tmp_path / "store"
    store.mkdir()
    shutil.copytree(bundle, store / "v1")
    promote(store, "v1")
    products = _products(400, seed=62)
    for i, p in enumerate(products):
        if i % 20 == 0:                     # 5% of titles: the new brand in front
            p["title"] = f"{NEW_BRAND} {p['title']}"
    worker, _, candidates_topic = _worker(kafka, topics, store, tmp_path, reload_interval=0.2)
    try:
        produce(kafka, topics.input, _records(products))
        consume(kafka, topics.enriched, count=400, timeout=120)
        candidates = values(consume(kafka, candidates_topic, until=lambda r: len(r) >= 2, timeout=60))
        assert {(c["type"], c["text"]) for c in candidates} >= {("brand", NEW_BRAND)}
        found = [c for c in candidates if c["text"] == NEW_BRAND]
        assert all(c["count"] >= 5 and c["examples"] for c in found)

        # The curator's loop, as a user runs it: suggest -> review -> apply -> re-export -> promote.
        patch, new_taxonomy = tmp_path / "patch.json", tmp_path / "taxonomy-2.json"
        env = {"TAGSTREAM_KAFKA_BOOTSTRAP": kafka, "TAGSTREAM_CANDIDATES_TOPIC": candidates_topic}
        _cli("taxonomy", "suggest", "--taxonomy", str(DEMO_TAXONOMY), "--out", str(patch), env=env)
        reviewed = orjson.loads(patch.read_bytes())
        for entry in reviewed["add"]:
            entry["accept"] = entry["en"] == NEW_BRAND
        patch.write_bytes(orjson.dumps(reviewed))
        _cli("taxonomy", "apply", "--taxonomy", str(DEMO_TAXONOMY), "--patch", str(patch), "--out", str(new_taxonomy))
        _cli("export", "--checkpoint", str(checkpoint), "--out", str(store / "v2"), "--taxonomy", str(new_taxonomy),
             "--version", "2")
        promote(store, "v2")
        later = [{**p, "id": f"later-{p['id']}", "title": f"{NEW_BRAND} {p['title']}"} for p in _products(20, seed=63)]
        produce(kafka, topics.input, _records(later))
        out = consume(kafka, topics.enriched, count=420, timeout=120)
    finally:
        worker.stop()
    tagged = [r for r in values(out) if r["product_id"].startswith("later-")]
    assert len(tagged) == 20 and {r["model"]["version"] for r in tagged} == {"2"}
    brand_tags = [t for r in tagged for t in r["tags"] if t["text"] == NEW_BRAND]
    print(f"candidates {[(c['text'], c['count']) for c in candidates]}; after the patch {len(brand_tags)} of 20 "
          f"later titles tag {NEW_BRAND} as {sorted({t['tag'] for t in brand_tags})}")
    assert len(brand_tags) >= 15
    assert all(t["in_taxonomy"] and t["tag"] == "brand.velora" and t["path"] == ["brand.velora"] for t in brand_tags)


def _cli(*args: str, env: dict[str, str] | None = None) -> str:
    import os

    result = subprocess.run([sys.executable, "-m", "stream.cli", *args], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
