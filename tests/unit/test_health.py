"""Liveness and readiness: what each state of the worker answers, and the server on the metrics port."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

import stream.service.metrics  # noqa: F401  (registers the tagstream_ metrics /metrics serves)
from stream.service.health import Health, serve
from stream.service.settings import Settings, SettingsError


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def health():
    clock = Clock()
    return Health(live_seconds=30, kafka_seconds=20, clock=clock), clock


def _consuming(h: Health) -> None:
    h.beat(recovering=False, rebalancing=False)
    h.kafka_reached()


def test_a_starting_worker_is_alive_and_not_ready(health):
    h, clock = health
    clock.now += 25                       # loading the bundle, waiting for Kafka
    h.starting()
    clock.now += 25
    assert h.live()[0]
    ready, body = h.ready()
    assert not ready and body["reasons"] == ["starting", "kafka not reached yet"]


def test_ready_once_recovered_and_kafka_answered(health):
    h, clock = health
    h.beat(recovering=True, rebalancing=False)
    h.kafka_reached()
    assert h.ready()[1]["reasons"] == ["recovering"]
    _consuming(h)
    assert h.ready() == (True, {"ready": True, "reasons": [], "kafka_seconds_ago": 0.0})


@pytest.mark.parametrize("change, reason", [
    (lambda h, clock: h.beat(recovering=False, rebalancing=True), "rebalancing"),
    (lambda h, clock: h.stalled(), "stalled"),
    (lambda h, clock: (setattr(clock, "now", clock.now + 20), h.beat(recovering=False, rebalancing=False)),
     "kafka unreachable"),
])
def test_not_ready_while(health, change, reason):
    h, clock = health
    _consuming(h)
    change(h, clock)
    ready, body = h.ready()
    assert not ready and body["reasons"] == [reason]
    assert h.live()[0], "not ready is not dead: no restart for any of these"


def test_a_completed_batch_ends_a_stall(health):
    h, clock = health
    _consuming(h)
    h.stalled()
    h.batch_done()
    assert h.ready()[0]


def test_a_loop_that_stopped_beating_is_dead_and_not_ready(health):
    h, clock = health
    _consuming(h)
    clock.now += 31
    h.kafka_reached()                      # a thread can still reach Kafka; the loop is what counts
    live, body = h.live()
    assert not live and body["loop_seconds_ago"] == 31.0
    assert "event loop not running" in h.ready()[1]["reasons"]


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_the_server_answers_probes_and_metrics_on_one_port(health):
    h, clock = health
    server = serve(0, h, host="127.0.0.1")
    port = server.server_address[1]
    try:
        status, body = _get(port, "/readyz")
        assert status == 503 and json.loads(body)["reasons"] == ["starting", "kafka not reached yet"]
        _consuming(h)
        status, body = _get(port, "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True
        status, body = _get(port, "/healthz")
        assert status == 200 and json.loads(body)["live"] is True
        status, body = _get(port, "/metrics")
        assert status == 200 and b"tagstream_events_consumed_total" in body
        assert _get(port, "/nope")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_a_taken_port_names_the_port_and_the_setting(health):
    h, _ = health
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError) as caught:
            serve(port, h, host="127.0.0.1")
    message = str(caught.value)
    assert str(port) in message and Settings.env_name("metrics_port") in message and "--metrics-port" in message


def test_the_thresholds_come_from_the_settings():
    h = Health.from_settings(Settings.from_env({"TAGSTREAM_LIVENESS_SECONDS": "7",
                                                "TAGSTREAM_READINESS_KAFKA_SECONDS": "9"}))
    assert (h.live_seconds, h.kafka_seconds) == (7.0, 9.0)
    with pytest.raises(SettingsError, match="TAGSTREAM_LIVENESS_SECONDS must be positive"):
        Settings.from_env({"TAGSTREAM_LIVENESS_SECONDS": "0"})
