"""Streaming throughput and latency through real Kafka, against model-only throughput of the same
bundle and batch settings, in one run:

    python bench/stream.py [--bundle DIR] [--events 3000] [--rounds 5] [--batch 64] [--lanes 1] [--threads 0]
                           [--variant int8] [--profile] [--baselines at_once fetch_100ms]

1. model-only: the serving tagger on the products' titles and descriptions, in full batches
   (events/s, and the time of one full batch: the latency bound's unit), with the worker's lanes
   and threads, and also in the two plain shapes (one lane of every core, a lane per core);
2. throughput, in ``--rounds`` rounds back to back (the machine's speed drifts over minutes, so
   each ratio is taken within a round and the medians reported): a topic pre-loaded with the
   events drained by a worker with its own settings, against the mean of a model-only pass in
   the worker's shape just before and one just after it; then the same drained by a worker with
   one setting changed, per ``--baselines`` (at_once, the default: the producer sends each output at
   once, linger 0 and 16 KiB batches; fetch_100ms: the broker holds a fetch up to 100 ms); time from
   first to last output;
3. latency: events produced at 30%, 70% and 90% of (2)'s rate (``--loads``), per event output time
   minus input time, against the bound max_wait + 2 x (one full batch's inference time);
4. with --profile: another pre-loaded topic drained under py-spy, summarised as the share of
   samples in the model and the costliest components outside it.
The throughput drains also report the CPU the worker's threads and the broker used, in cores.
Prints the ratios and writes bench/results/stream.json (the raw profile: bench/.cache/stream-profile.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (Counters, CpuClock, batch_stats, events_per_second, machine,  # noqa: E402
                          percentiles, produce, py_spy, read_all, wait_for_outputs)
from bench.profile_summary import summarise  # noqa: E402
from model.synth import DEMO_TAXONOMY, generate, load_taxonomy_json  # noqa: E402
from stream.service.settings import Settings  # noqa: E402
from stream.tagging.pipeline import Pipeline  # noqa: E402
from stream.service.clients import ensure_topics  # noqa: E402
from bench.broker import broker_pid, ensure_broker  # noqa: E402
from bench.harness import Topics, WorkerProcess, free_port  # noqa: E402

SHARED_BUNDLE = ROOT / "bench" / ".cache" / "minilm-bundle"
PROFILE_TRACE = ROOT / "bench" / ".cache" / "stream-profile.txt"   # raw py-spy stacks; the summary goes in the JSON
PARTITIONS = 4


def model_only(bundle: Path, products: list[dict], batch: int, threads: int, variant: str,
               lanes: int = 1, passes: int = 2) -> tuple[float, dict, list, dict]:
    """Best of ``passes`` passes in events/s, with ``lanes`` calls at once of ``threads`` threads each
    (as the worker's lanes run them), the per-call time of full batches, the providers, and the CPU
    the lanes used in the best pass."""
    pipeline = Pipeline.load(bundle, variant=variant, device="cpu", threads=threads, batch_size=batch)
    chunks = [products[i:i + batch] for i in range(0, len(products), batch)]
    for chunk in chunks[:2]:
        pipeline(chunk)

    def call(chunk: list[dict]) -> float | None:
        t0 = time.perf_counter()
        pipeline(chunk)
        return (time.perf_counter() - t0) * 1000 if len(chunk) == batch else None

    best, full_batch_ms, cpu = 0.0, [], {}
    with ThreadPoolExecutor(lanes) as pool:
        for _ in range(passes):
            start, clock = time.perf_counter(), CpuClock(os.getpid(), None, main="bench_main_thread")
            full_batch_ms.extend(ms for ms in pool.map(call, chunks) if ms is not None)
            eps = len(products) / (time.perf_counter() - start)
            if eps > best:
                best, cpu = eps, clock.cores()
    return best, percentiles(full_batch_ms), pipeline.tagger.providers, cpu


class Drain(NamedTuple):
    """A worker started on a topic pre-loaded with the events, once it has published them all."""

    worker: WorkerProcess
    topics: Topics
    counters: Counters
    events_per_second: float
    batches: dict
    cpu: dict


def drain(bootstrap: str, products: list[dict], bundle: Path, args, threads: int, **worker_settings) -> Drain:
    """Throughput: the topic is loaded before the worker starts; events/s from its first output to its
    last, and the CPU the worker's threads and the broker used in between. The worker is left running."""
    topics = Topics()
    settings = Settings.from_env({}, kafka_bootstrap=bootstrap, input_topic=topics.input,
                                 enriched_topic=topics.enriched, dlq_topic=topics.dlq, partitions=PARTITIONS)
    asyncio.run(ensure_topics(settings))
    produce(bootstrap, topics.input, product_events(products, 1))
    work = Path(tempfile.mkdtemp(prefix="tagstream-stream-bench-"))
    port = free_port()
    worker = WorkerProcess(bootstrap, topics, bundle, work, max_batch=args.batch, max_wait=args.wait, pipeline="true",
                           threads=threads, lanes=args.lanes, variant=args.variant, metrics_port=port,
                           **worker_settings)
    counters = Counters(port)
    try:
        wait_for_outputs(bootstrap, topics.enriched, PARTITIONS, 1, 900)
        clock = CpuClock(worker.proc.pid, broker_pid())
        wait_for_outputs(bootstrap, topics.enriched, PARTITIONS, len(products), 900)
        cpu = clock.cores()
        out = read_all(bootstrap, topics.enriched, len(products))
    except BaseException:
        worker.stop()
        raise
    eps = events_per_second(out, done_at_first=min(args.batch * args.lanes, len(out) - 1))
    return Drain(worker, topics, counters, eps, batch_stats(counters.delta()), cpu)


# Drains with one of the worker's settings changed (as it was before, or an alternative), each
# against the same events in every round: name -> (the settings, what they are, the ratio's key).
BASELINES = {
    "at_once": ({"producer_linger": 0, "producer_batch_bytes": 16384}, "each output sent at once (linger 0, 16 KiB)",
                "ratio_gathered_to_at_once"),
    "fetch_100ms": ({"fetch_max_wait": 0.1}, "fetches held up to 100 ms", "ratio_to_fetch_100ms"),
}


def rounds(bootstrap: str, products: list[dict], bundle: Path, args, threads: int) -> list[dict]:
    """``args.rounds`` times, back to back: a model-only pass in the worker's shape, a drain with
    the worker's settings, another model-only pass, then a drain per baseline (``args.baselines``,
    see BASELINES). The machine's speed drifts over minutes (shared cores), so the drain is compared
    with the mean of the passes just before and after it, and each ratio is taken within a round.
    Every worker is stopped before the next measurement."""
    out = []
    for n in range(args.rounds):
        before, call, _, cpu = model_only(bundle, products, args.batch, threads, args.variant, args.lanes, passes=1)
        kept = drain(bootstrap, products, bundle, args, threads)
        kept.worker.stop()
        after = model_only(bundle, products, args.batch, threads, args.variant, args.lanes, passes=1)[0]
        eps = (before + after) / 2
        row = {"model_only_events_per_second": round(eps, 1), "model_only_passes": [round(before, 1), round(after, 1)],
               "model_only_full_batch": call, "model_only_cpu": cpu,
               "streaming_events_per_second": round(kept.events_per_second, 1), "batches": kept.batches,
               "cpu_cores": kept.cpu, "ratio_streaming_to_model_only": round(kept.events_per_second / eps, 3),
               "ratio_streaming_to_faster_pass": round(kept.events_per_second / max(before, after), 3)}
        for name in args.baselines:
            base = drain(bootstrap, products, bundle, args, threads, **BASELINES[name][0])
            base.worker.stop()
            row[name] = {"events_per_second": round(base.events_per_second, 1), "batches": base.batches,
                         "cpu_cores": base.cpu}
            row[BASELINES[name][2]] = round(kept.events_per_second / base.events_per_second, 3)
        print(f"round {n + 1}: model-only {before:.1f} / {after:.1f}, streaming {kept.events_per_second:.1f} "
              f"events/s (CPU in cores {kept.cpu}); " + ", ".join(f"{name} {row[name]['events_per_second']}"
                                                                 for name in args.baselines), file=sys.stderr)
        out.append(row)
    return out


def baseline_summary(measured: list[dict], name: str) -> dict:
    """A baseline's medians over the rounds, and the settings it differs in."""
    settings, what, ratio = BASELINES[name]
    return {"settings": settings, "what": what, "ratio_streaming_to_baseline": median(measured, ratio),
            "events_per_second": median(measured, name, "events_per_second"),
            "broker_cpu_cores": median(measured, name, "cpu_cores", "broker")}


def median(rows: list[dict], *keys: str) -> float | None:
    values = []
    for row in rows:
        for key in keys:
            row = row.get(key) if isinstance(row, dict) else None
        if row is not None:
            values.append(row)
    return round(float(statistics.median(values)), 3) if values else None


def lane_time(rows: list[dict], key: str) -> dict | None:
    """The lanes' time split (running, waiting for a CPU, blocked), averaged over the busy threads
    of each round's ``key`` CPU figures, then the median over the rounds."""
    split = {}
    for part in ("running", "waiting_for_cpu", "blocked"):
        values = [statistics.mean(t[part] for t in row[key]["busy_threads"]) for row in rows
                  if row.get(key, {}).get("busy_threads")]
        split[part] = round(statistics.median(values), 3) if values else None
    return split if split["running"] is not None else None


def product_events(products: list[dict], version: int) -> list[tuple[bytes, bytes]]:
    return [(p["id"].encode(), orjson.dumps({"product_id": p["id"], "op": "upsert", "version": version,
                                             "title": p["title"], "description": p["description"]}))
            for p in products]


def latency_phase(bootstrap: str, topics: Topics, taxonomy, rate: float, events: int, seed: int,
                  before: int) -> tuple[dict, int]:
    """New products at ``rate`` events/s; per event, output time minus input time. ``before``
    outputs are on the topic already; returns the phase's figures and the new total."""
    products = [{**p, "id": f"late{seed}-{p['id']}"} for p in generate(taxonomy, events, seed=seed, lang="en",
                                                                        products=True)]
    sent = produce(bootstrap, topics.input, product_events(products, 1), rate)
    total = before + events
    wait_for_outputs(bootstrap, topics.enriched, PARTITIONS, total, 900)
    out = read_all(bootstrap, topics.enriched, total)
    latencies = [r.timestamp - sent[r.key] for r in out if r.key in sent]
    return {"rate_events_per_second": round(rate, 1), "events": len(latencies), **percentiles(latencies)}, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=str(SHARED_BUNDLE), help="default: the bundle bench/inference.py built")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--wait", type=float, default=0.05, help="micro-batch wait, seconds")
    parser.add_argument("--lanes", type=int, default=Settings.lanes, help="the worker's lanes (batches in the "
                                                                          "model at once; default: the worker's)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per lane (0: the cores shared "
                                                              "among the lanes)")
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--loads", default="0.3,0.7,0.9", help="latency phases' rates, shares of the measured maximum")
    parser.add_argument("--latency-events", type=int, default=0, help="events per latency phase (default: --events)")
    parser.add_argument("--profile", action="store_true", help="also drain a pre-loaded topic under py-spy")
    parser.add_argument("--profile-events", type=int, default=0, help="events for the profile (default: --events)")
    parser.add_argument("--rounds", type=int, default=5, help="model-only and streaming measured back to back this "
                                                               "many times; ratios are the medians of the rounds'")
    parser.add_argument("--baselines", nargs="*", choices=sorted(BASELINES), default=["at_once"],
                        help="also drain, each round, with one setting changed: at_once (the producer sends each "
                             "output at once, as before producer_linger), fetch_100ms (fetches held up to 100 ms); "
                             "none: no such drains")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        sys.exit(f"{bundle}: no bundle; run bench/inference.py first (it leaves one there) or pass --bundle")
    if args.events < 2 * args.batch:
        sys.exit(f"--events must be at least two batches ({2 * args.batch}), got {args.events}")
    try:
        loads = [float(x) for x in args.loads.split(",")]
    except ValueError:
        sys.exit(f"--loads must be comma-separated numbers, got {args.loads!r}")
    if not loads or not all(0 < x < 1 for x in loads):
        sys.exit(f"--loads must be shares in (0, 1), got {args.loads!r}")

    taxonomy = load_taxonomy_json(DEMO_TAXONOMY)
    products = generate(taxonomy, args.events, seed=101, lang="en", products=True)
    if args.rounds < 1:
        sys.exit(f"--rounds must be at least 1, got {args.rounds}")
    if args.lanes < 1 or args.threads < 0:
        sys.exit(f"--lanes must be at least 1 and --threads at least 0, got {args.lanes} and {args.threads}")
    cores = os.cpu_count() or 1
    threads = args.threads or max(1, cores // args.lanes)
    # Model-only in the worker's shape, and in the other one (one lane of every core, or a lane per
    # core of one thread each): the streaming ratio is also given against the faster of the two.
    shapes = {(args.lanes, threads): None, (1, cores): None, (cores, 1): None}
    for lanes, per_lane in shapes:
        eps, call, providers, _ = model_only(bundle, products, args.batch, per_lane, args.variant, lanes)
        shapes[lanes, per_lane] = {"lanes": lanes, "threads": per_lane, "events_per_second": round(eps, 1),
                                   "full_batch": call}
        print(f"model-only, {lanes} lane(s) x {per_lane} thread(s): {eps:.1f} events/s; one full batch of "
              f"{args.batch}: p50 {call['p50_ms']} ms", file=sys.stderr)
    batch_call = shapes[args.lanes, threads]["full_batch"]

    bootstrap = ensure_broker()
    measured = rounds(bootstrap, products, bundle, args, threads)
    # A worker for the latency phases, warmed by draining a few batches of the same events.
    warm = products[:4 * args.batch * args.lanes]
    run = drain(bootstrap, warm, bundle, args, threads)
    worker, topics, counters = run.worker, run.topics, run.counters
    stream_eps = median(measured, "streaming_events_per_second")
    model_eps = median(measured, "model_only_events_per_second")
    # Against the fastest shape: the rounds' ratio scaled by how the worker's shape compared with the
    # fastest one in the same pass of (1).
    best_model = max(shapes.values(), key=lambda r: r["events_per_second"])
    to_best = median(measured, "ratio_streaming_to_model_only") * (
        shapes[args.lanes, threads]["events_per_second"] / best_model["events_per_second"])
    profile = None
    try:
        # Latency at shares of the measured maximum: output time minus input time.
        total, phases = len(warm), []
        for n, load in enumerate(loads):
            phase, total = latency_phase(bootstrap, topics, taxonomy, load * stream_eps, args.latency_events or
                                         args.events, 102 + n, total)
            phases.append({"load": load, **phase, "batches": batch_stats(counters.delta())})
            print(f"latency at {load:.0%}: {phase}", file=sys.stderr)

        if args.profile:
            n = args.profile_events or args.events
            more = [{**p, "id": f"prof-{p['id']}"} for p in generate(taxonomy, n, seed=120, lang="en", products=True)]
            trace = PROFILE_TRACE
            trace.parent.mkdir(parents=True, exist_ok=True)
            trace.unlink(missing_ok=True)  # a trace from an earlier run must not pass for this one
            spy = py_spy(worker.proc.pid, 900, trace)
            time.sleep(1.0)  # py-spy attaches before the events arrive
            produce(bootstrap, topics.input, product_events(more, 1))
            wait_for_outputs(bootstrap, topics.enriched, PARTITIONS, total + n, 900)
            spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
            spy.wait(60)
            if not trace.is_file():
                print(f"py-spy failed ({spy.returncode}): {spy.stderr.read().decode(errors='replace')[-500:]}",
                      file=sys.stderr)
            else:
                profile = {"events": n, "trace": str(trace.relative_to(ROOT) if trace.is_relative_to(ROOT) else trace),
                           **summarise(trace)}
    finally:
        worker.stop()

    bound_ms = args.wait * 1000 + 2 * batch_call["p50_ms"]
    for phase in phases:
        # The issue's target: within the batch wait plus two full batches' inference.
        phase["bound_ms"] = round(bound_ms, 1)
        phase["p99_within_bound"] = phase["p99_ms"] <= bound_ms
    result = {
        "benchmark": "stream",
        "machine": machine(threads, providers),
        "lanes": args.lanes, "threads_per_lane": threads,
        "bundle": str(bundle), "variant": args.variant, "events": args.events,
        "batch": args.batch, "max_wait_s": args.wait,
        "rounds": measured,
        "model_only_events_per_second": round(model_eps, 1),
        "model_only_full_batch": batch_call,
        "streaming_events_per_second": round(stream_eps, 1),
        "ratio_streaming_to_model_only": median(measured, "ratio_streaming_to_model_only"),
        "ratio_streaming_to_faster_pass": median(measured, "ratio_streaming_to_faster_pass"),
        "model_only_shapes": list(shapes.values()),
        "ratio_streaming_to_best_model_only": round(to_best, 3),
        "throughput_phase_batches": measured[-1]["batches"],
        "throughput_phase_cpu_cores": measured[-1]["cpu_cores"],
        "producer": {"linger_s": Settings.producer_linger, "batch_bytes": Settings.producer_batch_bytes},
        "fetch_max_wait_s": Settings.fetch_max_wait,
        "baselines": {name: baseline_summary(measured, name) for name in args.baselines},
        "broker_cpu_cores": median(measured, "cpu_cores", "broker"),
        "lane_time": {"model_only": lane_time(measured, "model_only_cpu"),
                      "streaming": lane_time(measured, "cpu_cores")},
        "latency_phases": phases,
        "profile": profile,
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stream.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    for shape in shapes.values():
        label = f"model-only, {shape['lanes']} lane(s) x {shape['threads']} thr"
        print(f"{label:<34}{shape['events_per_second']:>10.1f} events/s   full batch p50 {shape['full_batch']['p50_ms']} ms")
    print(f"{'streaming, ' + str(args.lanes) + ' lane(s)':<34}{stream_eps:>10.1f} events/s   ratio "
          f"{result['ratio_streaming_to_model_only']:.2f}, the median of {len(measured)} rounds (to the best "
          f"model-only: {to_best:.2f})")
    for phase in phases:
        print(f"latency at {phase['rate_events_per_second']:.0f} events/s ({phase['load']:.0%} of max): "
              f"p50 {phase['p50_ms']} ms, p95 {phase['p95_ms']} ms, p99 {phase['p99_ms']} ms; bound {bound_ms:.0f} ms "
              f"({'met' if phase['p99_within_bound'] else 'NOT met'}); mean batch "
              f"{phase['batches']['mean_batch_events']} events in {phase['batches']['mean_batch_seconds']} s")
    for n, row in enumerate(measured):
        print(f"round {n + 1}: streaming / model-only {row['streaming_events_per_second']:.1f} / "
              f"{row['model_only_events_per_second']:.1f} (passes before and after: "
              f"{' / '.join(str(p) for p in row['model_only_passes'])}) = {row['ratio_streaming_to_model_only']:.2f}"
              + "".join(f"; vs {name} {row[BASELINES[name][2]]:.2f} (broker CPU {row['cpu_cores']['broker']} vs "
                        f"{row[name]['cpu_cores']['broker']} cores)" for name in args.baselines))
    if profile:
        print(f"profile: model {profile['model_share']:.0%} of {profile['samples']} samples; outside it: "
              + "; ".join(f"{c['component']} {c['share']:.0%}" for c in profile["top_outside_model"]))
    print(f"wrote {out_dir / 'stream.json'}")


if __name__ == "__main__":
    main()
