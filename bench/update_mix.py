"""A realistic update mix through real Kafka and one worker, with and without content-hash skipping:

    python bench/update_mix.py [--bundle DIR] [--products 1000] [--updates 4000] [--text-share 0.2]

After one upsert per product (which builds the worker's state), each update changes either only
price and stock (80%: same title and description, same content hash) or the text (20%). The same
events go through a fresh worker with TAGSTREAM_SKIP_UNCHANGED on, then off. Reports the products
sent through the model, update throughput each way and their ratio; writes bench/results/update_mix.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Counters, batch_stats, events_per_second, machine, produce, read_all, wait_for_outputs  # noqa: E402
from model.synth import DEMO_TAXONOMY, generate, load_taxonomy_json  # noqa: E402
from stream.service.settings import Settings  # noqa: E402
from stream.service.clients import ensure_topics  # noqa: E402
from bench.broker import ensure_broker  # noqa: E402
from bench.harness import Topics, WorkerProcess, free_port  # noqa: E402

SHARED_BUNDLE = ROOT / "bench" / ".cache" / "minilm-bundle"
PARTITIONS = 4
TARGET_RATIO = 3.0


def event(pid: str, version: int, product: dict, price: float, stock: int) -> tuple[bytes, bytes]:
    return pid.encode(), orjson.dumps({"product_id": pid, "op": "upsert", "version": version,
                                       "title": product["title"], "description": product["description"],
                                       "price": price, "stock": stock})


def update_mix(products: int, updates: int, text_share: float, seed: int) -> tuple[list, list, int]:
    """(initial upserts, updates, how many updates change the text). Price and stock are extra
    fields of the event: the worker ignores them and they never enter the content hash."""
    taxonomy = load_taxonomy_json(DEMO_TAXONOMY)
    catalogue = generate(taxonomy, products, seed=seed, lang="en", products=True)
    rewrites = iter(generate(taxonomy, updates, seed=seed + 1, lang="en", products=True))
    rng = random.Random(seed)
    current = {p["id"]: p for p in catalogue}
    versions = {p["id"]: 1 for p in catalogue}
    initial = [event(p["id"], 1, p, round(rng.uniform(5, 500), 2), rng.randint(0, 200)) for p in catalogue]
    mix, text_changes = [], 0
    for _ in range(updates):
        pid = rng.choice(catalogue)["id"]
        versions[pid] += 1
        if rng.random() < text_share:
            rewrite = next(rewrites)
            current[pid] = {"title": rewrite["title"], "description": rewrite["description"]}
            text_changes += 1
        mix.append(event(pid, versions[pid], current[pid], round(rng.uniform(5, 500), 2), rng.randint(0, 200)))
    return initial, mix, text_changes


def run(bootstrap: str, bundle: Path, initial: list, updates: list, skip: bool, args) -> dict:
    """One fresh worker (own topics and group): the initial upserts, then the updates as a backlog."""
    topics = Topics()
    settings = Settings.from_env({}, kafka_bootstrap=bootstrap, input_topic=topics.input,
                                 enriched_topic=topics.enriched, dlq_topic=topics.dlq, partitions=PARTITIONS)
    asyncio.run(ensure_topics(settings))
    produce(bootstrap, topics.input, initial)
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="tagstream-update-mix-"))
    worker = WorkerProcess(bootstrap, topics, bundle, work, max_batch=args.batch, max_wait=args.wait,
                           threads=args.threads, variant=args.variant, metrics_port=port,
                           skip_unchanged="true" if skip else "false")
    counters = Counters(port)
    try:
        wait_for_outputs(bootstrap, topics.enriched, PARTITIONS, len(initial), 900)
        counters.delta()
        # The updates arrive as a backlog, so the worker runs flat out on them.
        produce(bootstrap, topics.input, updates)
        total = len(initial) + len(updates)
        wait_for_outputs(bootstrap, topics.enriched, PARTITIONS, total, 1800)
        stats = batch_stats(counters.delta())
        records = read_all(bootstrap, topics.enriched, total)
    finally:
        worker.stop()
    values = [(r, orjson.loads(r.value)) for r in records]
    update_records = [r for r, v in values if v["version"] > 1]
    tags = {(v["product_id"], v["version"]): sorted((t["field"], t["start"], t["end"], t["type"]) for t in v["tags"])
            for _, v in values}
    return {"skip_unchanged": skip, "updates": len(update_records),
            "events_per_second": round(events_per_second(update_records), 1), **stats, "tags": tags}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=str(SHARED_BUNDLE), help="default: the bundle bench/inference.py built")
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=4000)
    parser.add_argument("--text-share", type=float, default=0.2, help="share of updates that change the text")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--wait", type=float, default=0.05, help="micro-batch wait, seconds")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per lane (0: the cores shared "
                                                              "among the worker's lanes)")
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--seed", type=int, default=201)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        sys.exit(f"{bundle}: no bundle; run bench/inference.py first (it leaves one there) or pass --bundle")
    if args.products < 1 or args.updates < 2 * args.batch:
        sys.exit(f"--products must be at least 1 and --updates at least two batches ({2 * args.batch})")
    if not 0 <= args.text_share <= 1:
        sys.exit(f"--text-share must be in [0, 1], got {args.text_share}")

    initial, updates, text_changes = update_mix(args.products, args.updates, args.text_share, args.seed)
    bootstrap = ensure_broker()
    runs = []
    for skip in (True, False):
        runs.append(run(bootstrap, bundle, initial, updates, skip, args))
        print(f"skip_unchanged={skip}: {runs[-1]['events_per_second']} updates/s, "
              f"{runs[-1]['model_products']} products through the model", file=sys.stderr)
    on, off = runs
    # Same events, same model: skipping must not change what comes out (dynamic int8 quantisation
    # depends on the batch, so a rare boundary may differ; counted, not asserted).
    differing = sum(1 for key, spans in on["tags"].items() if off["tags"].get(key) != spans)
    compared = len(on["tags"])
    for r in runs:
        del r["tags"]
    ratio = on["events_per_second"] / off["events_per_second"]
    saved = 1 - on["model_products"] / off["model_products"] if off["model_products"] else None
    result = {
        "benchmark": "update_mix",
        "machine": machine(args.threads),
        "bundle": str(bundle), "variant": args.variant, "batch": args.batch, "max_wait_s": args.wait,
        "products": args.products, "updates": args.updates, "text_share": args.text_share,
        "text_changing_updates": text_changes,
        "runs": runs,
        "model_calls_saved_share": round(saved, 3) if saved is not None else None,
        "ratio_skip_on_to_off": round(ratio, 2), "target_ratio": TARGET_RATIO, "target_met": ratio >= TARGET_RATIO,
        "outputs_compared": compared, "outputs_differing": differing,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "update_mix.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"{'content-hash skipping':<24}{'updates/s':>11}{'model products':>16}{'mean batch s':>14}")
    for r in runs:
        print(f"{'on' if r['skip_unchanged'] else 'off':<24}{r['events_per_second']:>11.1f}{r['model_products']:>16}"
              f"{r['mean_batch_seconds'] or 0:>14.3f}")
    print(f"model calls saved {saved:.0%}; throughput ratio on/off {ratio:.2f}x "
          f"(target {TARGET_RATIO:.0f}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'}); "
          f"outputs differing {differing} of {compared}")
    print(f"wrote {out / 'update_mix.json'}")


if __name__ == "__main__":
    main()
