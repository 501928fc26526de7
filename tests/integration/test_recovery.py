"""Recovery after kill -9 on the real broker: static membership takes the partitions back at once,
and per-product state survives a restart with either store."""

from __future__ import annotations

import time

import orjson

from bench.restart_gap import changelog_replay, end_offsets
from model.synth import generate, load_taxonomy_json
from stream.service.worker import STATE_TABLE
from tests.conftest import DEMO_TAXONOMY
from bench.harness import WorkerProcess, consume, event, free_port, group_lag, produce, scrape

STALE = 'tagstream_events_skipped_total{reason="stale"}'


def _report(name: str, sent: set, records) -> int:
    seen = [(r.key.decode(), orjson.loads(r.value)["version"]) for r in records if r.value is not None]
    unique = set(seen)
    lost = len(sent - unique)
    print(f"{name}: sent {len(sent)}, enriched {len(unique & sent)}, duplicated {len(seen) - len(unique)}, lost {lost}")
    return lost


def _wait_committed(kafka: str, topics, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while any(group_lag(kafka, topics.group, topics.input).values()):
        assert time.monotonic() < deadline, f"offsets not committed within {timeout:.0f} s"
        time.sleep(0.3)


def _wait_dead(worker: WorkerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while worker.proc.poll() is None:
        assert time.monotonic() < deadline, f"the failpoint did not kill the worker:\n{worker.log()[-3000:]}"
        time.sleep(0.1)
    worker.kill()  # reaps it and closes its log


def test_a_sigkilled_static_member_is_back_before_its_session_timeout_and_loses_nothing(kafka, topics, tiny_bundle,
                                                                                       tmp_path):
    products = generate(load_taxonomy_json(DEMO_TAXONOMY), 120, seed=61, lang="mixed", products=True)
    records = [(p["id"].encode(), event(p["id"], 1, p["title"], p["description"])) for p in products]
    sent = {(p["id"], 1) for p in products}
    settings = {"max_batch": 8, "session_timeout": 30, "instance_id": f"{topics.group}-worker-0",
                "data_dir": str(tmp_path / "state")}
    # SIGKILLed by its own failpoint between inference and publish of its 4th batch: mid-stream.
    worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, failpoint="before_publish:4", **settings)
    try:
        worker.wait_ready()
        produce(kafka, topics.input, records)
        _wait_dead(worker)
        start = end_offsets(kafka, topics.enriched)
        restarted_at = time.time()
        worker = WorkerProcess(kafka, topics, tiny_bundle, tmp_path, **settings)  # same id, no failpoint
        out = consume(kafka, topics.enriched, timeout=90, until=lambda r: worker.proc.poll() is not None
                      or {(x.key.decode(), 1) for x in r} >= sent)
        assert worker.proc.poll() is None, f"the restarted worker exited:\n{worker.log()[-3000:]}"
    finally:
        worker.stop()
    after = [r for r in out if r.offset >= start[r.partition]]
    assert after, f"nothing enriched after the restart:\n{worker.log()[-3000:]}"
    gap = min(r.timestamp for r in after) / 1000 - restarted_at
    print(f"static member: first output {gap:.1f} s after the restart (session timeout 30 s); "
          f"{sum(start.values())} enriched before the kill")
    assert sum(start.values()) < len(records), "the kill came mid-stream"
    assert gap < 15, "the restarted worker waited for its own dead member's session to time out"
    assert _report("kill -9 + static restart", sent, out) == 0


def _state_survives(kafka, topics, bundle, tmp_path, store: str) -> int:
    """p1 v5, kill -9, restart: v3 is stale (skipped, no record), v6 is enriched. Returns how many
    changelog records the restarted worker replayed."""
    port = free_port()
    settings = {"store": store, "instance_id": f"{topics.group}-worker-0", "data_dir": str(tmp_path / "state"),
                "metrics_port": port}
    changelog = f"{topics.group}-{STATE_TABLE}-changelog"
    worker = WorkerProcess(kafka, topics, bundle, tmp_path, **settings)
    try:
        worker.wait_ready()
        produce(kafka, topics.input, [(b"p1", event("p1", 5, "Nike red running shoes"))])
        consume(kafka, topics.enriched, count=1, timeout=60)
        # The kill comes once the input offset is committed (faust flushes the producer, changelog
        # included, before it commits): this is about the state surviving, not about redoing a batch.
        _wait_committed(kafka, topics)
        assert sum(end_offsets(kafka, changelog).values()) == 1, "p1's entry is in the changelog"
        worker.kill()
        worker = WorkerProcess(kafka, topics, bundle, tmp_path, **settings)
        # Same key, same partition: v3 is handled before v6.
        produce(kafka, topics.input, [(b"p1", event("p1", 3, "Nike blue running shoes")),
                                      (b"p1", event("p1", 6, "Nike green running shoes"))])
        out = consume(kafka, topics.enriched, timeout=90, until=lambda r: worker.proc.poll() is not None
                      or any(orjson.loads(x.value)["version"] == 6 for x in r))
        versions = [orjson.loads(r.value)["version"] for r in out]
        assert 6 in versions, f"v6 was not enriched after the restart:\n{worker.log()[-3000:]}"
        deadline = time.monotonic() + 10     # the counter moves just after the batch's records are acked
        while (counters := scrape(port)).get(STALE, 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        log = worker.log()
    finally:
        worker.stop()
    print(f"{store}: enriched versions of p1 {versions}; stale skipped {counters.get(STALE, 0):.0f}; "
          f"restart replayed {changelog_replay(log)} changelog records")
    assert 3 not in versions, "v3 was enriched: the restarted worker had lost p1's state (v5)"
    assert counters.get(STALE) == 1
    return changelog_replay(log)


def test_rocksdb_state_survives_kill_9_without_replaying_the_changelog(kafka, topics, tiny_bundle, tmp_path):
    replayed = _state_survives(kafka, topics, tiny_bundle, tmp_path, "rocksdb")
    assert replayed == 0, "the local RocksDB store was up to date: nothing to read from the changelog"


def test_memory_state_is_replayed_from_the_changelog_after_kill_9(kafka, topics, tiny_bundle, tmp_path):
    replayed = _state_survives(kafka, topics, tiny_bundle, tmp_path, "memory")
    assert replayed is not None and replayed >= 1, "the memory store starts empty and reads the changelog"
