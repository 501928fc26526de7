"""Crash recovery through real Kafka: the gap between restarting a SIGKILLed worker and its first
new output, with dynamic and with static group membership, in one run:

    python bench/restart_gap.py [--bundle DIR] [--repeats 3] [--session-timeout 30] [--events 64]

Per cycle (its own topics, group and data directory): a worker enriches a first stream; once its
offsets are committed, its process group is SIGKILLed and the same worker (same settings, same
data directory) is started again at once, and new events are produced right after. The gap is
the first new enriched record's broker timestamp minus the moment of the restart. With dynamic
membership (TAGSTREAM_INSTANCE_ID='') the group waits out the dead member's session timeout; with
static membership (KIP-345, a fixed instance id) the restarted worker takes its member's place at
once. One static cycle first is a warm-up (page cache, the broker's first topics) and is not
counted; then the two modes alternate. Writes bench/results/restart_gap.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bundle_or_exit, machine, produce, worker_options  # noqa: E402
from model.synth import DEMO_TAXONOMY, generate, load_taxonomy_json  # noqa: E402
from stream.service.settings import Settings  # noqa: E402
from stream.service.clients import ensure_topics  # noqa: E402
from bench.broker import ensure_broker  # noqa: E402
from bench.harness import Topics, WorkerProcess, group_lag  # noqa: E402

SHARED_BUNDLE = ROOT / "bench" / ".cache" / "minilm-bundle"
PARTITIONS = 4
TARGET_MS = 5000          # the target for the static gap (from about 31 s)
MILESTONES = {"joined_ms": re.compile(r"Joined group"), "recovered_ms": re.compile(r"Restore complete!"),
              "ready_ms": re.compile(r"\[\^\w*Worker\]: Ready")}
_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


# -- helpers shared with bench/state_restart.py ------------------------------------------------------

def worker_settings(topics: Topics, data_dir: Path, args, **extra) -> dict:
    """What both lives of one worker run with: the restart must differ from the first start in nothing."""
    return {"partitions": PARTITIONS, "max_batch": args.batch, "max_wait": args.wait, "threads": args.threads,
            "variant": args.variant, "data_dir": str(data_dir), **extra}


def create_topics(bootstrap: str, topics: Topics) -> None:
    settings = Settings.from_env({}, kafka_bootstrap=bootstrap, input_topic=topics.input,
                                 enriched_topic=topics.enriched, dlq_topic=topics.dlq, partitions=PARTITIONS)
    asyncio.run(ensure_topics(settings))


def product_events(products: list[dict], version: int, prefix: str) -> list[tuple[bytes, bytes]]:
    return [(f"{prefix}{p['id']}".encode(), orjson.dumps({"product_id": f"{prefix}{p['id']}", "op": "upsert",
                                                         "version": version, "title": p["title"],
                                                         "description": p["description"]}))
            for p in products]


async def _end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


def end_offsets(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
    return asyncio.run(_end_offsets(bootstrap, topic, partitions))


def wait_committed(bootstrap: str, topics: Topics, timeout: float = 120) -> None:
    """Until the group has committed everything on the input topic: a kill after that re-delivers
    nothing, so what the restart produces is the new events only."""
    deadline = time.monotonic() + timeout
    while any(group_lag(bootstrap, topics.group, topics.input, PARTITIONS).values()):
        if time.monotonic() > deadline:
            raise SystemExit(f"group {topics.group}: offsets not committed after {timeout:.0f} s")
        time.sleep(0.5)


def wait_for_keys(bootstrap: str, topic: str, start: dict[int, int], keys: set[bytes], worker: WorkerProcess,
                  timeout: float) -> list:
    """Records of ``topic`` from ``start`` on, once every key in ``keys`` has one. Polls end offsets
    (cheap, one client) while the worker works, then reads; the worker must stay alive meanwhile."""
    return asyncio.run(_wait_for_keys(bootstrap, topic, start, keys, worker, timeout))


async def _wait_for_keys(bootstrap: str, topic: str, start: dict[int, int], keys: set[bytes],
                         worker: WorkerProcess, timeout: float) -> list:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    deadline = time.monotonic() + timeout
    try:
        while True:
            ends = {tp.partition: offset for tp, offset in (await consumer.end_offsets(parts)).items()}
            if sum(ends.values()) - sum(start.values()) >= len(keys):
                records = await _read_from(bootstrap, topic, start, ends)
                if keys <= {r.key for r in records}:
                    return records
            if worker.proc.poll() is not None:
                raise SystemExit(f"the worker exited with {worker.proc.returncode}:\n{worker.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{topic}: not every expected key enriched within {timeout:.0f} s\n"
                                 f"{worker.log()[-4000:]}")
            await asyncio.sleep(0.25)
    finally:
        await consumer.stop()


async def _read_from(bootstrap: str, topic: str, start: dict[int, int], ends: dict[int, int]) -> list:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    records: list = []
    try:
        parts = [TopicPartition(topic, p) for p in start if ends[p] > start[p]]
        if not parts:
            return records
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, start[tp.partition])
        deadline = time.monotonic() + 60
        while [tp for tp in parts if await consumer.position(tp) < ends[tp.partition]]:
            if time.monotonic() > deadline:
                raise SystemExit(f"{topic}: could not read up to the end offsets {ends}")
            for batch in (await consumer.getmany(*parts, timeout_ms=500)).values():
                records.extend(r for r in batch if r.offset < ends[r.partition])
    finally:
        await consumer.stop()
    return records


def milestones(log: str, since: float) -> dict[str, float | None]:
    """Milliseconds from ``since`` (Unix time) to the first log line of each milestone: joining the
    group, the end of table recovery, faust's Ready."""
    out: dict[str, float | None] = dict.fromkeys(MILESTONES)
    for line in log.splitlines():
        for name, pattern in MILESTONES.items():
            if out[name] is None and pattern.search(line) and (m := _LOG_TIME.match(line)):
                at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()  # worker's local time
                out[name] = round((at - since) * 1000)
    return out


