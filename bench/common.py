"""Helpers the streaming benchmarks share: the machine's description, quantiles, producing at a
rate, waiting for outputs, and the worker's Prometheus counters between two moments."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import scrape  # noqa: E402


def machine(threads: int | None = None, providers: Sequence[str] | None = None) -> dict:
    """What the numbers were measured on: CPU model, cores, memory, onnxruntime, load."""
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory_gib, "platform": platform.platform(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "providers": list(providers) if providers else None, "threads": threads,
            "load_average_1m": round(os.getloadavg()[0], 2)}


def percentiles(values_ms: Iterable[float]) -> dict:
    a = np.asarray(list(values_ms), dtype=float)
    if a.size == 0:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    return {f"p{q}_ms": round(float(np.percentile(a, q)), 1) for q in (50, 95, 99)}


async def _produce(bootstrap: str, topic: str, events: Sequence[tuple[bytes, bytes]],
                   rate: float | None) -> dict[bytes, int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    sent_at: dict[bytes, int] = {}
    try:
        start, futures = time.monotonic(), []
        for i, (key, value) in enumerate(events):
            if rate:
                delay = i / rate - (time.monotonic() - start)
                if delay > 0:
                    await asyncio.sleep(delay)
            timestamp = int(time.time() * 1000)
            sent_at[key] = timestamp
            futures.append(await producer.send(topic, value=value, key=key, timestamp_ms=timestamp))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent_at


def produce(bootstrap: str, topic: str, events: Sequence[tuple[bytes, bytes]],
            rate: float | None = None) -> dict[bytes, int]:
    """Send the events (at ``rate`` per second, else as fast as possible); key -> send time in ms
    (the last send of a key when a key repeats)."""
    return asyncio.run(_produce(bootstrap, topic, events, rate))


async def _end_offsets(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        return sum((await consumer.end_offsets(parts)).values())
    finally:
        await consumer.stop()


def record_count(bootstrap: str, topic: str, partitions: int = 4) -> int:
    """Records written to the topic so far: the sum of its partitions' end offsets."""
    return asyncio.run(_end_offsets(bootstrap, topic, partitions))


async def _wait_for_outputs(bootstrap: str, topic: str, partitions: int, count: int, timeout: float) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        deadline = time.monotonic() + timeout
        while sum((await consumer.end_offsets(parts)).values()) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"{topic}: fewer than {count} records after {timeout:.0f} s")
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


def wait_for_outputs(bootstrap: str, topic: str, partitions: int, count: int, timeout: float) -> None:
    """Poll the topic's end offsets (cheap) rather than consume alongside the worker: a consumer
    in this process would take CPU from the worker being measured."""
    asyncio.run(_wait_for_outputs(bootstrap, topic, partitions, count, timeout))


async def _read_all(bootstrap: str, topic: str, count: int, timeout: float) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    seen: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"{topic}: read {len(seen)} of {count} records in {timeout:.0f} s")
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                seen.extend(records)
    finally:
        await consumer.stop()
    return seen


def read_all(bootstrap: str, topic: str, count: int, timeout: float = 120) -> list:
    """The topic's first ``count`` records (all partitions)."""
    return asyncio.run(_read_all(bootstrap, topic, count, timeout))


def events_per_second(records: Sequence, done_at_first: int = 1) -> float:
    """Throughput between the first and the last output record's timestamps, not counting the
    ``done_at_first`` records processed by the time the first is published (on a pre-loaded topic,
    the first full batch of each lane: they were made before the window opened)."""
    stamps = sorted(r.timestamp for r in records)
    return (len(stamps) - done_at_first) / max((stamps[-1] - stamps[0]) / 1000, 1e-3)


