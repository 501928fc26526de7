"""Running the worker: Kafka not up at start, health probes, a too-small input topic, a taken port."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.error
import urllib.request

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.harness import WorkerProcess, consume, event, free_port, produce


def _exit(worker: WorkerProcess, timeout: float = 90) -> tuple[int, list[str]]:
    try:
        code = worker.proc.wait(timeout=timeout)
    finally:
        worker.kill()
    return code, [line for line in worker.log().splitlines() if line.strip()]


def _topics(bootstrap: str) -> set[str]:
    async def run() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()
    return asyncio.run(run())


def _create(bootstrap: str, topic: str, partitions: int) -> None:
    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, partitions, 1)])
        finally:
            await admin.close()
    asyncio.run(run())


def _get(port: int, path: str) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    return status, json.loads(body) if path != "/metrics" else body.decode()


def test_a_worker_started_before_kafka_retries_one_line_per_attempt_then_exits_in_one_line(topics, tiny_bundle,
                                                                                            tmp_path):
    dead = f"127.0.0.1:{free_port()}"      # nothing listens there
    worker = WorkerProcess(dead, topics, tiny_bundle, tmp_path, kafka_wait_seconds=4)
    code, lines = _exit(worker)
    assert code == 1, lines
    assert lines[-1].startswith(f"tagstream: error: cannot use Kafka at {dead} (PLAINTEXT) after "), lines[-1]
    attempts = int(re.search(r"after (\d+) attempts", lines[-1]).group(1))
    retries = [line for line in lines if "unreachable (attempt" in line]
    assert attempts >= 3 and len(retries) == attempts - 1, lines    # the last attempt is the error line
    assert [int(re.search(r"attempt (\d+)", line).group(1)) for line in retries] == list(range(1, attempts))
    assert not [line for line in lines if "Unable connect to" in line or "Traceback" in line], lines


def test_a_live_worker_answers_healthz_and_becomes_ready_once_it_consumes(kafka, topics, tiny_bundle, tmp_path):
    port = free_port()
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, metrics_port=port)
    try:
        seen, status, body = set(), None, {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                status, body = _get(port, "/readyz")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)              # the bundle loads before the port is bound
                continue
            seen.update(body["reasons"])
            if status == 200:
                break
            assert status == 503 and body["ready"] is False and body["reasons"], body
            time.sleep(0.5)
        assert status == 200 and body == {"ready": True, "reasons": [], "kafka_seconds_ago": body["kafka_seconds_ago"]}
        assert seen <= {"starting", "recovering", "rebalancing", "kafka not reached yet"}, seen
        produce(kafka, topics.input, [(b"p1", event("p1", 1, "Nike Air Max 270 black"))])
        assert len(consume(kafka, topics.enriched, count=1, timeout=60)) == 1
        assert _get(port, "/readyz")[0] == 200
        status, body = _get(port, "/healthz")
        assert status == 200 and body["live"] is True
        status, text = _get(port, "/metrics")
        assert status == 200 and "tagstream_events_consumed_total 1.0" in text
    finally:
        worker.stop()


def test_an_input_topic_with_fewer_partitions_is_reported_or_refused(kafka, topics, tiny_bundle, tmp_path):
    _create(kafka, topics.input, 1)          # as an early producer's auto-created topic would be
    strict = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, strict_partitions="true")
    code, lines = _exit(strict)
    assert code == 1, lines
    assert lines[-1].startswith(f"tagstream: error: input topic {topics.input} has 1 partition, fewer than "
                                f"--partitions 4"), lines[-1]
    assert "TAGSTREAM_STRICT_PARTITIONS" in lines[-1]
    assert topics.enriched not in _topics(kafka), "a refused worker creates nothing"

    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path).wait_ready()
    worker.stop()
    warnings = [line for line in worker.log().splitlines() if f"input topic {topics.input} has 1 partition" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "no more than 1 worker" in warnings[0], warnings


def test_a_taken_metrics_port_names_the_port_and_the_setting_and_creates_no_topics(kafka, topics, tiny_bundle,
                                                                                  tmp_path):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, metrics_port=port)
        code, lines = _exit(worker)
    assert code == 1, lines
    assert lines[-1].startswith("tagstream: error: ") and "Traceback" not in worker.log()
    assert str(port) in lines[-1] and "TAGSTREAM_METRICS_PORT" in lines[-1] and "--metrics-port" in lines[-1]
    assert not {topics.input, topics.enriched, topics.dlq} & _topics(kafka)
