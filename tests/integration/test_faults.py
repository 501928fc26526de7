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
from tests.kafka_broker import broker_restart
from tests.streaming import WorkerProcess, consume, event, produce


def _report(name: str, sent: set, records, dead: int = 0) -> int:
    seen = [(r.key.decode(), orjson.loads(r.value)["version"]) for r in records if r.value is not None]
    unique = set(seen)
    lost = len(sent - unique)
    print(f"{name}: sent {len(sent)}, enriched {len(unique & sent)}, dead-lettered {dead}, "
          f"duplicated {len(seen) - len(unique)}, lost {lost}")
    return lost


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
    assert _report("sigkill x3", sent, out) == 0


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
    assert _report("broker restart", sent, out) == 0
