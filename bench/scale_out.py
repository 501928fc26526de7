"""Scale-out through real Kafka: two workers with one inference thread each against one worker
with one thread, draining the same backlog on a 4-partition topic, in one run:

    python bench/scale_out.py [--bundle DIR] [--events 3000] [--batch 64] [--variant int8] [--quick] [--preload]

Per mode (own topics, group and state), the backlog is bench/stream.py's products. The workers
start together in one group on the empty input topic; once each is ready and holds its share of
the partitions (from faust's assignment tables in their logs), the backlog is produced at once
(far faster than it drains). Not pre-loaded by default on purpose: with the broker's
group.initial.rebalance.delay.ms=0 the first worker to join takes all four partitions, and the
second waits up to a heartbeat (3 s) plus a recovery for the rebalance, long enough to drain a
small topic alone. --preload produces the backlog before the workers start instead.

Throughput, from the outputs' broker timestamps: the window, from the later worker's first output
after its last assignment (an output counts for the worker then holding its partition) to the
last output, which the ratio uses; first to last output; wall time from starting the workers.
Every (product id, version) sent must come out on the enriched (or dead-letter) topic: any lost,
or a split other than 2 + 2, fails the run (exit 1); duplicates are reported. CPU use of the
workers, the broker and the rest comes from /proc. The one-worker mode runs first. Writes
scale_out.json to --out (default bench/results; with --quick, bench/.cache/quick-results).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.broker import broker_pid, ensure_broker  # noqa: E402
from bench.common import (TICKS, Counters, batch_stats, bundle_or_exit, machine, process_cpu,  # noqa: E402
                          worker_options)
from bench.harness import Topics, WorkerProcess, consume, free_port, group_lag, produce  # noqa: E402
from bench.restart_gap import create_topics, end_offsets  # noqa: E402
from bench.stream import product_events  # noqa: E402
from model.synth import DEMO_TAXONOMY, generate, load_taxonomy_json  # noqa: E402

SHARED_BUNDLE = ROOT / "bench" / ".cache" / "minilm-bundle"
PARTITIONS = 4
TARGET_RATIO = 1.6        # the target, on a 2-core machine whose broker shares the cores
READY = re.compile(r"\[\^\w*Worker\]: Ready|Recovery\]: Worker ready")
_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


# -- where the CPU went --------------------------------------------------------------------------------

def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far: the machine's busy and stolen time (all cores), and each named process."""
    user, nice, system, _, _, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return {"machine_busy": (user + nice + system + irq + softirq) / TICKS, "machine_steal": steal / TICKS,
            **{name: process_cpu(pid) or 0.0 for name, pid in pids.items()}}


def cpu_use(samples: list[tuple[float, dict]], start: float, end: float) -> dict:
    """Cores used on average between two moments (Unix seconds): the machine, each process, the rest."""
    inside = [s for s in samples if start <= s[0] <= end + 0.5] or samples[-1:]
    (t0, a), (t1, b) = inside[0], inside[-1]
    if t1 - t0 < 1:
        return {"seconds": round(t1 - t0, 2)}
    cores = {k: round((b[k] - a[k]) / (t1 - t0), 2) for k in b}
    named = sum(v for k, v in cores.items() if not k.startswith("machine_"))
    return {"seconds": round(t1 - t0, 1), "cores_used": cores,
            "other_processes_cores": round(cores["machine_busy"] - named, 2)}


def top_snapshot() -> list[str]:
    """`top -b -n1`: its summary and the busiest processes, to name what else ran."""
    try:
        return subprocess.run(["top", "-b", "-n1", "-w", "160"], capture_output=True, text=True,
                              timeout=10).stdout.splitlines()[:14]
    except (OSError, subprocess.TimeoutExpired):
        return []


# -- draining and reading back ------------------------------------------------------------------------

