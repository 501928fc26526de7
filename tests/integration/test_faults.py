"""Faults on the real broker, each reporting sent / enriched / dead-lettered / duplicated / lost."""

from __future__ import annotations

import os
import random
import threading
import time

import orjson
import pytest

from model.synth import generate, load_taxonomy_json
from tests.conftest import DEMO_TAXONOMY
from bench.broker import broker_restart
from bench.harness import (WorkerProcess, consume, create_topic, event, free_port, group_lag, produce, report,
                           scrape)


def test_sigkill_three_times_mid_stream_loses_nothing(kafka, topics, tiny_bundle, tmp_path):
    products = generate(load_taxonomy_json(DEMO_TAXONOMY), 600, seed=41, lang="mixed", products=True)
    records = [(p["id"].encode(), event(p["id"], 1, p["title"], p["description"])) for p in products]
    sent = {(p["id"], 1) for p in products}
    settings = {"max_batch": 16, "session_timeout": 6}
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, **settings).wait_ready()

    def trickle():  # the stream keeps flowing while workers die
        for i in range(0, len(records), 20):
            produce(kafka, topics.input, records[i:i + 20])
            time.sleep(0.4)

    producer = threading.Thread(target=trickle)
    producer.start()
    rng = random.Random(7)
    kills = 0
    try:
        for _ in range(3):
            time.sleep(rng.uniform(1.0, 3.0))
            worker.kill()
            kills += 1
            worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, **settings).wait_ready()
        producer.join()
        out = consume(kafka, topics.enriched, until=lambda r: {(x.key.decode(), 1) for x in r} >= sent, timeout=180)
    finally:
        producer.join()
        worker.stop()
    assert kills == 3
    assert report("sigkill x3", sent, out) == 0


def test_broker_restart_mid_stream_loses_nothing(kafka, topics, tiny_bundle, tmp_path):
    if os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP"):
        pytest.skip("needs the local broker to restart it")
    products = generate(load_taxonomy_json(DEMO_TAXONOMY), 300, seed=42, lang="mixed", products=True)
    records = [(p["id"].encode(), event(p["id"], 1, p["title"], p["description"])) for p in products]
    sent = {(p["id"], 1) for p in products}
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, max_batch=16, session_timeout=6).wait_ready()
    try:
        produce(kafka, topics.input, records[:150])
        consume(kafka, topics.enriched, count=1, timeout=60)
        broker_restart()
        produce(kafka, topics.input, records[150:])
        out = consume(kafka, topics.enriched, until=lambda r: {(x.key.decode(), 1) for x in r} >= sent, timeout=180)
        assert worker.proc.poll() is None, "the worker recovered on its own, without a restart"
    finally:
        worker.stop()
    assert report("broker restart", sent, out) == 0


def test_inference_slower_than_the_session_timeout_causes_no_rebalance(kafka, topics, tiny_bundle, tmp_path):
    # Every batch takes 9 s in the model, half again the 6 s session timeout. Inference runs in a
    # thread, so the consumer keeps heart-beating and the group never rebalances.
    products = generate(load_taxonomy_json(DEMO_TAXONOMY), 60, seed=44, lang="mixed", products=True)
    records = [(p["id"].encode(), event(p["id"], 1, p["title"], p["description"])) for p in products]
    sent = {(p["id"], 1) for p in products}
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, max_batch=20, max_wait=0.5, session_timeout=6,
                           failpoint="slow_inference:9").wait_ready()
    try:
        produce(kafka, topics.input, records)
        out = consume(kafka, topics.enriched, until=lambda r: {(x.key.decode(), 1) for x in r} >= sent, timeout=120)
    finally:
        worker.stop()
    log = worker.log()
    assert report("slow inference", sent, out) == 0
    assert log.count("Joined group") == 1, "the only join is the first one: no rebalance"
    assert "Heartbeat failed" not in log and "Revoking previously assigned partitions set()" in log
    assert log.count("Revoking previously assigned partitions") == 1


def test_a_burst_of_20000_events_keeps_memory_bounded_and_the_lag_drains(kafka, topics, tiny_bundle, tmp_path):
    products = generate(load_taxonomy_json(DEMO_TAXONOMY), 20_000, seed=45, lang="mixed", products=True)
    records = [(p["id"].encode(), event(p["id"], 1, p["title"])) for p in products]
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, max_batch=64).wait_ready()
    try:
        produce(kafka, topics.input, records[:1000])  # warm up: model, table, buffers
        assert _wait_for_no_lag(kafka, topics, timeout=120)
        warm, _ = worker.rss_bytes()
        burst_started = time.monotonic()
        produce(kafka, topics.input, records[1000:])
        drained = _wait_for_no_lag(kafka, topics, timeout=400)
        seconds = time.monotonic() - burst_started
        _, peak = worker.rss_bytes()
    finally:
        worker.stop()
    mib = 1 << 20
    print(f"burst of 19,000 after 1,000: drained {drained} in {seconds:.0f} s ({19_000 / seconds:.0f} events/s), "
          f"RSS warm {warm / mib:.0f} MiB, peak {peak / mib:.0f} MiB (+{(peak - warm) / mib:.0f} MiB)")
    assert drained, "the consumer group's lag went back to zero"
    # What is in flight is capped by faust's stream buffer (a partition whose queue is full is
    # paused) and aiokafka's fetch limits; the state table grows by one entry per product. A guard
    # against runaway growth (here +52 MiB for 19,000 products); the printed figures are the result.
    assert peak - warm < 200 * mib


