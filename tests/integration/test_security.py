"""SASL/SCRAM-SHA-512 on a second local broker: clients without valid credentials are refused, the
worker authenticates and enriches, and its password shows in no log, metric or rendering."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed, UnsupportedSaslMechanismError

from stream.service.settings import Settings
from stream.service.clients import kafka_client_options
from tests.conftest import SAMPLE_TEXTS
from bench.broker import SASL_PASSWORD, SASL_USER, ensure_sasl_broker, stop_sasl_broker
from bench.harness import ROOT, Topics, WorkerProcess, event, free_port, values

pytestmark = pytest.mark.skipif(bool(os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP")),
                                reason="needs the local SASL broker; TAGSTREAM_KAFKA_BOOTSTRAP points elsewhere")

# Short: a refused client must fail fast, not hang until a default 40 s request timeout.
REFUSAL_TIMEOUT_S = 20


@pytest.fixture(scope="module")
def sasl_bootstrap():
    try:
        _, sasl = ensure_sasl_broker()
        yield sasl
    finally:
        stop_sasl_broker()


def _credentials(bootstrap: str, *, username: str = SASL_USER, password: str = SASL_PASSWORD,
                 mechanism: str = "SCRAM-SHA-512") -> dict:
    """aiokafka options as the CLI builds them from settings."""
    return kafka_client_options(Settings(kafka_bootstrap=bootstrap, security_protocol="SASL_PLAINTEXT",
                                         sasl_mechanism=mechanism, sasl_username=username, sasl_password=password))


async def _start_producer(bootstrap: str, options: dict) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000, **options)
    try:
        await asyncio.wait_for(producer.start(), REFUSAL_TIMEOUT_S)
    finally:
        await producer.stop()


async def _connect(bootstrap: str, options: dict) -> None:
    """One connection: ApiVersions and the SASL exchange, where the broker's own error code surfaces."""
    host, port = bootstrap.rsplit(":", 1)
    conn = await asyncio.wait_for(create_conn(host, int(port), request_timeout_ms=5000, **options), REFUSAL_TIMEOUT_S)
    conn.close()


REFUSED = {
    "anonymous": ({"security_protocol": "PLAINTEXT"}, None),
    "wrong-password": ({"password": "not-the-password"}, SaslAuthenticationFailed),
    "unknown-user": ({"username": "mallory"}, SaslAuthenticationFailed),
    "mechanism-not-enabled": ({"mechanism": "SCRAM-SHA-256"}, UnsupportedSaslMechanismError),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_the_sasl_port_refuses_clients_without_valid_credentials(sasl_bootstrap, case):
    change, sasl_error = REFUSED[case]
    options = dict(change) if "security_protocol" in change else _credentials(sasl_bootstrap, **change)

    # A PLAINTEXT client gets through ApiVersions, then the broker closes on its metadata request;
    # aiokafka reports every refused bootstrap as a connection error and logs the cause.
    with pytest.raises(KafkaConnectionError):
        asyncio.run(_start_producer(sasl_bootstrap, options))
    if sasl_error is not None:
        with pytest.raises(sasl_error):
            asyncio.run(_connect(sasl_bootstrap, options))
    # The same listener takes the right credentials: the refusals above are about them alone.
    asyncio.run(_connect(sasl_bootstrap, _credentials(sasl_bootstrap)))


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **_credentials(bootstrap))
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, value=value, key=key) for key, value in records])
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, count: int, timeout: float) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False, **_credentials(bootstrap))
    await consumer.start()
    records: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(records) < count:
            for part in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


@dataclass
class WorkerRun:
    records: list
    log: str
    metrics: str


@pytest.fixture(scope="module")
def worker_run(sasl_bootstrap, tiny_bundle, tmp_path_factory) -> WorkerRun:
    """One authenticated worker, at debug level so that its log says as much as it ever will."""
    topics, metrics_port = Topics(), free_port()
    worker = WorkerProcess(sasl_bootstrap, topics, tiny_bundle, tmp_path_factory.mktemp("sasl-worker"),
                           security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                           sasl_username=SASL_USER, sasl_password=SASL_PASSWORD, metrics_port=metrics_port,
                           log_level="debug")
    try:
        worker.wait_ready()
        records = [(f"p{i}".encode(), event(f"p{i}", 1, title)) for i, title in enumerate(SAMPLE_TEXTS)]
        asyncio.run(_produce(sasl_bootstrap, topics.input, records))
        out = asyncio.run(_consume(sasl_bootstrap, topics.enriched, len(records), timeout=90))
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    finally:
        worker.stop()
    return WorkerRun(out, worker.log(), metrics)


def test_the_worker_authenticates_and_enriches(worker_run):
    got = {v["product_id"]: v for v in values(worker_run.records)}
    assert set(got) == {f"p{i}" for i in range(len(SAMPLE_TEXTS))}, worker_run.log[-4000:]
    assert all(isinstance(v["tags"], list) and v["model"]["name"] for v in got.values())
    assert f"Authenticated as {SASL_USER} via SCRAM-SHA-512" in worker_run.log


def test_the_password_shows_in_no_log_metric_or_rendering(worker_run):
    assert " DEBUG " in worker_run.log  # the most talkative level was on
    assert SASL_PASSWORD not in worker_run.log
    assert "tagstream_" in worker_run.metrics and SASL_PASSWORD not in worker_run.metrics

    settings = Settings.from_env({"TAGSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                                  "TAGSTREAM_SASL_USERNAME": SASL_USER, "TAGSTREAM_SASL_PASSWORD": SASL_PASSWORD})
    assert settings.sasl_password == SASL_PASSWORD
    for rendering in (repr(settings), str(settings), repr(settings.public()), f"{settings}", repr(Settings.describe())):
        assert SASL_PASSWORD not in rendering
    assert "sasl_password='***'" in repr(settings)

    env = {**os.environ, "TAGSTREAM_SASL_PASSWORD": SASL_PASSWORD, "TAGSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "TAGSTREAM_SASL_USERNAME": SASL_USER}
    shown = subprocess.run([sys.executable, "-m", "stream.cli", "worker", "--help"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "--sasl-password" in shown.stdout
    assert SASL_PASSWORD not in shown.stdout + shown.stderr


def test_a_refused_worker_says_so_without_the_password(sasl_bootstrap, tiny_bundle, tmp_path):
    wrong = "wrong-" + SASL_PASSWORD
    worker = WorkerProcess(sasl_bootstrap, Topics(), tiny_bundle, tmp_path, security_protocol="SASL_PLAINTEXT",
                           sasl_mechanism="SCRAM-SHA-512", sasl_username=SASL_USER, sasl_password=wrong,
                           log_level="debug")
    try:
        code = worker.proc.wait(timeout=60)
    finally:
        worker.kill()
    log = worker.log()
    assert code != 0 and "SaslAuthenticationFailed" in log, log[-4000:]
    assert "tagstream: error: cannot use Kafka at" in log and "Traceback" not in log, log[-4000:]
    assert wrong not in log and SASL_PASSWORD not in log