def changelog_replay(log: str) -> int | None:
    """Changelog records the worker's table recovery had to read, from faust's two tables logged
    at recovery: the highwater (last offset) and where reading starts (the last offset already in
    the store, -1 for none) per changelog partition. None when the log has no such tables."""
    tables: list[dict[int, int]] = []
    for title in ("Highwater for active changelog partitions", "active offsets at start of reading"):
        at = log.find(title)
        if at < 0:
            return None
        rows: dict[int, int] = {}
        for line in log[at:].splitlines()[1:]:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("["):             # the next log line: the table is over
                break
            if len(cells) == 3 and cells[1].isdigit():
                rows[int(cells[1])] = int(cells[2])
        tables.append(rows)
    highwater, start = tables
    return sum(max(0, hw - start.get(p, -1)) for p, hw in highwater.items())


def summary(values: list[float]) -> dict:
    if not values:
        return {"p50_ms": None, "mean_ms": None, "min_ms": None, "max_ms": None}
    return {"p50_ms": round(statistics.median(values)), "mean_ms": round(statistics.fmean(values)),
            "min_ms": round(min(values)), "max_ms": round(max(values))}


# -- one cycle ----------------------------------------------------------------------------------------

def cycle(bootstrap: str, bundle: Path, mode: str, first: list, new: list, args, work: Path) -> dict:
    """Start, enrich ``first``, SIGKILL, restart at once, produce ``new``: the gap and where it went."""
    topics = Topics()
    create_topics(bootstrap, topics)
    instance_id = f"{topics.group}-worker-0" if mode == "static" else ""
    settings = worker_settings(topics, work / topics.group, args, session_timeout=args.session_timeout,
                               instance_id=instance_id, store=args.store)
    worker = WorkerProcess(bootstrap, topics, bundle, work, **settings)
    try:
        worker.wait_ready(180)
        produce(bootstrap, topics.input, first)
        wait_for_keys(bootstrap, topics.enriched, dict.fromkeys(range(PARTITIONS), 0), {k for k, _ in first}, worker,
                      300)
        wait_committed(bootstrap, topics)
        start = end_offsets(bootstrap, topics.enriched)
        worker.kill()                                   # SIGKILL to the process group: no LeaveGroup, no flush
        restarted_at = time.time()
        worker = WorkerProcess(bootstrap, topics, bundle, work, **settings)
        produce(bootstrap, topics.input, new)
        new_keys = {k for k, _ in new}
        records = wait_for_keys(bootstrap, topics.enriched, start, new_keys, worker, 3 * args.session_timeout + 300)
    finally:
        worker.stop()
    stamps = sorted(r.timestamp for r in records if r.key in new_keys)
    outputs = [(r.key, orjson.loads(r.value)["version"]) for r in records if r.value is not None]
    return {"mode": mode, "instance_id": instance_id,
            "gap_ms": round(stamps[0] - restarted_at * 1000),
            "all_new_ms": round(stamps[-1] - restarted_at * 1000),
            **milestones(worker.log(), restarted_at), "replayed_records": changelog_replay(worker.log()),
            "redelivered": sum(1 for key, _ in outputs if key not in new_keys),
            "duplicated": len(outputs) - len(set(outputs))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=str(SHARED_BUNDLE), help="default: the bundle bench/inference.py built")
    parser.add_argument("--repeats", type=int, default=3, help="measured cycles per mode")
    parser.add_argument("--warmup", type=int, default=1, help="static cycles first, not counted")
    parser.add_argument("--session-timeout", type=float, default=30.0, help="seconds (the worker's default)")
    parser.add_argument("--events", type=int, default=64, help="events of the first stream, before the kill")
    parser.add_argument("--new-events", type=int, default=16, help="events produced right after the restart")
    parser.add_argument("--store", default="rocksdb", choices=("rocksdb", "memory"))
    worker_options(parser)
    args = parser.parse_args()
    bundle = bundle_or_exit(args.bundle)
    if args.repeats < 1 or args.events < 1 or args.new_events < 1:
        sys.exit("--repeats, --events and --new-events must be at least 1")

    products = generate(load_taxonomy_json(DEMO_TAXONOMY), args.events + args.new_events, seed=301, lang="en",
                        products=True)
    first = product_events(products[:args.events], 1, "first-")
    new = product_events(products[args.events:], 1, "new-")
    bootstrap = ensure_broker()
    work = Path(tempfile.mkdtemp(prefix="tagstream-restart-gap-"))
    warmups = []
    for _ in range(args.warmup):
        warmups.append(cycle(bootstrap, bundle, "static", first, new, args, work))
        print(f"warm-up (static): gap {warmups[-1]['gap_ms']:.0f} ms", file=sys.stderr)
    cycles: dict[str, list[dict]] = {"dynamic": [], "static": []}
    for i in range(args.repeats):
        for mode in cycles:
            cycles[mode].append(cycle(bootstrap, bundle, mode, first, new, args, work))
            c = cycles[mode][-1]
            print(f"{mode} {i + 1}/{args.repeats}: gap {c['gap_ms']:.0f} ms (joined {c['joined_ms']} ms, "
                  f"ready {c['ready_ms']} ms after the restart)", file=sys.stderr)

    modes = {mode: {"instance_id": "" if mode == "dynamic" else "<group>-worker-0", "cycles": runs,
                    "gap": summary([c["gap_ms"] for c in runs]),
                    "joined": summary([c["joined_ms"] for c in runs if c["joined_ms"] is not None]),
                    "ready": summary([c["ready_ms"] for c in runs if c["ready_ms"] is not None])}
             for mode, runs in cycles.items()}
    dynamic, static = modes["dynamic"]["gap"], modes["static"]["gap"]
    ratio = dynamic["p50_ms"] / max(static["p50_ms"], 1)
    result = {
        "benchmark": "restart_gap",
        "machine": machine(args.threads),
        "bundle": str(bundle), "variant": args.variant, "store": args.store, "batch": args.batch,
        "max_wait_s": args.wait, "session_timeout_s": args.session_timeout, "partitions": PARTITIONS,
        "events_before_kill": args.events, "events_after_restart": args.new_events,
        "repeats": args.repeats, "warmup": warmups,
        "modes": modes,
        "ratio_dynamic_to_static": round(ratio, 2),
        # The target: every static restart delivers within 5 s.
        "target_ms": TARGET_MS, "target_met": static["max_ms"] <= TARGET_MS,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "restart_gap.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"kill -9 + restart, session timeout {args.session_timeout:.0f} s, {args.repeats} cycles each: "
          f"restart to first new output")
    print(f"{'membership':<12}{'p50 ms':>9}{'min ms':>9}{'max ms':>9}{'joined p50':>12}{'ready p50':>11}")
    for mode, m in modes.items():
        print(f"{mode:<12}{m['gap']['p50_ms']:>9}{m['gap']['min_ms']:>9}{m['gap']['max_ms']:>9}"
              f"{m['joined']['p50_ms'] or '-':>12}{m['ready']['p50_ms'] or '-':>11}")
    print(f"dynamic / static: {ratio:.1f}x; static within {TARGET_MS / 1000:.0f} s: "
          f"{'yes' if result['target_met'] else 'NO'}")
    print(f"wrote {out / 'restart_gap.json'}")


if __name__ == "__main__":
    main()
