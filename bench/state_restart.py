"""Restart-to-first-output with a large per-product state, memory store vs RocksDB store, in one run:

    python bench/state_restart.py [--bundle DIR] [--products 200000] [--tags 4]

The state is seeded by producing one realistic entry per product (version, content hash, model id,
a few tags) straight to each run's changelog topic, keyed by product id with no partition given,
so each entry lands on the default (murmur2) partition of its key: the input partition of that
product's events. Per store (own topics, group and data directory; static membership, so no
session timeout hides the difference): a first start replays the whole changelog (RocksDB: into its
local files) and enriches a probe event; then the worker is SIGKILLed, started again at once with
the same settings, and an update of a seeded product is produced right away. Restart-to-first-output
is that update's enriched record's timestamp minus the moment of the restart. The update carries the
seeded text, so its tags must be the seeded ones (re-used, not re-tagged); an older version of
another seeded product must be skipped as stale (no output, tagstream_events_skipped_total{reason=
"stale"} up by one): both show the restarted worker really has the seeded state. Writes
bench/results/state_restart.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bundle_or_exit, machine, produce, worker_options  # noqa: E402
from bench.restart_gap import (PARTITIONS, changelog_replay, create_topics, end_offsets, milestones,  # noqa: E402
                               wait_committed, wait_for_keys, worker_settings)
from model.synth import DEMO_TAXONOMY, generate, load_taxonomy_json  # noqa: E402
from stream.service.events import ProductEvent  # noqa: E402
from stream.service.worker import STATE_TABLE  # noqa: E402
from stream.tagging.pipeline import Pipeline  # noqa: E402
from stream.tagging.spans import TaggedSpan  # noqa: E402
from bench.broker import ensure_broker  # noqa: E402
from bench.harness import Topics, WorkerProcess, free_port, scrape  # noqa: E402

SHARED_BUNDLE = ROOT / "bench" / ".cache" / "minilm-bundle"
SEEDED_VERSION = 5
STALE = 'tagstream_events_skipped_total{reason="stale"}'
UNCHANGED = 'tagstream_events_skipped_total{reason="unchanged"}'


def changelog_topic(topics: Topics) -> str:
    """Faust's name for the table's changelog: <app id>-<table>-changelog (the app id is the group)."""
    return f"{topics.group}-{STATE_TABLE}-changelog"


class Catalogue:
    """Seeded products: ``seed-0000000`` … with title, description and the state entry the worker
    would have stored for them (a pool of synthetic products, reused round-robin). Their labelled
    spans stand in for the model's (no 200,000 titles through it); the bundle's pipeline turns them
    into published tags (taxonomy node, path) as the worker does."""

    def __init__(self, products: int, tags: int, pipeline: Pipeline, seed: int = 401) -> None:
        taxonomy_json = load_taxonomy_json(DEMO_TAXONOMY)
        self.products = products
        rng = random.Random(seed)
        self.pool = []
        for p in generate(taxonomy_json, min(products, 2000), seed=seed, lang="en", products=True):
            spans = [TaggedSpan(s["field"], s["start"], s["end"], p[s["field"]][s["start"]:s["end"]], s["label"],
                                rng.uniform(0.7, 0.999)) for s in p["spans"][:tags]]
            content = ProductEvent("", "upsert", SEEDED_VERSION, p["title"], p["description"]).content_hash
            entry = {"version": SEEDED_VERSION, "content_hash": content, "model": pipeline.model_id,
                     "deleted": False, "tags": [pipeline.tag(s).to_json() for s in spans], "tags_dropped": 0}
            self.pool.append((p, entry, orjson.dumps(entry)))

    def pid(self, i: int) -> str:
        return f"seed-{i:07d}"

    def product(self, i: int) -> tuple[dict, dict]:
        p, entry, _ = self.pool[i % len(self.pool)]
        return p, entry

    def records(self):
        for i in range(self.products):
            yield self.pid(i).encode(), self.pool[i % len(self.pool)][2]

    def event(self, i: int, version: int) -> tuple[bytes, bytes]:
        p, _ = self.product(i)
        return self.pid(i).encode(), orjson.dumps({"product_id": self.pid(i), "op": "upsert", "version": version,
                                                   "title": p["title"], "description": p["description"]})


async def _create_changelogs(bootstrap: str, names: list[str]) -> None:
    # As faust would create it (compacted, the table's partitions); faust finds it there and uses it.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"})
                                   for name in names])
    finally:
        await admin.close()


async def _seed(bootstrap: str, topics: list[str], records) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 18)
    await producer.start()
    try:
        pending = []
        for key, value in records:
            for topic in topics:
                # No partition: the default partitioner's murmur2 of the key, as for the input topic.
                pending.append(await producer.send(topic, value=value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def seed(bootstrap: str, topics: list[str], catalogue: Catalogue) -> float:
    """Every seeded entry to every topic; seconds taken."""
    started = time.perf_counter()
    asyncio.run(_create_changelogs(bootstrap, topics))
    asyncio.run(_seed(bootstrap, topics, catalogue.records()))
    return time.perf_counter() - started


def _replay_rate(records: int | None, m: dict) -> float | None:
    """Changelog records per second between joining the group and the end of table recovery (None
    when there was next to nothing to replay)."""
    if not records or records < 100 or m["joined_ms"] is None or m["recovered_ms"] is None \
            or m["recovered_ms"] <= m["joined_ms"]:
        return None
    return round(records / ((m["recovered_ms"] - m["joined_ms"]) / 1000))


def _size_mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / (1 << 20), 1) if path.exists() else 0.0


def run_store(bootstrap: str, bundle: Path, store: str, topics: Topics, catalogue: Catalogue, args,
              work: Path) -> dict:
    port = free_port()
    data_dir = work / topics.group
    settings = worker_settings(topics, data_dir, args, store=store, instance_id=f"{topics.group}-worker-0",
                               metrics_port=port)
    timeout = max(300.0, catalogue.products / 400)
    probe = [(b"probe-first", orjson.dumps({"product_id": "probe-first", "op": "upsert", "version": 1,
                                            "title": "Nike red running shoes", "description": None}))]
    stale_i, timed_i = catalogue.products // 3, 2 * catalogue.products // 3
    stale_key, timed_key = catalogue.pid(stale_i).encode(), catalogue.pid(timed_i).encode()

    # First start: the whole changelog is replayed (for RocksDB into its local store).
    started_at = time.time()
    worker = WorkerProcess(bootstrap, topics, bundle, work, **settings)
    try:
        produce(bootstrap, topics.input, probe)
        out = wait_for_keys(bootstrap, topics.enriched, dict.fromkeys(range(PARTITIONS), 0), {b"probe-first"}, worker,
                            timeout)
        first = {"first_output_ms": round(out[0].timestamp - started_at * 1000), **milestones(worker.log(), started_at)}
        first["replayed_records"] = changelog_replay(worker.log())
        first["replay_records_per_second"] = _replay_rate(first["replayed_records"], first)
        wait_committed(bootstrap, topics)
        start = end_offsets(bootstrap, topics.enriched)
        print(f"{store}: first start, first output after {first['first_output_ms']} ms; SIGKILL and restart",
              file=sys.stderr)
        worker.kill()
        restarted_at = time.time()
        worker = WorkerProcess(bootstrap, topics, bundle, work, **settings)
        # The timed update first; the stale one may sit on another partition and come later.
        produce(bootstrap, topics.input, [catalogue.event(timed_i, SEEDED_VERSION + 1),
                                          catalogue.event(stale_i, SEEDED_VERSION - 2)])
        out = wait_for_keys(bootstrap, topics.enriched, start, {timed_key}, worker, timeout)
        timed = next(r for r in out if r.key == timed_key)
        restart = {"first_output_ms": round(timed.timestamp - restarted_at * 1000),
                   **milestones(worker.log(), restarted_at)}
        restart["replayed_records"] = changelog_replay(worker.log())
        restart["replay_records_per_second"] = _replay_rate(restart["replayed_records"], restart)
        deadline = time.monotonic() + 60
        while (counters := scrape(port)).get(STALE, 0.0) < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        rss, _ = worker.rss_bytes()
        later = wait_for_keys(bootstrap, topics.enriched, start, {timed_key}, worker, 60)
    finally:
        worker.stop()
    seeded_tags = catalogue.product(timed_i)[1]["tags"]
    timed_value = orjson.loads(timed.value)
    check = {
        "stale_skipped": int(counters.get(STALE, 0.0)),
        "stale_enriched": sum(1 for r in later if r.key == stale_key),
        "unchanged_reused": int(counters.get(UNCHANGED, 0.0)),
        "seeded_tags_returned": _spans(timed_value["tags"]) == _spans(seeded_tags),
    }
    check["state_loaded"] = (check["stale_skipped"] == 1 and check["stale_enriched"] == 0
                             and check["seeded_tags_returned"])
    print(f"{store}: restart, first output after {restart['first_output_ms']} ms; state check {check}",
          file=sys.stderr)
    return {"store": store, "first_start": first, "restart": restart, "state_check": check,
            "rss_mib_after_restart": round(rss / (1 << 20)), "data_dir_mib": _size_mib(data_dir)}


def _spans(tags: list[dict]) -> list[tuple]:
    return sorted((t["field"], t["start"], t["end"], t["type"], t["tag"]) for t in tags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=str(SHARED_BUNDLE), help="default: the bundle bench/inference.py built")
    parser.add_argument("--products", type=int, default=200_000, help="products of seeded state")
    parser.add_argument("--tags", type=int, default=4, help="at most this many tags per seeded product")
    worker_options(parser)
    args = parser.parse_args()
    bundle = bundle_or_exit(args.bundle)
    if args.products < 3 or args.tags < 1:
        sys.exit("--products must be at least 3 and --tags at least 1")

    catalogue = Catalogue(args.products, args.tags, Pipeline.load(bundle, variant=args.variant, device="cpu",
                                                                  threads=1))
    bootstrap = ensure_broker()
    work = Path(tempfile.mkdtemp(prefix="tagstream-state-restart-"))
    stores = {"memory": Topics(), "rocksdb": Topics()}
    for topics in stores.values():
        create_topics(bootstrap, topics)
    seconds = seed(bootstrap, [changelog_topic(t) for t in stores.values()], catalogue)
    value_bytes = sum(len(v) for _, _, v in catalogue.pool) / len(catalogue.pool)
    print(f"seeded {args.products:,} products ({value_bytes:.0f} bytes each) into {len(stores)} changelogs "
          f"in {seconds:.1f} s", file=sys.stderr)
    runs = {store: run_store(bootstrap, bundle, store, topics, catalogue, args, work)
            for store, topics in stores.items()}

    memory, rocksdb = (runs[s]["restart"]["first_output_ms"] for s in ("memory", "rocksdb"))
    ratio = memory / max(rocksdb, 1)
    result = {
        "benchmark": "state_restart",
        "machine": machine(args.threads),
        "bundle": str(bundle), "variant": args.variant, "batch": args.batch, "max_wait_s": args.wait,
        "partitions": PARTITIONS, "products": args.products,
        "seeding": {"records_per_changelog": args.products, "mean_value_bytes": round(value_bytes),
                    "seconds": round(seconds, 1)},
        "stores": runs,
        "ratio_memory_to_rocksdb_restart": round(ratio, 2),
        "state_loaded": all(r["state_check"]["state_loaded"] for r in runs.values()),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "state_restart.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"{args.products:,} products of state; kill -9 + restart to first output "
          f"(and the first start, which replays the whole changelog)")
    print(f"{'store':<10}{'restart ms':>12}{'replayed':>10}{'first start ms':>16}{'replayed':>10}"
          f"{'replay rec/s':>14}{'RSS MiB':>9}{'disk MiB':>10}  state loaded")
    for store, r in runs.items():
        first, restart = r["first_start"], r["restart"]
        print(f"{store:<10}{restart['first_output_ms']:>12}{str(restart['replayed_records']):>10}"
              f"{first['first_output_ms']:>16}{str(first['replayed_records']):>10}"
              f"{first['replay_records_per_second'] or '-':>14}{r['rss_mib_after_restart']:>9}"
              f"{r['data_dir_mib']:>10}  {'yes' if r['state_check']['state_loaded'] else 'NO'}")
    print(f"memory / rocksdb restart: {ratio:.1f}x")
    print(f"wrote {out / 'state_restart.json'}")
    if not result["state_loaded"]:
        sys.exit("the restarted worker did not have the seeded state (see state_check in the JSON)")


if __name__ == "__main__":
    main()
