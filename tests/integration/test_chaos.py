"""The chaos test of issue #14: 5,000 events, three worker kills, a broker crash, 200 hostile records.

Lost must be 0, every hostile record must be accounted for (enriched or dead-lettered), and every
product's last enriched version must be its highest version.
"""

from __future__ import annotations

import os
import random
import re
import time

import orjson
import pytest

from model.synth import generate, load_taxonomy_json
from tests.conftest import DEMO_TAXONOMY
from bench.broker import broker_crash_and_start
from bench.common import record_count
from bench.harness import WorkerProcess, consume, event, group_lag, produce

HUGE_TITLE = "耐克跑步鞋黑色" * 2857


def _catalogue_events(n: int, seed: int) -> list[tuple[bytes, bytes, str, int]]:
    """n upserts over about n/3 products (of n/2 drawn), versions in order per product; some versions change only
    price and stock (same text), some the title. (key, value, product id, version)."""
    rng = random.Random(seed)
    products = generate(load_taxonomy_json(DEMO_TAXONOMY), n // 2, seed=seed, lang="mixed", products=True)
    rounds = {p["id"]: rng.randint(1, 5) for p in products}
    out = []
    for version in range(1, 6):
        for p in products:
            if rounds[p["id"]] >= version and len(out) < n:
                title = p["title"] if version % 2 else p["title"] + " 新款"
                value = orjson.dumps({"product_id": p["id"], "op": "upsert", "version": version, "title": title,
                                      "description": p["description"], "price": rng.randint(1, 999)})
                out.append((p["id"].encode(), value, p["id"], version))
    return out


def _hostile(real_ids: list[str]) -> tuple[list[tuple[bytes | None, bytes | None]], int]:
    """200 hostile records (the issue's repros among them); how many of them are valid."""
    valid = [(b"hostile-huge", event("hostile-huge", 1, HUGE_TITLE)),
             (b"hostile-del", event("hostile-del", 1, "小米扫地机器人")), (b"hostile-del", None),
             (b"hostile-del", event("hostile-del", 1, "小米扫地机器人"))]       # v1, delete, replayed v1: stale
    bad: list[tuple[bytes | None, bytes | None]] = [(b"hostile-html", b"<html>" + b"x" * 900_000)]
    for i in range(20):
        pid = real_ids[i]
        bad += [
            (None, event(pid, 0, "keyless, an old version")),
            (b"\xff\xfe" + bytes([i]), event(pid, 0, "a key that is not UTF-8")),
            (b"someone-else", event(pid, 0, "a key naming another product")),
            (b"x" * 300, event("x" * 300, 1, "a product id of 300 characters")),
            (pid.encode(), event(pid, 2**63 + i, "a version above 2^63-1")),
            (f"j{i}".encode(), b'{"product_id": "j", "op": "upsert", '),
            (f"u{i}".encode(), b"\xff\xfe\xfd" + bytes([i])),
            (f"t{i}".encode(), orjson.dumps({"product_id": f"t{i}", "op": "upsert", "version": "1", "title": "x"})),
            (b"", None),                              # a tombstone without a usable key
        ]
    bad += [(f"e{i}".encode(), event(f"e{i}", 1, "   ")) for i in range(15)]
    records = valid + bad
    assert len(records) == 200
    return records, len(valid)


@pytest.mark.skipif(bool(os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP")), reason="needs the local broker to crash it")
def test_chaos_kills_a_broker_crash_and_hostile_records_lose_nothing(kafka, topics, tiny_bundle, tmp_path):
    catalogue = _catalogue_events(5000, seed=14)
    hostile, valid_hostile = _hostile(sorted({pid for _, _, pid, _ in catalogue}))
    rng = random.Random(14)
    stream = [(k, v) for k, v, _, _ in catalogue]
    for record in hostile[:4]:                                # the ordered ones stay in their order
        stream.append(record)
    for record in hostile[4:]:
        stream.insert(rng.randrange(len(stream)), record)
    chunks = [stream[i:i + 260] for i in range(0, len(stream), 260)]
    settings = {"max_batch": 32, "session_timeout": 6, "instance_id": "chaos-worker"}
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, **settings).wait_ready()
    positions: dict[tuple[int, int], tuple] = {}
    kills = crashes = 0
    try:
        for i, chunk in enumerate(chunks):
            for position, record in zip(produce(kafka, topics.input, chunk), chunk):
                positions[position] = record
            time.sleep(0.6)
            if i in (3, 9, 15):
                worker.kill()
                kills += 1
                worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, **settings).wait_ready()
            if i == 12:
                outage_worker, down_at = worker, time.monotonic()
                broker_crash_and_start(down_seconds=3)
                outage_seconds = time.monotonic() - down_at
                crashes += 1
        latest = {}
        for _, _, pid, version in catalogue:
            latest[pid] = max(version, latest.get(pid, 0))
        wanted = {(pid, v) for _, _, pid, v in catalogue} | {("hostile-huge", 1)}

        def done(records) -> bool:
            got = {(r.key.decode(), orjson.loads(r.value)["version"]) for r in records if r.value is not None}
            return got >= wanted
        out = consume(kafka, topics.enriched, until=done, timeout=240)
        dead = consume(kafka, topics.dlq, until=lambda r: len({_source(x) for x in r}) >= len(hostile) - valid_hostile,
                       timeout=60)
        # Every input processed and committed (so its outputs are durable): then all of the enriched
        # topic, whose last records (hostile-del's delete and stale replay) need not be among the
        # ones that completed `wanted`.
        deadline = time.monotonic() + 120
        while any(group_lag(kafka, topics.group, topics.input).values()):
            assert time.monotonic() < deadline, f"the worker did not catch up:\n{worker.log()[-3000:]}"
            time.sleep(1)
        out = consume(kafka, topics.enriched, count=record_count(kafka, topics.enriched), timeout=120)
        assert worker.proc.poll() is None, worker.log()[-3000:]
    finally:
        worker.stop()
    assert (kills, crashes) == (3, 1)
    # The worker that lived through the broker's crash summarised its warnings instead of flooding.
    noisy = [line for line in outage_worker.log().splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line)]
    print(f"broker down for {outage_seconds:.0f} s (crash, 3 s, restart): the worker logged {len(noisy)} "
          f"warning/error lines in its whole life")
    assert len(noisy) < 300
    seen = [(r.key.decode(), orjson.loads(r.value)["version"]) for r in out if r.value is not None]
    lost = len(wanted - set(seen))
    dead_sources = {_source(r) for r in dead}
    bad_ids = {id(record) for record in hostile[valid_hostile:]}
    bad_positions = {p for p, record in positions.items() if id(record) in bad_ids}
    print(f"chaos: sent {len(stream)} ({len(hostile)} hostile), enriched {len(set(seen) & wanted)}, "
          f"dead-lettered {len(dead_sources)}, duplicated {len(seen) - len(set(seen)) + len(dead) - len(dead_sources)}, "
          f"lost {lost + len(bad_positions - dead_sources)}; worker kills {kills}, broker crashes {crashes}")
    assert lost == 0 and bad_positions <= dead_sources
    last: dict[str, int | None] = {}
    for r in out:                                  # one partition per key: the topic's order is the product's
        last[r.key.decode()] = orjson.loads(r.value)["version"] if r.value is not None else None
    wrong = {pid: (last.get(pid), v) for pid, v in latest.items() if last.get(pid) != v}
    assert not wrong, f"last enriched version is not the highest for {len(wrong)} products: {list(wrong.items())[:5]}"
    assert last["hostile-del"] is None, "a replayed version brought a deleted product back"


def _source(record) -> tuple[int, int]:
    source = orjson.loads(record.value)["source"]
    return source["partition"], source["offset"]
