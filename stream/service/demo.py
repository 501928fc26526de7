"""`tagstream demo`: the whole service on this machine in one command.

Starts the local Kafka broker (unless one answers already), starts a worker on the demo bundle,
replays a product feed, and shows live progress. Everything it started is stopped on exit or
Ctrl-C. The bundle and the feed come from the caller (the CLI takes them from ``export/demo.py``:
a small model trained once and cached, and the synthetic bilingual catalogue), so nothing here
reaches the training side.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import orjson

from stream.service.settings import Settings, setting

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
DEMO_TOPICS = {"input_topic": "demo.products.updates", "enriched_topic": "demo.products.enriched",
               "dlq_topic": "demo.products.dlq", "drift_topic": "demo.drift",
               "candidates_topic": "demo.taxonomy-candidates"}
COLOURS = {"brand": "1;34", "category": "1;32", "color": "1;35", "material": "1;33", "style": "36",
           "size": "1;36", "audience": "33", "season": "32", "pattern": "35", "model": "2"}


class DemoError(RuntimeError):
    """Something the demo cannot do; the message says what to do about it."""


@dataclass
class DemoConfig:
    """What `tagstream demo` runs; its options are these fields (broker and port default as the worker's)."""

    events: int = setting(0, "send this many events, wait for them, stop (0: replay until Ctrl-C)", minimum=0)
    rate: float = setting(40.0, "events per second", above=0)
    cache: Path = setting(Path.home() / ".cache" / "tagstream" / "demo", "where the demo model and worker state live")
    kafka_bootstrap: str = setting(Settings.kafka_bootstrap, "a broker to use; the local one is started if none "
                                                             "answers")
    metrics_port: int = setting(Settings.metrics_port, "the worker's metrics and health port (the next free one if "
                                                       "taken)", above=0)
    show_every: float = setting(3.0, "seconds between sample products", above=0)
    timeout: float = setting(180.0, "bounded runs (--events): give up waiting for the last records after this "
                                    "many seconds", above=0)


def _answers(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
            return True
    except OSError:
        return False


def _free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def highlight(text: str, tags: list[dict], colour: bool) -> str:
    """The text with each tagged span marked: coloured on a terminal, [type:…] otherwise."""
    out, at = [], 0
    for tag in sorted(tags, key=lambda t: t["start"]):
        if tag["start"] < at:
            continue
        out.append(text[at:tag["start"]])
        span = text[tag["start"]:tag["end"]]
        code = COLOURS.get(tag["type"], "1")
        out.append(f"\x1b[{code}m{span}\x1b[0m" if colour else f"[{tag['type']}:{span}]")
        at = tag["end"]
    out.append(text[at:])
    return "".join(out)


class Demo:
    def __init__(self, config: DemoConfig, prepare_bundle: Callable[[Path, Callable[[str], None]], Path],
                 products: Iterator[dict], out=sys.stdout) -> None:
        self.config, self.out = config, out
        self.prepare_bundle, self.products = prepare_bundle, products
        self.colour = out.isatty() and not os.environ.get("NO_COLOR")
        self.started_kafka = False
        self.worker: subprocess.Popen | None = None
        self.run_id = time.strftime("%H%M%S")
        self.sent_at: dict[str, float] = {}
        self.latencies: deque[float] = deque(maxlen=2000)
        self.enriched: set[str] = set()
        self.titles: dict[str, str] = {}
        self.last_drift: dict | None = None
        self.interrupted = False       # Ctrl-C while streaming: the loops end, then the demo stops

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- lifecycle -----------------------------------------------------------------------------
    def run(self) -> int:
        try:
            self._start()
            asyncio.run(self._stream())
            if not self.interrupted:
                return 0
            self.say("\ninterrupted: stopping what the demo started")
            return 130
        except KeyboardInterrupt:
            self.say("\ninterrupted: stopping what the demo started")
            return 130
        finally:
            self._stop()

    def _start(self) -> None:
        c = self.config
        if _answers(c.kafka_bootstrap):
            self.say(f"kafka: using the broker at {c.kafka_bootstrap}")
        else:
            if not KAFKA_SH.is_file():
                raise DemoError(f"no broker at {c.kafka_bootstrap} and no {KAFKA_SH} to start one")
            self.say("kafka: starting the local broker (Apache Kafka 4.0, KRaft; the first run downloads it)")
            self.started_kafka = True
            if subprocess.run(["bash", str(KAFKA_SH), "start"], stdout=self.out, stderr=subprocess.STDOUT).returncode:
                raise DemoError("the local Kafka broker did not start (see above)")
        bundle = self.prepare_bundle(c.cache, self.say)
        port = _free_port(c.metrics_port)
        env = {**os.environ, **{f"TAGSTREAM_{k.upper()}": v for k, v in DEMO_TOPICS.items()},
               "TAGSTREAM_KAFKA_BOOTSTRAP": c.kafka_bootstrap, "TAGSTREAM_BUNDLE": str(bundle),
               "TAGSTREAM_GROUP_ID": "tagstream-demo", "TAGSTREAM_METRICS_PORT": str(port),
               "TAGSTREAM_DATA_DIR": str(c.cache / "worker-state"), "TAGSTREAM_DRIFT_WINDOW_EVENTS": "100",
               "TAGSTREAM_DRIFT_WINDOW_SECONDS": "30", "TAGSTREAM_SESSION_TIMEOUT": "10",
               "TAGSTREAM_LOG_LEVEL": "info"}
        log = (c.cache / "worker.log").open("wb")
        self.worker = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], cwd=ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.say(f"worker: pid {self.worker.pid}, log {c.cache / 'worker.log'}")
        self.say(f"metrics: http://127.0.0.1:{port}/metrics")

    def _stop(self) -> None:
        if self.worker and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait()
        if self.worker:
            self.say(f"worker: stopped (pid {self.worker.pid})")
        if self.started_kafka:
            subprocess.run(["bash", str(KAFKA_SH), "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.say("kafka: stopped the broker the demo started")

    # -- the feed and the view -----------------------------------------------------------------
    async def _stream(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        c = self.config
        producer = AIOKafkaProducer(bootstrap_servers=c.kafka_bootstrap, acks="all")
        consumer = AIOKafkaConsumer(DEMO_TOPICS["enriched_topic"], DEMO_TOPICS["drift_topic"],
                                    bootstrap_servers=c.kafka_bootstrap, group_id=None, auto_offset_reset="latest")
        # Ctrl-C sets a flag the loops check. asyncio's own handling cancels the main task, and a
        # cancellation swallowed inside a Kafka client call left the demo running (seen once).
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self._interrupt)
        await self._wait_for_worker()
        if self.interrupted:
            return
        await producer.start()
        await consumer.start()
        try:
            feeder = asyncio.create_task(self._feed(producer))
            await self._watch(consumer, feeder)
        finally:
            await consumer.stop()
            await producer.stop()

    def _interrupt(self) -> None:
        self.interrupted = True

    async def _wait_for_worker(self) -> None:
        log = self.config.cache / "worker.log"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not self.interrupted:
            if self.worker.poll() is not None:
                raise DemoError(f"the worker exited with {self.worker.returncode}; see {log}")
            if b"Ready" in log.read_bytes():
                self.say("worker: ready")
                return
            await asyncio.sleep(0.3)
        if not self.interrupted:
            raise DemoError(f"the worker did not get ready in 120 s; see {log}")

    async def _feed(self, producer) -> None:
        c, sent = self.config, 0
        started = time.monotonic()
        while not c.events or sent < c.events:
            product = next(self.products)
            pid = f"demo-{self.run_id}-{sent:06d}"
            self.titles[pid] = product["title"]
            self.sent_at[pid] = time.time()
            value = orjson.dumps({"product_id": pid, "op": "upsert", "version": 1, "title": product["title"],
                                  "description": product["description"], "locale": product["locale"]})
            await producer.send(DEMO_TOPICS["input_topic"], key=pid.encode(), value=value)
            sent += 1
            delay = sent / c.rate - (time.monotonic() - started)
            if delay > 0:
                await asyncio.sleep(delay)
        await producer.flush()

    async def _watch(self, consumer, feeder: asyncio.Task) -> None:
        c = self.config
        started = last_status = time.monotonic()
        last_sample = float("-inf")                  # the first enriched product is shown at once
        window: deque[tuple[float, int]] = deque(maxlen=10)
        while not self.interrupted:
            batch = await consumer.getmany(timeout_ms=500)
            now = time.monotonic()
            for records in batch.values():
                for r in records:
                    if self._take(r, show=now - last_sample >= c.show_every):
                        last_sample = now
            if feeder.done() and feeder.exception():
                raise feeder.exception()
            if now - last_status >= 1.0:
                window.append((now, len(self.enriched)))
                self._status(window)
                last_status = now
            if c.events and len(self.enriched) >= c.events:
                break
            if c.events and feeder.done() and now - started > c.timeout:
                self.say(f"gave up waiting: {len(self.enriched)} of {c.events} enriched")
                break
        feeder.cancel()
        if not self.interrupted:
            self._summary(time.monotonic() - started)

    def _take(self, record, show: bool) -> bool:
        """Count an enriched record of this run (or keep a drift report); True if it was shown."""
        if record.value is None:
            return False
        value = orjson.loads(record.value)
        if record.topic == DEMO_TOPICS["drift_topic"]:
            self.last_drift = value
            return False
        pid = value.get("product_id", "")
        if pid not in self.sent_at or pid in self.enriched:
            return False
        self.enriched.add(pid)
        self.latencies.append(time.time() - self.sent_at[pid])
        if show:
            title = [t for t in value["tags"] if t["field"] == "title"]
            known = sum(t["in_taxonomy"] for t in title)
            self.say(f"  {highlight(self.titles[pid], title, self.colour)}")
            self.say(f"      {len(title)} tags, {known} in the taxonomy: "
                     + ", ".join(f"{t['type']}={t['tag']}" for t in title[:6]))
        return show

    def _status(self, window) -> None:
        rate = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]) if len(window) > 1 else 0.0
        lat = sorted(self.latencies)
        p50 = lat[len(lat) // 2] if lat else 0.0
        p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))] if lat else 0.0
        self.say(f"enriched {len(self.enriched)}/{len(self.sent_at)} sent | {rate:5.1f} events/s | "
                 f"latency p50 {p50 * 1000:4.0f} ms, p95 {p95 * 1000:4.0f} ms" + self._drift_line())

    def _drift_line(self) -> str:
        if not self.last_drift:
            return ""
        m = self.last_drift["metrics"]
        flag = "ALERT " + ",".join(self.last_drift["alerts"]) if self.last_drift["alert"] else "ok"
        return (f" | drift {flag} (type PSI {m.get('tag_type_psi', 0):.3f}, "
                f"out-of-taxonomy {m['out_of_taxonomy_rate']:.1%})")

    def _summary(self, seconds: float) -> None:
        lat = sorted(self.latencies)
        self.say(f"done: enriched {len(self.enriched)}/{len(self.sent_at)} in {seconds:.0f} s"
                 + (f", latency p50 {lat[len(lat) // 2] * 1000:.0f} ms" if lat else "")
                 + (f"; last drift window: {self._drift_line()[3:]}" if self.last_drift else ""))
