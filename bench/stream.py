"""Streaming throughput and latency through real Kafka, against model-only throughput of the same
bundle and batch settings, in one run:

    python bench/stream.py [--bundle DIR] [--events 3000] [--batch 64] [--threads 2] [--variant int8]

1. model-only: the serving tagger on the products' titles and descriptions, in batches;
2. throughput: a topic pre-loaded with the events, one worker, time from first to last output;
3. latency: events produced at 70% of (2)'s rate, per event output time minus input time.
Prints the streaming/model-only ratio and writes bench/results/stream.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.synth import generate, load_taxonomy_json  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.tagger import Tagger  # noqa: E402
from stream.worker import ensure_topics  # noqa: E402
from tests.kafka_broker import ensure_broker  # noqa: E402
from tests.streaming import Topics, WorkerProcess  # noqa: E402

TAXONOMY = ROOT / "model" / "resources" / "demo_taxonomy.json"
SHARED_BUNDLE = ROOT / "bench" / ".cache" / "minilm-bundle"


def model_only(bundle: Path, products: list[dict], batch: int, threads: int, variant: str) -> float:
    tagger = Tagger.load(bundle, variant=variant, device="cpu", threads=threads, batch_size=batch)
    chunks = [products[i:i + batch] for i in range(0, len(products), batch)]
    tagger.tag_products(products[:batch * 2])
    best = 0.0
    for _ in range(2):
        start = time.perf_counter()
        for chunk in chunks:
            tagger.tag_products(chunk)
        best = max(best, len(products) / (time.perf_counter() - start))
    return best


def _events(products: list[dict], version: int) -> list[tuple[bytes, bytes]]:
    return [(p["id"].encode(), orjson.dumps({"product_id": p["id"], "op": "upsert", "version": version,
                                             "title": p["title"], "description": p["description"]}))
            for p in products]


async def _produce(bootstrap: str, topic: str, events, rate: float | None) -> dict[bytes, int]:
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


async def _wait_for_outputs(bootstrap: str, topic: str, partitions: int, count: int, timeout: float) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        deadline = time.monotonic() + timeout
        while sum((await consumer.end_offsets(parts)).values()) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"{topic}: fewer than {count} records after {timeout}s")
            await asyncio.sleep(1.0)
    finally:
        await consumer.stop()


def wait_for_outputs(bootstrap: str, topic: str, partitions: int, count: int, timeout: float) -> None:
    """Poll the topic's end offsets (cheap) rather than consume alongside the worker: a
    consumer in this process would take CPU from the worker being measured."""
    asyncio.run(_wait_for_outputs(bootstrap, topic, partitions, count, timeout))


async def _read_all(bootstrap: str, topic: str, count: int) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    seen: list = []
    try:
        while len(seen) < count:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                seen.extend(records)
    finally:
        await consumer.stop()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=str(SHARED_BUNDLE), help="default: the bundle bench/inference.py built")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--wait", type=float, default=0.05, help="micro-batch wait, seconds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--load", type=float, default=0.7, help="latency phase rate, share of measured maximum")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        sys.exit(f"{bundle}: no bundle; run bench/inference.py first (it leaves one there) or pass --bundle")

    taxonomy = load_taxonomy_json(TAXONOMY)
    products = generate(taxonomy, args.events, seed=101, lang="en", products=True)
    latency_products = [{**p, "id": f"late-{p['id']}"} for p in generate(taxonomy, args.events, seed=102, lang="en", products=True)]
    model_eps = model_only(bundle, products, args.batch, args.threads, args.variant)
    print(f"model-only: {model_eps:.1f} events/s", file=sys.stderr)

    bootstrap = ensure_broker()
    topics = Topics()
    settings = Settings.from_env({}, kafka_bootstrap=bootstrap, input_topic=topics.input,
                                 enriched_topic=topics.enriched, dlq_topic=topics.dlq, partitions=4)
    asyncio.run(ensure_topics(settings))
    # Throughput: the topic is loaded before the worker starts; time from first to last output.
    asyncio.run(_produce(bootstrap, topics.input, _events(products, 1), None))
    work = Path(tempfile.mkdtemp(prefix="tagstream-stream-bench-"))
    worker = WorkerProcess(bootstrap, topics, bundle, work, max_batch=args.batch, max_wait=args.wait,
                           threads=args.threads, variant=args.variant)
    try:
        wait_for_outputs(bootstrap, topics.enriched, settings.partitions, args.events, 900)
        out = asyncio.run(_read_all(bootstrap, topics.enriched, args.events))
        stamps = sorted(r.timestamp for r in out)
        stream_eps = (len(out) - 1) / ((stamps[-1] - stamps[0]) / 1000)
        print(f"streaming: {stream_eps:.1f} events/s ({len(out)} records)", file=sys.stderr)

        # Latency at a fixed share of the measured maximum: output time minus input time.
        rate = args.load * stream_eps
        sent = asyncio.run(_produce(bootstrap, topics.input, _events(latency_products, 1), rate))
        wait_for_outputs(bootstrap, topics.enriched, settings.partitions, args.events * 2, 900)
        out2 = asyncio.run(_read_all(bootstrap, topics.enriched, args.events * 2))
        latencies = [r.timestamp - sent[r.key] for r in out2 if r.key in sent]
    finally:
        worker.stop()
    lat = np.asarray(latencies, dtype=float)
    result = {
        "benchmark": "stream",
        "machine": {"platform": platform.platform(), "threads": args.threads},
        "bundle": str(bundle), "variant": args.variant, "events": args.events,
        "batch": args.batch, "max_wait_s": args.wait,
        "model_only_events_per_second": round(model_eps, 1),
        "streaming_events_per_second": round(stream_eps, 1),
        "ratio_streaming_to_model_only": round(stream_eps / model_eps, 3),
        "latency": {"rate_events_per_second": round(rate, 1), "events": int(lat.size),
                    **{f"p{q}_ms": round(float(np.percentile(lat, q)), 1) for q in (50, 95, 99)}},
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stream.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"{'model-only (serving tagger)':<34}{model_eps:>10.1f} events/s")
    print(f"{'streaming through Kafka':<34}{stream_eps:>10.1f} events/s   ratio {stream_eps / model_eps:.2f}")
    print(f"latency at {rate:.0f} events/s ({args.load:.0%} of max): p50 {result['latency']['p50_ms']} ms, "
          f"p95 {result['latency']['p95_ms']} ms, p99 {result['latency']['p99_ms']} ms")
    print(f"wrote {out_dir / 'stream.json'}")


if __name__ == "__main__":
    main()