def _wait_for_no_lag(kafka: str, topics, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(group_lag(kafka, topics.group, topics.input).values()):
            return True
        time.sleep(1)
    return False


def test_a_batch_whose_inference_raises_dead_letters_only_the_offender(kafka, topics, tiny_bundle, tmp_path):
    products = generate(load_taxonomy_json(DEMO_TAXONOMY), 120, seed=46, lang="mixed", products=True)
    poisoned = {products[i]["id"] for i in (7, 61)}
    for p in products:
        if p["id"] in poisoned:
            p["title"] += " \u2063BREAKS-THE-TOKENIZER"
    records = [(p["id"].encode(), event(p["id"], 1, p["title"], p["description"])) for p in products]
    sent = {(p["id"], 1) for p in products}
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, max_batch=32,
                           failpoint="poison_text:BREAKS-THE-TOKENIZER").wait_ready()
    try:
        produce(kafka, topics.input, records)
        out = consume(kafka, topics.enriched, count=118, timeout=120)
        dead = consume(kafka, topics.dlq, count=2, timeout=60)
    finally:
        worker.stop()
    letters = [orjson.loads(r.value) for r in dead]
    assert {r.key.decode() for r in dead} == poisoned
    assert {d["error"] for d in letters} == {"inference_failed"}
    assert all("the tokenizer broke" in d["reason"] for d in letters)
    enriched = {(r.key.decode(), 1) for r in out}
    assert enriched == sent - {(pid, 1) for pid in poisoned}, "the rest of each batch is enriched"
    lost = len(sent - enriched - {(pid, 1) for pid in poisoned})
    print(f"poisoned batch: sent {len(sent)}, enriched {len(enriched)}, dead-lettered {len(letters)}, "
          f"duplicated {len(out) - len(enriched)}, lost {lost}")
    assert lost == 0


@pytest.mark.parametrize("stall", ["1", "hard"])
def test_a_stalled_consumer_is_noticed_and_resumed(kafka, topics, tiny_bundle, tmp_path, stall):
    # The failpoint stops the consumer's flow after the first batch: events wait, nothing is
    # delivered. The watchdog sees lag without progress, logs the consumer's state, re-seeks;
    # "hard": that repair leaves the flow stopped, and the next one asks for a rebalance.
    products = generate(load_taxonomy_json(DEMO_TAXONOMY), 200, seed=47, lang="mixed", products=True)
    records = [(p["id"].encode(), event(p["id"], 1, p["title"])) for p in products]
    sent = {(p["id"], 1) for p in products}
    port = free_port()
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, max_batch=16, stall_seconds=6, metrics_port=port,
                           failpoint=f"stall_consumer:{stall}").wait_ready()
    try:
        produce(kafka, topics.input, records[:16])
        consume(kafka, topics.enriched, count=16, timeout=60)
        time.sleep(1)
        produce(kafka, topics.input, records[16:])
        out = consume(kafka, topics.enriched, until=lambda r: {(x.key.decode(), 1) for x in r} >= sent, timeout=90)
        stalls = scrape(port)["tagstream_consumer_stalls_total"]
    finally:
        worker.stop()
    assert "failpoint stall_consumer" in worker.log()
    assert "seeking to the committed offsets and resuming" in worker.log()
    assert stalls >= (2 if stall == "hard" else 1)
    assert ("asking the group to rebalance" in worker.log()) == (stall == "hard")
    assert report(f"stalled consumer ({stall})", sent, out) == 0



def test_records_faust_took_and_dropped_before_the_first_commit_are_read_again(kafka, topics, tiny_bundle, tmp_path):
    # With nothing committed, aiokafka's seek to the committed offsets leaves a partition where it
    # is; if faust had taken (and dropped) its records during recovery, they used to be skipped
    # for good. The failpoint moves every input partition to its end at that moment; the worker's
    # own positioning must bring them back to the start.
    products = generate(load_taxonomy_json(DEMO_TAXONOMY), 80, seed=53, lang="mixed", products=True)
    records = [(p["id"].encode(), event(p["id"], 1, p["title"])) for p in products]
    sent = {(p["id"], 1) for p in products}
    create_topic(kafka, topics.input, 4)
    assert len({partition for partition, _ in produce(kafka, topics.input, records)}) == 4
    # stall_seconds: the watchdog (which would repair this too) stays out of it.
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, failpoint="skip_fetched:1",
                           stall_seconds=300).wait_ready()
    try:
        out = consume(kafka, topics.enriched, until=lambda r: {(x.key.decode(), 1) for x in r} >= sent, timeout=60)
    finally:
        worker.stop()
    assert report("dropped before the first commit", sent, out) == 0, worker.log()[-4000:]
