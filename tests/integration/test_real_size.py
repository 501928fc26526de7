"""Real-size and hostile records on the real broker (issue #14): nothing lost, nothing rolled back.

Each test prints sent / enriched / dead-lettered / duplicated / lost.
"""

from __future__ import annotations

import base64
import hashlib
import time

import orjson

from model.synth import generate, load_taxonomy_json
from stream.service.worker import EXIT_PUBLISH_FAILED
from tests.conftest import DEMO_TAXONOMY
from bench.harness import (WorkerProcess, alter_topic, committed, consume, create_topic, event, free_port,
                             produce, report, scrape, values)

HUGE_TITLE = "耐克跑步鞋黑色" * 2857          # 19,999 characters: inside --max-field-chars


def _products(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    products = generate(load_taxonomy_json(DEMO_TAXONOMY), n, seed=seed, lang="mixed", products=True)
    return [(p["id"].encode(), event(p["id"], 1, p["title"], p["description"])) for p in products]


def _dead_lettered_total(port: int) -> float:
    return sum(v for k, v in scrape(port).items() if k.startswith("tagstream_events_dead_lettered_total{"))


def _wait_exit(worker: WorkerProcess, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while worker.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
    assert worker.proc.poll() is not None, f"the worker did not stop:\n{worker.log()[-3000:]}"
    return worker.proc.returncode


def _restart_delivers_all(name: str, kafka, topics, bundle, tmp_path, records) -> int:
    """A healthy worker started after the stop: every record enriched? Prints the report; returns lost."""
    worker = WorkerProcess(kafka, topics, bundle, tmp_path, max_batch=8).wait_ready()
    try:
        sent = {(k.decode(), 1) for k, _ in records}
        out = consume(kafka, topics.enriched, until=lambda r: {(x.key.decode(), 1) for x in r} >= sent, timeout=90)
    finally:
        worker.stop()
    lost = report(name, sent, out)
    if lost:
        print(f"the restarted worker's log:\n{worker.log()[-6000:]}")
    return lost


def test_real_size_and_hostile_records_are_enriched_or_dead_lettered(kafka, topics, tiny_bundle, tmp_path):
    # The input topic takes records up to 8 MB, so a 5 MB event reaches the worker.
    create_topic(kafka, topics.input, 4, max_message_bytes=8 * 1024 * 1024)
    good = _products(20, seed=1)
    big = (b"huge-title", event("huge-title", 1, HUGE_TITLE))
    not_json = (b"not-json", b"<html>" + b"x" * 900_000)                      # its base64 alone is 1.2 MB
    five_mb = (b"five-mb", event("five-mb", 1, "y" * 5_000_000))
    records = good[:10] + [big, not_json, five_mb] + good[10:]
    port = free_port()
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, metrics_port=port).wait_ready()
    try:
        produce(kafka, topics.input, records, max_request_size=8 * 1024 * 1024)
        out = consume(kafka, topics.enriched, count=21, timeout=120)
        dead = consume(kafka, topics.dlq, count=2, timeout=60)
        deadline = time.monotonic() + 30
        while _dead_lettered_total(port) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        counted = _dead_lettered_total(port)
        assert worker.proc.poll() is None, worker.log()[-3000:]
    finally:
        worker.stop()
    sent = {(k.decode(), 1) for k, _ in good + [big]}
    assert report("real-size records", sent, out, dead=len(dead)) == 0
    enriched = {orjson.loads(r.value)["product_id"]: orjson.loads(r.value) for r in out}
    huge = enriched["huge-title"]
    assert len(huge["tags"]) <= 32 and huge["tags_dropped"] > 0
    assert all(HUGE_TITLE[t["start"]:t["end"]] == t["text"] for t in huge["tags"])
    letters = {base64.b64decode(d["key_b64"]): d for d in values(dead)}
    assert {k: d["error"] for k, d in letters.items()} == {b"not-json": "invalid_json", b"five-mb": "too_large"}
    for key, value in (not_json, five_mb):
        letter = letters[key]
        assert letter["value_bytes"] == len(value) and letter["value_sha256"] == hashlib.sha256(value).hexdigest()
        assert base64.b64decode(letter["value_b64"]) == value[:4096]
    assert max(len(r.value) for r in dead) < 16_384
    assert counted == len(dead) == 2       # the metric counts what reached the dead-letter topic


def test_a_record_the_broker_refuses_stops_the_worker_uncommitted_and_a_restart_delivers_it(
        kafka, topics, tiny_bundle, tmp_path):
    # The enriched topic takes at most 1,500 bytes; one product's record is larger, yet far below
    # the worker's own output limit, so only the broker can refuse it.
    create_topic(kafka, topics.enriched, 4, max_message_bytes=1500, cleanup_policy="compact")
    good = _products(30, seed=3)
    wide = (b"wide", event("wide", 1, "耐克 Nike 男士跑步鞋 黑色 42码", "华为 小米 耐克 阿迪达斯 红色 黑色 白色 " * 40))
    records = good[:15] + [wide] + good[15:]
    # One batch at a time (--pipeline false) here; the failing-send test below runs the pipeline.
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, max_batch=8, pipeline="false").wait_ready()
    produce(kafka, topics.input, records)
    code = _wait_exit(worker)
    worker.stop()
    assert code == EXIT_PUBLISH_FAILED and "stopping without committing" in worker.log()
    before = consume(kafka, topics.enriched, until=lambda r: False, timeout=3)
    # Whatever was committed, the refused record's offset is not behind it: it is consumed again.
    assert sum(committed(kafka, topics.group).values()) < len(records)
    alter_topic(kafka, topics.enriched, max_message_bytes=1_048_588)
    print(f"before the restart {len(before)} records were enriched")
    assert _restart_delivers_all("broker-refused record", kafka, topics, tiny_bundle, tmp_path, records) == 0


