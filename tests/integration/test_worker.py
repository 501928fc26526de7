"""The streaming worker on the real broker: enrichment, dead letters, versions, scaling, reload, crashes."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import time

import orjson

from stream.tagging.bundle import POINTER, promote
from model.synth import generate, load_taxonomy_json
from stream.tagging.pipeline import Pipeline
from tests.conftest import DEMO_TAXONOMY
from bench.harness import WorkerProcess, consume, event, free_port, produce, scrape, values


def _products(n: int, seed: int) -> list[dict]:
    return generate(load_taxonomy_json(DEMO_TAXONOMY), n, seed=seed, lang="mixed", products=True)


def _records(products, version: int = 1):
    return [(p["id"].encode(), event(p["id"], version, p["title"], p["description"])) for p in products]


def _copy_as_version(bundle, to, version: str) -> None:
    """A copy of ``bundle`` whose manifest says ``version`` (the manifest is not hashed)."""
    shutil.copytree(bundle, to)
    manifest = orjson.loads((to / "manifest.json").read_bytes())
    manifest["version"] = version
    (to / "manifest.json").write_bytes(orjson.dumps(manifest))


def _without_confidence(tags):
    return [{k: v for k, v in t.items() if k != "confidence"} for t in tags]


def test_thousand_events_come_out_with_the_offline_tags(kafka, topics, tiny_bundle, tmp_path):
    products = _products(1000, seed=21)
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path).wait_ready()
    try:
        produce(kafka, topics.input, _records(products))
        out = consume(kafka, topics.enriched, count=1000, timeout=180)
    finally:
        worker.stop()
    got = {v["product_id"]: v for v in values(out)}
    assert len(out) == 1000 and set(got) == {p["id"] for p in products}
    assert "cannot set the consumer's fetch sizes" not in worker.log()   # fixups.batch_fetches took

    offline = Pipeline.load(tiny_bundle, device="cpu")
    expected = [[t.to_json() for t in found.tags] for found in offline(products)]
    for product, tags in zip(products, expected):
        record = got[product["id"]]
        assert _without_confidence(record["tags"]) == _without_confidence(tags), product["id"]
        for a, b in zip(record["tags"], tags):
            assert abs(a["confidence"] - b["confidence"]) < 2e-3  # batch composition moves only rounding
        assert record["model"] == offline.model
        assert record["version"] == 1 and len(record["content_hash"]) == 32


def test_malformed_events_are_dead_lettered_and_the_worker_goes_on(kafka, topics, tiny_bundle, tmp_path):
    bad = [
        (b"p1", b"{not json", "invalid_json"),
        (b"p2", b"\xff\xfe title", "invalid_utf8"),
        (b"p3", b"[1, 2, 3]", "not_an_object"),
        (b"p4", orjson.dumps({"product_id": "p4", "op": "upsert", "title": "x"}), "missing_field"),
        (b"p5", orjson.dumps({"product_id": "p5", "op": "upsert", "version": "7", "title": "x"}), "wrong_type"),
        (b"other", event("p6", 1, "耐克跑鞋"), "key_mismatch"),
        (b"p7", event("p7", 1, "x" * 5000), "too_large"),
        (b"p8", event("p8", 1, "   "), "invalid_value"),
        (b"p9", orjson.dumps({"product_id": "p9", "op": "merge", "version": 1, "title": "x"}), "invalid_value"),
    ]
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, max_event_bytes=2000).wait_ready()
    try:
        produce(kafka, topics.input, [(k, v) for k, v, _ in bad] + [(b"ok", event("ok", 1, "华为手机 黑色"))])
        dead = consume(kafka, topics.dlq, count=len(bad), timeout=60)
        good = consume(kafka, topics.enriched, count=1, timeout=60)
    finally:
        worker.stop()
    # Keys spread over partitions, so the dead letters arrive in no particular order across keys.
    letters = {base64.b64decode(d["key_b64"]): d for d in values(dead)}
    assert {k: d["error"] for k, d in letters.items()} == {k: code for k, _, code in bad}
    for key, value, _ in bad:
        letter = letters[key]
        assert base64.b64decode(letter["value_b64"]) == value[:4096] and letter["value_bytes"] == len(value)
        assert letter["value_sha256"] == hashlib.sha256(value).hexdigest()
        assert letters[key]["source"]["topic"] == topics.input and letters[key]["reason"]
    assert values(good)[0]["product_id"] == "ok"


def test_deletes_stale_versions_and_unchanged_content(kafka, topics, tiny_bundle, tmp_path):
    port = free_port()
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, metrics_port=port).wait_ready()
    try:
        produce(kafka, topics.input, [
            (b"p1", event("p1", 1, "耐克黑色跑步鞋")),
            (b"p1", event("p1", 2, "耐克黑色跑步鞋")),         # price update: same content
            (b"p1", event("p1", 1, "耐克黑色跑步鞋 旧")),      # stale: older than 2
            (b"p2", event("p2", 5, "华为手机")),
            (b"p1", orjson.dumps({"product_id": "p1", "op": "delete", "version": 3})),
            (b"p2", None),                                   # tombstone
            (b"p3", event("p3", 1, "小米 扫地机器人")),
        ])
        out = consume(kafka, topics.enriched, count=6, timeout=60)
        time.sleep(1.5)
        metrics = scrape(port)
    finally:
        worker.stop()
    by_key: dict[str, list] = {}
    for r in out:
        by_key.setdefault(r.key.decode(), []).append(orjson.loads(r.value) if r.value is not None else None)
    assert [v and v["version"] for v in by_key["p1"]] == [1, 2, None]
    assert by_key["p1"][0]["tags"] == by_key["p1"][1]["tags"]
    assert [v and v["version"] for v in by_key["p2"]] == [5, None]
    assert len(by_key["p3"]) == 1
    assert metrics['tagstream_events_skipped_total{reason="unchanged"}'] == 1
    assert metrics['tagstream_events_skipped_total{reason="stale"}'] == 1
    assert metrics["tagstream_model_products_total"] == 3  # p1 v1, p2, p3: the price update never hit the model


def test_unchanged_state_survives_a_restart(kafka, topics, tiny_bundle, tmp_path):
    port = free_port()
    first = WorkerProcess(kafka, topics, tiny_bundle, tmp_path).wait_ready()
    try:
        produce(kafka, topics.input, [(b"p1", event("p1", 1, "耐克黑色跑步鞋"))])
        consume(kafka, topics.enriched, count=1, timeout=60)
        time.sleep(2)  # let the state changelog and the offset commit land
    finally:
        first.stop()
    second = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, metrics_port=port).wait_ready()
    try:
        produce(kafka, topics.input, [(b"p1", event("p1", 2, "耐克黑色跑步鞋")), (b"p1", event("p1", 1, "old"))])
        out = consume(kafka, topics.enriched, count=2, timeout=60)
        time.sleep(1.5)
        metrics = scrape(port)
    finally:
        second.stop()
    assert [orjson.loads(r.value)["version"] for r in out] == [1, 2]
    assert metrics['tagstream_events_skipped_total{reason="unchanged"}'] == 1
    assert metrics['tagstream_events_skipped_total{reason="stale"}'] == 1
    assert metrics.get("tagstream_model_products_total", 0) == 0


def test_two_workers_split_the_partitions_and_keep_order_per_product(kafka, topics, tiny_bundle, tmp_path):
    ports = [free_port(), free_port()]
    workers = [WorkerProcess(kafka, topics, tiny_bundle, tmp_path, metrics_port=p) for p in ports]
    try:
        for w in workers:
            w.wait_ready()
        time.sleep(3)  # both members in the group
        products = _products(100, seed=23)
        records = [r for version in range(1, 4) for r in _records(
            [{**p, "title": f"{p['title']} v{version}"} for p in products], version)]
        produce(kafka, topics.input, records)
        out = consume(kafka, topics.enriched, count=300, timeout=120)
        time.sleep(1.5)
        consumed = [scrape(p)["tagstream_events_consumed_total"] for p in ports]
    finally:
        for w in workers:
            w.stop()
    versions: dict[str, list[int]] = {}
    for record in values(out):
        versions.setdefault(record["product_id"], []).append(record["version"])
    assert len(versions) == 100 and all(v == [1, 2, 3] for v in versions.values())
    assert all(c > 0 for c in consumed) and sum(consumed) == 300


def test_two_lanes_keep_each_products_updates_in_order_and_compare_them_with_the_update_before(
        kafka, topics, tiny_bundle, tmp_path):
    """Small batches, two in the model at once, every product updated ten times: a batch must read
    the state the batch before it wrote, or an update is compared with an older one (a wrong skip,
    or a missed one)."""
    products = _products(8, seed=25)
    # The title per version: unchanged (a skip) at versions 4, 6 and 9.
    pattern = "ABAABBABBA"
    titles = {p["id"]: {"A": p["title"], "B": f"{p['title']} 新款"} for p in products}
    records = [(p["id"].encode(), event(p["id"], v + 1, titles[p["id"]][which], p["description"]))
               for v, which in enumerate(pattern) for p in products]
    port = free_port()
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, metrics_port=port, lanes=2, max_batch=4,
                           max_wait=0.01).wait_ready()
    try:
        produce(kafka, topics.input, records)
        out = consume(kafka, topics.enriched, count=len(records), timeout=120)
        time.sleep(1.5)
        metrics = scrape(port)
    finally:
        worker.stop()
    offline = Pipeline.load(tiny_bundle, device="cpu")
    expected = {}
    for p in products:
        for which, title in titles[p["id"]].items():
            expected[p["id"], which] = _without_confidence(
                [t.to_json() for t in offline([{**p, "title": title}])[0].tags])
    by_product: dict[str, list[dict]] = {}
    for record in values(out):
        by_product.setdefault(record["product_id"], []).append(record)
    assert len(out) == len(records) and len(by_product) == len(products)
    for pid, got in by_product.items():
        assert [r["version"] for r in got] == list(range(1, 11)), pid
        for record, which in zip(got, pattern):
            assert _without_confidence(record["tags"]) == expected[pid, which], (pid, record["version"])
    assert metrics['tagstream_events_skipped_total{reason="unchanged"}'] == 3 * len(products)
    assert metrics["tagstream_model_products_total"] == 7 * len(products)
    per_lane = max(1, (os.cpu_count() or 1) // 2)        # the cores shared between the two lanes
    assert f"2 lanes of {per_lane} thread" in worker.log()


def test_hot_reload_mid_stream(kafka, topics, tiny_bundle, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    shutil.copytree(tiny_bundle, store / "a")
    _copy_as_version(tiny_bundle, store / "b", "2")
    promote(store, "a")
    worker = WorkerProcess(kafka, topics, store, tmp_path, reload_interval=0.2, max_batch=16).wait_ready()
    try:
        products = _products(400, seed=24)
        produce(kafka, topics.input, _records(products[:200]))
        consume(kafka, topics.enriched, count=200, timeout=90)
        promote(store, "b")
        time.sleep(1)
        produce(kafka, topics.input, _records(products[200:]))
        out = consume(kafka, topics.enriched, count=400, timeout=90)
        time.sleep(1)
    finally:
        worker.stop()
    records = values(out)
    assert sorted(r["product_id"] for r in records) == sorted(p["id"] for p in products)  # none lost, none twice
    version_of = {r["product_id"]: r["model"]["version"] for r in records}
    assert {version_of[p["id"]] for p in products[:200]} == {"1"}
    assert {version_of[p["id"]] for p in products[200:]} == {"2"}
    assert "serving tagstream-tagger:2" in worker.log()


def test_a_worker_killed_between_inference_and_publish_loses_nothing(kafka, topics, tiny_bundle, tmp_path):
    products = _products(300, seed=25)
    produce(kafka, topics.input, [])  # nothing yet: topics are created by the worker
    crashing = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, max_batch=20, session_timeout=6,
                             failpoint="before_publish:4").wait_ready()
    produce(kafka, topics.input, _records(products))
    crashing.proc.wait(timeout=120)
    crashing.kill()
    assert "failpoint before_publish:4 reached" in crashing.log()
    before = consume(kafka, topics.enriched, until=lambda r: False, timeout=4)
    assert len(before) < 300  # the crash happened mid-stream

    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, max_batch=20, session_timeout=6).wait_ready()
    try:
        after = consume(kafka, topics.enriched, until=lambda r: len({x.key for x in r}) >= 300, timeout=120)
    finally:
        worker.stop()
    keys = [r.key.decode() for r in after]
    assert set(keys) == {p["id"] for p in products}, "every event enriched after the crash"
    duplicates = len(keys) - len(set(keys))
    print(f"sent 300, enriched before crash {len(before)}, enriched {len(set(keys))}, duplicated {duplicates}, lost 0")


def test_a_tampered_bundle_is_refused_live_and_the_worker_keeps_serving(kafka, topics, tiny_bundle, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    shutil.copytree(tiny_bundle, store / "a")
    for name, version in (("tampered", "2"), ("good", "3")):
        _copy_as_version(tiny_bundle, store / name, version)
    crf = store / "tampered" / "crf.npz"
    crf.write_bytes(crf.read_bytes()[:-16] + bytes(16))  # same size, other transitions: hash mismatch
    promote(store, "a")
    port = free_port()
    worker = WorkerProcess(kafka, topics, store, tmp_path, reload_interval=0.2, max_batch=16,
                           metrics_port=port).wait_ready()
    products = _products(300, seed=26)
    try:
        produce(kafka, topics.input, _records(products[:100]))
        consume(kafka, topics.enriched, count=100, timeout=90)
        # promote() verifies first and would refuse it; a pointer written by hand (or a bundle
        # corrupted after promotion) reaches the worker, which must refuse it on its own.
        (store / POINTER).write_text("tampered\n", encoding="utf-8")
        time.sleep(1)
        produce(kafka, topics.input, _records(products[100:200]))
        consume(kafka, topics.enriched, count=200, timeout=90)
        refused = scrape(port).get('tagstream_model_reloads_total{outcome="refused"}')
        promote(store, "good")  # the next good bundle is taken as usual
        time.sleep(1)
        produce(kafka, topics.input, _records(products[200:]))
        out = consume(kafka, topics.enriched, count=300, timeout=90)
    finally:
        worker.stop()
    version_of = {r["product_id"]: r["model"]["version"] for r in values(out)}
    assert len(out) == 300 and len(version_of) == 300
    assert {version_of[p["id"]] for p in products[:200]} == {"1"}, "the tampered bundle tagged nothing"
    assert {version_of[p["id"]] for p in products[200:]} == {"3"}
    assert refused == 1
    assert "new bundle refused, still serving tagstream-tagger:1" in worker.log()
    assert "crf.npz" in worker.log()
