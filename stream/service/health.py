"""Liveness and readiness beside /metrics, on one small HTTP server on the metrics port.

/healthz answers 200 while the worker's event loop runs; /readyz answers 200 only while the
worker consumes: recovered, not rebalancing, not stalled, and Kafka answered recently.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from stream.service.settings import Settings, SettingsError


class Health:
    """What the probes answer. The worker's loop writes it; the server's threads only read it."""

    def __init__(self, *, live_seconds: float, kafka_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.live_seconds, self.kafka_seconds, self.clock = live_seconds, kafka_seconds, clock
        self._beat = clock()            # starting counts as alive, until live_seconds pass silently
        self._consuming = False         # the worker's loop has beaten at least once
        self._recovering = True
        self._rebalancing = False
        self._stalled = False
        self._kafka_at: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "Health":
        return cls(live_seconds=settings.liveness_seconds, kafka_seconds=settings.readiness_kafka_seconds)

    def starting(self) -> None:
        """Alive, not yet consuming: loading, or waiting for Kafka at start."""
        self._beat = self.clock()

    def beat(self, *, recovering: bool, rebalancing: bool) -> None:
        """The worker's event loop ran (called from a timer on it), with faust's state at that time."""
        self._beat, self._consuming = self.clock(), True
        self._recovering, self._rebalancing = recovering, rebalancing

    def kafka_reached(self) -> None:
        self._kafka_at = self.clock()

    def stalled(self) -> None:
        """The stall watchdog fired: not ready until a batch completes."""
        self._stalled = True

    def batch_done(self) -> None:
        self._stalled = False

    def live(self) -> tuple[bool, dict]:
        since = self.clock() - self._beat
        return since < self.live_seconds, {"live": since < self.live_seconds, "loop_seconds_ago": round(since, 1)}

    def ready(self) -> tuple[bool, dict]:
        now = self.clock()
        kafka_ago = None if self._kafka_at is None else now - self._kafka_at
        reasons = []
        if not self.live()[0]:
            reasons.append("event loop not running")
        if not self._consuming:
            reasons.append("starting")
        elif self._recovering:
            reasons.append("recovering")
        if self._consuming and self._rebalancing:
            reasons.append("rebalancing")
        if self._stalled:
            reasons.append("stalled")
        if kafka_ago is None:
            reasons.append("kafka not reached yet")
        elif kafka_ago >= self.kafka_seconds:
            reasons.append("kafka unreachable")
        return not reasons, {"ready": not reasons, "reasons": reasons,
                             "kafka_seconds_ago": None if kafka_ago is None else round(kafka_ago, 1)}


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:                # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, body = health.live() if path == "/healthz" else health.ready()
                self._send(200 if ok else 503, orjson.dumps(body), "application/json")
            else:
                self._send(404, b'{"error": "not found: /metrics, /healthz or /readyz"}', "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:
            pass    # probes every few seconds would fill the worker's log

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def serve(port: int, health: Health, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Bind now (a taken port is an error before anything else happens) and serve in a thread."""
    try:
        server = _Server((host, port), _handler(health))
    except OSError as err:
        raise SettingsError(f"cannot serve /metrics on port {port} ({Settings.env_name('metrics_port')}, "
                            f"--metrics-port): {err.strerror or err}") from None
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    return server