def test_a_failing_send_lets_nothing_be_committed_past_it(kafka, topics, tiny_bundle, tmp_path):
    records = _products(60, seed=4)
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, max_batch=8, failpoint="fail_send:20").wait_ready()
    produce(kafka, topics.input, records)
    assert _wait_exit(worker) == EXIT_PUBLISH_FAILED
    worker.stop()
    assert "failpoint fail_send:20" in worker.log()
    assert sum(committed(kafka, topics.group).values()) < len(records)
    assert _restart_delivers_all("failing send", kafka, topics, tiny_bundle, tmp_path, records) == 0


def test_keyless_records_and_replayed_deletes_cannot_roll_a_product_back(kafka, topics, tiny_bundle, tmp_path):
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path).wait_ready()
    try:
        produce(kafka, topics.input, [(b"p1", event("p1", 5, "华为手机 黑色"))])
        consume(kafka, topics.enriched, count=1, timeout=60)
        produce(kafka, topics.input, [(None, event("p1", 3, "华为手机 旧款")), (b"\xff", event("p1", 3, "华为手机 旧款")),
                                      (b"p2", event("p1", 4, "华为手机 旧款"))])
        produce(kafka, topics.input, [(b"d1", event("d1", 1, "小米扫地机器人")), (b"d1", None),
                                      (b"d1", event("d1", 1, "小米扫地机器人"))])
        dead = consume(kafka, topics.dlq, count=3, timeout=60)
        produce(kafka, topics.input, [(b"p1", event("p1", 6, "华为手机 白色"))])
        out = consume(kafka, topics.enriched, until=lambda r: any(x.key == b"p1" and x.value and
                                                                   orjson.loads(x.value)["version"] == 6 for x in r),
                      timeout=60)
        time.sleep(2)   # anything the replayed v1 of d1 would have produced has arrived by now
        out = consume(kafka, topics.enriched, count=len(out) + 10, timeout=3)
    finally:
        worker.stop()
    assert sorted(d["error"] for d in values(dead)) == ["key_mismatch"] * 3
    p1 = [orjson.loads(r.value)["version"] for r in out if r.key == b"p1"]
    assert p1 == [5, 6]
    d1 = [r.value and orjson.loads(r.value)["version"] for r in out if r.key == b"d1"]
    assert d1 == [1, None], "the deleted product stays deleted: the replay of v1 is stale"
    print(f"keys and deletes: sent 8, enriched 3 (+1 tombstone), dead-lettered {len(dead)}, duplicated 0, lost 0")