async def _drain(bootstrap: str, topics: Topics, count: int, workers: list[WorkerProcess],
                 pids: dict[str, int], timeout: float) -> tuple[bool, list[tuple[float, dict]], list[str]]:
    """Poll the output topics' end offsets (one cheap client) until ``count`` records are out, a
    worker exits or time runs out; sample CPU on each poll and run top once, halfway."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    parts = [TopicPartition(topics.enriched, p) for p in range(PARTITIONS)] + [TopicPartition(topics.dlq, 0)]
    samples: list[tuple[float, dict]] = []
    top: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            samples.append((time.time(), cpu_snapshot(pids)))
            done = sum((await consumer.end_offsets(parts)).values())
            if done >= count:
                return True, samples, top
            if not top and done >= count // 2:
                top = top_snapshot()
            gone = [w for w in workers if w.proc.poll() is not None]
            if gone or time.monotonic() > deadline:
                why = f"a worker exited ({gone[0].proc.returncode})" if gone else f"not done in {timeout:.0f} s"
                print(f"{done} of {count} outputs; {why}:\n{(gone or workers)[0].log()[-3000:]}", file=sys.stderr)
                return False, samples, top
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


def wait_committed(bootstrap: str, topics: Topics, timeout: float = 60) -> bool:
    """Until the group has committed all its input: nothing is in flight, so no output is still to come."""
    deadline = time.monotonic() + timeout
    while any(group_lag(bootstrap, topics.group, topics.input, PARTITIONS).values()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def read_outputs(bootstrap: str, topics: Topics) -> tuple[list, list]:
    """Every record on the enriched and the dead-letter topic (up to their end offsets now)."""
    enriched_n = sum(end_offsets(bootstrap, topics.enriched, PARTITIONS).values())
    dlq_n = sum(end_offsets(bootstrap, topics.dlq, 1).values())
    enriched = consume(bootstrap, topics.enriched, count=enriched_n, timeout=120) if enriched_n else []
    dead = consume(bootstrap, topics.dlq, count=dlq_n, timeout=60) if dlq_n else []
    return enriched, dead


# -- what the records and logs say --------------------------------------------------------------------

def assignments(log: str, topic: str) -> list[tuple[float, set[int]]]:
    """(Unix time, partitions of ``topic``) for every assignment a worker logged, in order."""
    lines, out = log.splitlines(), []
    for i, line in enumerate(lines):
        if "Setting newly assigned partitions" not in line or (at := _at(line)) is None:
            continue
        partitions: set[int] = set()
        for row in lines[i + 1:]:
            if row.startswith("["):                      # the next log line: the table is over
                break
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            if len(cells) == 2 and cells[0] == topic:
                for part in cells[1].strip("{}").split(","):
                    low, _, high = part.strip().partition("-")
                    partitions.update(range(int(low), int(high or low) + 1))
        out.append((at, partitions))
    return out


def delivery(sent: set[tuple[str, int]], enriched: list, dead: list) -> dict:
    """Sent, enriched, dead-lettered, duplicated and lost (product id, version) pairs."""
    seen: Counter = Counter()
    for r in enriched:
        if r.value is not None:
            value = orjson.loads(r.value)
            seen[(value["product_id"], value["version"])] += 1
    for r in dead:
        record = orjson.loads(r.value)
        try:
            value = orjson.loads(base64.b64decode(record["value_b64"]))
            seen[(value["product_id"], value["version"])] += 1
        except (TypeError, ValueError, KeyError):
            seen[(base64.b64decode(record["key_b64"] or b"").decode(errors="replace"), None)] += 1
    lost = sorted(sent - seen.keys())
    return {"sent": len(sent), "enriched_records": len(enriched), "dead_lettered": len(dead),
            "unique_outputs": len(seen), "duplicates": sum(c - 1 for c in seen.values()),
            "duplicated_pairs": sum(1 for c in seen.values() if c > 1), "lost": len(lost),
            "lost_examples": [list(p) for p in lost[:5]], "unexpected": len(seen.keys() - sent)}


def throughput(stamps: list[tuple[int, int]], started: float, owners: dict[str, tuple[float, set[int]]]) -> dict:
    """Events/s from (output partition, broker timestamp ms): first to last output; from both
    workers assigned to the last output (an output counts for the worker holding its partition
    after that worker's last rebalance); and wall time from the workers' start."""
    times = sorted(ts for _, ts in stamps)
    first, last = times[0], times[-1]
    workers, firsts = {}, []
    for name, (assigned_at, partitions) in owners.items():
        mine = sorted(ts for p, ts in stamps if p in partitions and ts >= assigned_at * 1000)
        firsts.append(mine[0] if mine else None)
        workers[name] = {"partitions": sorted(partitions), "assigned_after_start_s": round(assigned_at - started, 2),
                         "outputs": len(mine), "first_output_after_start_s": None}
        if mine:
            workers[name].update(first_output_after_start_s=round(mine[0] / 1000 - started, 2),
                                 last_output_after_start_s=round(mine[-1] / 1000 - started, 2),
                                 events_per_second=round((len(mine) - 1) / max((mine[-1] - mine[0]) / 1000, 1e-3), 1))
    complete = bool(firsts) and None not in firsts
    start = max(firsts) if complete else first
    window = [ts for ts in times if ts >= start]
    return {"outputs": len(times),
            "first_to_last_events_per_second": round((len(times) - 1) / max((last - first) / 1000, 1e-3), 1),
            "window": "both workers assigned -> last output" if complete else "first -> last output (no split seen)",
            "window_start_after_start_s": round(start / 1000 - started, 2),
            "window_seconds": round((last - start) / 1000, 2), "window_outputs": len(window),
            "window_events_per_second": round((len(window) - 1) / max((last - start) / 1000, 1e-3), 1),
            "first_output_after_start_s": round(first / 1000 - started, 2),
            "last_output_after_start_s": round(last / 1000 - started, 2),
            "wall_events_per_second": round(len(times) / max(last / 1000 - started, 1e-3), 1),
            "workers": workers}


# -- one mode -----------------------------------------------------------------------------------------

def _at(line: str) -> float | None:
    """Unix time of a faust log line (the worker's clock is this machine's)."""
    m = _LOG_TIME.match(line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if m else None


def log_times(log: str, pattern: re.Pattern) -> list[float]:
    return [at for line in log.splitlines() if pattern.search(line) and (at := _at(line)) is not None]


def wait_assigned(workers: list[WorkerProcess], topic: str, timeout: float = 180) -> None:
    """Until every worker holds its even share of the input partitions and has recovered since
    its last assignment (faust logs 'Worker ready' after each recovery), from their logs."""
    deadline = time.monotonic() + timeout
    while True:
        logs = [w.log() for w in workers]
        latest = [(assignments(log, topic) or [(time.time(), set())])[-1] for log in logs]
        held = [partitions for _, partitions in latest]
        ready = all(any(t >= at for t in log_times(log, READY)) for log, (at, _) in zip(logs, latest))
        if ready and all(len(h) == PARTITIONS // len(workers) for h in held) \
                and set().union(*held) == set(range(PARTITIONS)):
            return
        gone = [w for w in workers if w.proc.poll() is not None]
        if gone or time.monotonic() > deadline:
            why = f"a worker exited ({gone[0].proc.returncode})" if gone else f"not assigned in {timeout:.0f} s"
            raise SystemExit(f"{why}; partitions held {held}:\n{(gone or workers)[-1].log()[-3000:]}")
        time.sleep(0.3)


def run_mode(bootstrap: str, bundle: Path, count: int, events: list, sent: set, args, work: Path) -> dict:
    """``count`` workers in one fresh group drain the events, read back and checked. By default the
    workers start on the empty topic and the events are produced at once when each holds its
    partitions; with --preload, before the workers start (the first to join then drains alone
    until the group has rebalanced, and the window leaves that out)."""
    topics = Topics()
    create_topics(bootstrap, topics)
    load_before = [round(v, 2) for v in os.getloadavg()]
    produced_at = time.time()
    placed = produce(bootstrap, topics.input, events) if args.preload else []
    produce_seconds = time.time() - produced_at
    ports = [free_port() for _ in range(count)]
    started = time.time()
    workers = [WorkerProcess(bootstrap, topics, bundle, work, max_batch=args.batch, max_wait=args.wait, pipeline="true",
                             threads=args.threads, lanes=1, variant=args.variant, metrics_port=port)
               for port in ports]      # a one-thread worker: one lane of one thread
    pids = {f"worker-{i}": w.proc.pid for i, w in enumerate(workers)}
    pids.update({"broker": pid} if (pid := broker_pid()) else {}, bench=os.getpid())
    try:
        if not args.preload:
            wait_assigned(workers, topics.input)
            produced_at = time.time()
            placed = produce(bootstrap, topics.input, events)
            produce_seconds = time.time() - produced_at
        drained, samples, top = asyncio.run(_drain(bootstrap, topics, len(events), workers, pids,
                                                   120 + len(events) / 2))
        committed = drained and wait_committed(bootstrap, topics)
        counters = [Counters(port).delta() for port in ports]
    finally:
        for w in workers:
            w.stop()
    enriched, dead = read_outputs(bootstrap, topics)
    input_partition = {key: p for (key, _), (p, _) in zip(events, placed)}
    last_output = max((r.timestamp / 1000 for r in enriched), default=samples[-1][0])
    owners, rebalances = {}, {}
    for i, w in enumerate(workers):      # the assignment each worker held at the last output
        history = [a for a in assignments(w.log(), topics.input) if a[0] <= last_output]
        owners[f"worker-{i}"], rebalances[f"worker-{i}"] = (history or [(started, set())])[-1], len(history)
    result = throughput([(r.partition, r.timestamp) for r in enriched], started, owners) if enriched else \
        {"workers": {name: {} for name in owners}}
    for i, name in enumerate(owners):
        result["workers"][name].update(
            assignments_before_last_output=rebalances[name],
            consumed=int(counters[i].get("tagstream_events_consumed_total", 0)), batches=batch_stats(counters[i]),
            input_events_on_partitions=sum(1 for p in input_partition.values() if p in owners[name][1]))
    split = [sorted(p) for _, p in owners.values()]
    result.update(
        workers_started=count, threads_per_worker=args.threads, load_average_before=load_before,
        preloaded=args.preload, events_produced_after_start_s=round(produced_at - started, 2),
        produce_seconds=round(produce_seconds, 2),
        backlog_events_per_second=round(len(enriched) / max(last_output - produced_at, 1e-3), 1),
        drained=drained, committed=committed, delivery=delivery(sent, enriched, dead), partition_split=split,
        partition_split_ok=sorted(p for s in split for p in s) == list(range(PARTITIONS))
        and all(len(s) == PARTITIONS // count for s in split),
        output_partition_is_input_partition=all(input_partition.get(r.key) == r.partition for r in enriched),
        cpu_window=cpu_use(samples, started + result.get("window_start_after_start_s", 0), last_output),
        cpu_drain=cpu_use(samples, produced_at, last_output), top_midway=top,
        worker_logs=[str(w.log_path) for w in workers])
    return result


def line(name: str, r: dict) -> str:
    d = r["delivery"]
    return (f"{name:<24}{r.get('window_events_per_second', 0):>9.1f}{r.get('first_to_last_events_per_second', 0):>12.1f}"
            f"{r.get('wall_events_per_second', 0):>9.1f}   {r['partition_split']}  lost {d['lost']}, "
            f"duplicates {d['duplicates']}, dead-lettered {d['dead_lettered']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=str(SHARED_BUNDLE), help="default: the bundle bench/inference.py built")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 events, results to the quick folder")
    parser.add_argument("--preload", action="store_true",
                        help="produce the events before the workers start (default: once they hold their partitions)")
    worker_options(parser)
    parser.set_defaults(threads=1, out=None)
    args = parser.parse_args()
    bundle = bundle_or_exit(args.bundle)
    if args.quick and args.events == parser.get_default("events"):
        args.events = 300
    out = Path(args.out or ROOT / "bench" / (".cache/quick-results" if args.quick else "results"))
    if args.events < 2 * args.batch:
        sys.exit(f"--events must be at least two batches ({2 * args.batch}), got {args.events}")

    products = generate(load_taxonomy_json(DEMO_TAXONOMY), args.events, seed=101, lang="en", products=True)
    events = product_events(products, 1)
    sent = {(p["id"], 1) for p in products}
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name")), None)
    host = {**machine(args.threads), "lscpu_model_name": model_name,
            "load_average_before": [round(v, 2) for v in os.getloadavg()]}
    bootstrap = ensure_broker()
    work = Path(tempfile.mkdtemp(prefix="tagstream-scale-out-"))
    modes = {}
    for name, count in (("one_worker", 1), ("two_workers", 2)):
        modes[name] = run_mode(bootstrap, bundle, count, events, sent, args, work)
    one, two = modes["one_worker"], modes["two_workers"]
    ratio = two.get("window_events_per_second", 0) / max(one.get("window_events_per_second", 0), 1e-9)
    wall_ratio = two.get("wall_events_per_second", 0) / max(one.get("wall_events_per_second", 0), 1e-9)
    lost = sum(m["delivery"]["lost"] for m in modes.values())
    split_ok = all(m["partition_split_ok"] for m in modes.values())
    result = {
        "benchmark": "scale_out", "machine": host, "quick": args.quick,
        "bundle": str(bundle), "variant": args.variant, "events": args.events, "batch": args.batch,
        "max_wait_s": args.wait, "threads_per_worker": args.threads, "partitions": PARTITIONS, "modes": modes,
        "ratio_two_to_one": round(ratio, 2), "ratio_two_to_one_wall": round(wall_ratio, 2), "lost": lost,
        "duplicates": sum(m["delivery"]["duplicates"] for m in modes.values()), "partition_split_ok": split_ok,
        # The target: two 1-thread workers at least 1.6x one, over the window both are assigned.
        "target_ratio": TARGET_RATIO, "target_met": ratio >= TARGET_RATIO,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale_out.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"{args.events} events, 4 partitions, {args.threads} thread(s) per worker, batch {args.batch}")
    print(f"{'events/s':<24}{'window':>9}{'first-last':>12}{'wall':>9}   partitions")
    print(line("one worker", one))
    print(line("two workers", two))
    print(f"two / one: {ratio:.2f}x in the window (wall {wall_ratio:.2f}x); target >= {TARGET_RATIO}x: "
          f"{'met' if ratio >= TARGET_RATIO else 'NOT met'}; CPU cores in the two-worker window "
          f"{two['cpu_window'].get('cores_used')}")
    print(f"wrote {out / 'scale_out.json'}")
    if lost or not split_ok:
        sys.exit(f"scale_out: {lost} lost; partition split {'ok' if split_ok else 'NOT 2 + 2'}")


if __name__ == "__main__":
    main()
