"""Workers as real subprocesses and plain aiokafka clients, shared by the integration tests and the
benchmarks (bench never imports tests; tests may import this)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.broker import unique_name

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Topics:
    """One set of topics and one consumer group per test."""

    input: str = field(default_factory=lambda: unique_name("in"))
    enriched: str = field(default_factory=lambda: unique_name("enriched"))
    dlq: str = field(default_factory=lambda: unique_name("dlq"))
    group: str = field(default_factory=lambda: unique_name("group"))

    def env(self) -> dict[str, str]:
        return {"TAGSTREAM_INPUT_TOPIC": self.input, "TAGSTREAM_ENRICHED_TOPIC": self.enriched,
                "TAGSTREAM_DLQ_TOPIC": self.dlq, "TAGSTREAM_GROUP_ID": self.group}


class WorkerProcess:
    """`tagstream worker` in a subprocess, logging to a file the test can show on failure."""

    def __init__(self, bootstrap: str, topics: Topics, bundle: Path, workdir: Path, **settings: str) -> None:
        self.log_path = workdir / f"worker-{unique_name('log')}.log"
        env = {**os.environ, **topics.env(), "TAGSTREAM_KAFKA_BOOTSTRAP": bootstrap, "TAGSTREAM_BUNDLE": str(bundle),
               "TAGSTREAM_METRICS_PORT": "0", "TAGSTREAM_DATA_DIR": str(workdir / unique_name("data")),
               "TAGSTREAM_PARTITIONS": "4", "TAGSTREAM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("TAGSTREAM_FAILPOINT", None)
        env.update({f"TAGSTREAM_{k.upper()}": str(v) for k, v in settings.items()})  # failpoint too
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], cwd=ROOT, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = 90) -> "WorkerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(r"\[\^\w*Worker\]: Ready", self.log()):
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.3)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def rss_bytes(self) -> tuple[int, int]:
        """(resident now, peak resident) of the worker process, from /proc."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
        return fields["VmRSS"], fields["VmHWM"]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()


def event(product_id: str, version: int, title: str, description: str | None = None, op: str = "upsert") -> bytes:
    return orjson.dumps({"product_id": product_id, "op": op, "version": version, "title": title,
                         "description": description})


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]],
                   max_request_size: int = 1_048_576) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=max_request_size)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in records]
        return [(meta.partition, meta.offset) for meta in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]],
            max_request_size: int = 1_048_576) -> list[tuple[int, int]]:
    """Send and wait for the broker's acks; the (partition, offset) of each record."""
    return asyncio.run(_produce(bootstrap, topic, records, max_request_size))


async def _admin(bootstrap: str, action) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await action(admin)
    finally:
        await admin.close()


def create_topic(bootstrap: str, name: str, partitions: int = 4, **config: str) -> None:
    """A topic made before any worker, with its own configs (e.g. max.message.bytes)."""
    from aiokafka.admin import NewTopic

    configs = {k.replace("_", "."): str(v) for k, v in config.items()}
    asyncio.run(_admin(bootstrap, lambda a: a.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])))


def alter_topic(bootstrap: str, name: str, **config: str) -> None:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    configs = {k.replace("_", "."): str(v) for k, v in config.items()}
    asyncio.run(_admin(bootstrap, lambda a: a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs)])))


def committed(bootstrap: str, group: str) -> dict[int, int]:
    """The group's committed offset per input partition (absent: nothing committed there)."""
    async def run() -> dict[int, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return {tp.partition: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group)).items()}
        finally:
            await admin.close()
    return asyncio.run(run())


def report(name: str, sent: set[tuple[str, int]], records, dead: int = 0) -> int:
    """Print sent / enriched / dead-lettered / duplicated / lost for (product id, version) pairs; return lost."""
    seen = [(r.key.decode(), orjson.loads(r.value)["version"]) for r in records if r.value is not None]
    unique = set(seen)
    lost = len(sent - unique)
    print(f"{name}: sent {len(sent) + dead}, enriched {len(unique & sent)}, dead-lettered {dead}, "
          f"duplicated {len(seen) - len(unique)}, lost {lost}")
    return lost


async def _consume(bootstrap: str, topic: str, until, timeout: float) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    records: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(records):
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


def consume(bootstrap: str, topic: str, *, count: int | None = None, until=None, timeout: float = 60) -> list:
    """Records of ``topic`` from the start, until ``count`` are seen (or ``until(records)``) or timeout."""
    check = until or (lambda records: count is not None and len(records) >= count)
    return asyncio.run(_consume(bootstrap, topic, check, timeout))


async def _group_lag(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps}
    finally:
        await consumer.stop()
        await admin.close()


def group_lag(bootstrap: str, group: str, topic: str, partitions: int = 4) -> dict[int, int]:
    """Per partition: end offset minus the group's committed offset (what is left to process)."""
    return asyncio.run(_group_lag(bootstrap, group, topic, partitions))


def values(records) -> list[dict | None]:
    return [orjson.loads(r.value) if r.value is not None else None for r in records]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """The worker's /metrics as {'name{labels}': value}."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
