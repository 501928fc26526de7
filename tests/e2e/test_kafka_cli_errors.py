"""`produce`, `tail` and topic readers with Kafka down or a record too large: one line, no traceback."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.conftest import DEMO_TAXONOMY
from bench.broker import ensure_broker, unique_name
from bench.harness import consume, free_port
from tests.e2e.conftest import one_line_error


def _one_line_error(run, *needles):
    one_line_error(run, *needles, exit_code=1, prefix="tagstream: error: ")


@pytest.fixture
def events(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"product_id": "p1", "op": "upsert", "version": 1, "title": "Nike Air"}) + "\n",
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("verb", ["produce", "tail", "taxonomy-suggest"])
def test_kafka_down_is_one_line_naming_the_broker(cli, events, tmp_path, verb):
    dead = f"127.0.0.1:{free_port()}"
    args = {"produce": ["produce", str(events)],
            "tail": ["tail", "products.enriched", "--max", "1"],
            "taxonomy-suggest": ["taxonomy", "suggest", "--taxonomy", str(DEMO_TAXONOMY),
                                 "--out", str(tmp_path / "patch.json")]}[verb]
    run = cli(*args, "--kafka-bootstrap", dead, check=False, timeout=120)
    _one_line_error(run, f"at {dead} (PLAINTEXT)", "Connect call failed")


def test_a_record_over_the_limit_is_one_line_naming_it_and_the_records_before_it_are_sent(cli, tmp_path):
    bootstrap = ensure_broker()
    topic = unique_name("produce-big")

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 1, 1)])
        finally:
            await admin.close()
    asyncio.run(create())
    path = tmp_path / "big.jsonl"
    small = {"product_id": "p1", "op": "upsert", "version": 1, "title": "Nike Air"}
    big = {**small, "product_id": "p2", "description": "x" * 1_100_000}
    path.write_text(json.dumps(small) + "\n" + json.dumps(big) + "\n", encoding="utf-8")
    run = cli("produce", str(path), "--topic", topic, "--kafka-bootstrap", bootstrap, check=False, timeout=120)
    _one_line_error(run, "big.jsonl: record 2 is 1,100,", "over the 1,048,576", "1 earlier record sent")
    assert [r.key for r in consume(bootstrap, topic, count=1, timeout=30)] == [b"p1"]
