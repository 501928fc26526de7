"""The local broker takes a topic, acknowledged writes and a consumer group, in order."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.broker import ensure_broker, unique_name


async def _round_trip(bootstrap: str, topic: str, group: str, values: list[bytes]) -> list[tuple[bytes, bytes]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=f"k{i}".encode())
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    received: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(received) < len(values):
                batches = await consumer.getmany(timeout_ms=1000)
                received.extend((m.key, m.value) for records in batches.values() for m in records)
    finally:
        await consumer.stop()
    return received


def test_produce_and_consume_in_order():
    bootstrap = ensure_broker()
    values = [f"message {i}".encode() for i in range(10)]

    received = asyncio.run(_round_trip(bootstrap, unique_name("it-broker"), unique_name("it-group"), values))

    assert received == [(f"k{i}".encode(), value) for i, value in enumerate(values)]