class Counters:
    """A worker's Prometheus samples; ``delta()`` is what changed since the last call (the first
    call: since the worker started, every counter starting at zero)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.last: dict[str, float] = {}

    def delta(self) -> dict[str, float]:
        now = self._scrape()
        out = {k: v - self.last.get(k, 0.0) for k, v in now.items()}
        self.last = now
        return out


    def _scrape(self) -> dict[str, float]:
        deadline = time.monotonic() + 30
        while True:
            try:
                return scrape(self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)


def batch_stats(delta: dict[str, float]) -> dict:
    """Batches, mean batch size and mean batch enrich time (model included) over a phase."""
    batches = delta.get("tagstream_batch_size_events_count", 0.0)
    events = delta.get("tagstream_batch_size_events_sum", 0.0)
    seconds = delta.get("tagstream_inference_seconds_sum", 0.0)
    return {"batches": int(batches), "mean_batch_events": round(events / batches, 1) if batches else None,
            "mean_batch_seconds": round(seconds / batches, 4) if batches else None,
            "model_products": int(delta.get("tagstream_model_products_total", 0.0)),
            "skipped_unchanged": int(delta.get('tagstream_events_skipped_total{reason="unchanged"}', 0.0))}


def py_spy(pid: int, seconds: float, out: Path, rate: int = 100) -> subprocess.Popen:
    """Start sampling a process (and its threads) in raw collapsed-stack format."""
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        raise SystemExit(f"{exe}: py-spy is not installed (pip install py-spy, or the dev extras)")
    return subprocess.Popen([str(exe), "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
                             "--rate", str(rate), "--format", "raw", "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def worker_options(parser) -> None:
    """The options the worker benchmarks share: micro-batch, threads, variant, results folder."""
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--wait", type=float, default=0.05, help="micro-batch wait, seconds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))


def bundle_or_exit(path: str) -> Path:
    bundle = Path(path)
    if not (bundle / "manifest.json").is_file():
        sys.exit(f"{bundle}: no bundle; run bench/inference.py first (it leaves one there) or pass --bundle")
    return bundle


TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process (its own and its waited children's)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return sum(int(v) for v in fields[11:15]) / TICKS    # utime, stime, cutime, cstime


def _thread_times(pid: int) -> dict[int, tuple[float, float]]:
    """Per thread of a process (by thread id): seconds on a CPU and seconds runnable but waiting
    for one, from /proc (schedstat)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            running, waiting = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[:2]
        except (OSError, ValueError):     # the thread ended
            continue
        out[int(tid)] = (int(running) / 1e9, int(waiting) / 1e9)
    return out


class CpuClock:
    """CPU used from now until ``cores()``, in cores (CPU seconds per second), by a process's main
    thread (the worker's event loop), its busy threads (the inference lanes) and the rest of its
    threads, and by the broker. A busy thread's time splits into running, waiting for a CPU
    (runnable: the cores are taken) and blocked (on a lock, the GIL, I/O, or idle)."""

    BUSY = 0.3    # cores: a thread at least this busy is shown on its own

    def __init__(self, pid: int, broker_pid: int | None, main: str = "worker_event_loop") -> None:
        self.pid, self.broker_pid, self.main = pid, broker_pid, main
        self.start = time.monotonic()
        self.threads = _thread_times(pid)
        self.broker = self._broker()

    def _broker(self) -> float | None:
        return process_cpu(self.broker_pid) if self.broker_pid else None

    def cores(self) -> dict:
        elapsed = time.monotonic() - self.start
        now, broker = _thread_times(self.pid), self._broker()
        used = {tid: ((run - self.threads.get(tid, (0.0, 0.0))[0]) / elapsed,
                      (wait - self.threads.get(tid, (0.0, 0.0))[1]) / elapsed) for tid, (run, wait) in now.items()}
        main = used.pop(self.pid, (0.0, 0.0))[0]
        busy = sorted((t for t in used.values() if t[0] >= self.BUSY), reverse=True)
        return {self.main: round(main, 3),
                "busy_threads": [{"running": round(run, 3), "waiting_for_cpu": round(wait, 3),
                                  "blocked": round(max(0.0, 1 - run - wait), 3)} for run, wait in busy],
                "other_threads": round(sum(run for run, _ in used.values() if run < self.BUSY), 3),
                "broker": round((broker - self.broker) / elapsed, 3) if None not in (broker, self.broker) else None,
                "seconds": round(elapsed, 2)}
