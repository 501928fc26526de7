"""Fixes for faust-streaming 0.15.3 behaviours the worker depends on; each says what it fixes and why.

Nothing in faust is patched in place: the worker installs these through faust's own extension
points (``App(TableManager=...)``) or wraps the one call that needs them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from contextlib import contextmanager
from typing import Any, Iterator

from aiokafka.errors import IllegalStateError, KafkaError
from faust.streams import _current_event
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery

from stream.service.failpoints import failpoint
from stream.service.settings import Settings

log = logging.getLogger("tagstream.worker")

FETCH_SETTLE_SECONDS = 2.5     # a fetch waits at most 1 s (faust's getmany timeout) for records


class SeekThenDeliverRecovery(Recovery):
    """Faust's recovery with the input held back until every input partition is positioned.

    After table recovery, faust-streaming 0.15.3 resumes the input partitions while the consumer's
    flow is still on (it was turned on to read the changelogs), awaits the seek to the committed
    offsets, and only then calls ``flow_control.resume()``, which empties every stream queue. Records
    fetched from the committed position during that await were queued, marked as read, and then
    thrown away with the queue: never delivered, never acked. Stopping the flow first means nothing
    is delivered until the queues are cleared and the flow is resumed.

    That seek alone is not enough: aiokafka's ``seek_to_committed`` skips a partition whose
    committed offset is 0 or absent, and faust may already have taken (and silently dropped) such a
    partition's records: while the changelogs are read its fetch request holds the set of active
    partitions by reference, and once that set empties aiokafka hands over every partition's
    records. With nothing committed (a worker that died before its first commit) those records were
    skipped for good. So every input partition is sought explicitly (``position_inputs``).
    """

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        consumer.stop_flow()
        if self.app.consumer_generation_id == generation_id:    # else faust's own code returns early
            inputs = {tp for tp in consumer.assignment() if not self._is_changelog_tp(tp)}
            try:
                if failpoint("skip_fetched") and inputs:     # as if faust had taken and dropped them all
                    await consumer.seek_wait(dict(await consumer.highwaters(*inputs)))
                await position_inputs(consumer, inputs)
            except (KafkaError, IllegalStateError, asyncio.TimeoutError) as err:  # a rebalance came between
                log.warning("positioning the input partitions failed (%s: %s); faust's seek follows",
                            type(err).__name__, err)
        await super().on_recovery_completed(generation_id)


class SeekThenDeliverTableManager(TableManager):
    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekThenDeliverRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


@contextmanager
def as_current_event(event: Any | None) -> Iterator[None]:
    """Table reads and writes as if ``event`` were the event being processed.

    A faust table finds the partition of a write (its changelog partition, and with the RocksDB
    store the database it goes into) through ``current_event()``, which a batch taken with
    ``take_events`` does not set to anything meaningful. Writing a product's state under the event
    that carried it keeps state, changelog and input co-partitioned. ``None`` makes a RocksDB read
    look in every partition's database instead of only the current event's.
    """
    token = _current_event.set(weakref.ref(event) if event is not None else None)
    try:
        yield
    finally:
        _current_event.reset(token)


async def position_inputs(consumer: Any, tps: set) -> dict:
    """Seek each partition to its committed offset, or where the group has none to its earliest
    offset (the worker's ``auto_offset_reset``); the flow must be stopped. Returns the targets.

    First waits (at most ``FETCH_SETTLE_SECONDS``) for a fetch that started before the flow stopped:
    records it returned after the seek would move the position past them again.
    """
    if not tps:
        return {}
    subscription = consumer._thread._consumer._subscription
    deadline = time.monotonic() + FETCH_SETTLE_SECONDS
    while subscription.fetcher_idle_time == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    committed = await consumer.seek_to_committed()
    missing = [tp for tp in tps if (committed.get(tp) or 0) <= 0]
    earliest = await consumer.earliest_offsets(*missing) if missing else {}
    targets = {tp: committed[tp] if tp not in earliest else earliest[tp] for tp in tps}
    await consumer.seek_wait(targets)
    return targets


async def reseek_stalled_consumer(app: Any, topic: str, idle: float, lags: dict[int, int]) -> None:
    """The stall watchdog's repair: log the consumer's state (for the record), then redo what
    recovery ends with: stop the flow, position every input partition (``position_inputs``), clear
    the stream queues (``flow_control.resume`` empties them: anything stale goes), resume."""
    consumer = app.consumer
    tps = {tp for tp in consumer.assignment() if tp.topic == topic}
    log.warning("no batch for %.0f s with %d events waiting (lag %s); consumer flow=%s, paused=%s, buffered=%s, "
                "active=%s, read=%s; seeking to the committed offsets and resuming", idle, sum(lags.values()), lags,
                consumer.flow_active, _partitions(consumer._paused_partitions, topic),
                _partitions(consumer._buffered_partitions, topic),
                _partitions(consumer._active_partitions or (), topic),
                {tp.partition: o for tp, o in consumer._read_offset.items() if tp.topic == topic})
    consumer.stop_flow()
    targets = await position_inputs(consumer, tps)
    log.info("input partitions sought to %s", {tp.partition: o for tp, o in sorted(targets.items())})
    consumer._buffered_partitions.difference_update(tps)
    app.flow_control.resume()
    if failpoint("stall_consumer") == "hard":       # a repair that does not help: the escalation's test
        return
    consumer.resume_flow()
    consumer.resume_partitions(tps)


async def rejoin_group(app: Any) -> None:
    """Ask the group coordinator for a rebalance (aiokafka's own rejoin, on the consumer's thread):
    faust then revokes, assigns, recovers and positions every partition as at a start."""
    thread = app.consumer._thread
    coordinator = thread._consumer._coordinator

    async def request() -> None:
        coordinator.request_rejoin()

    await thread.call_thread(request)


def _partitions(tps, topic: str) -> list[int]:
    return sorted(tp.partition for tp in tps if tp.topic == topic)


# Fetches under a trickle of events (bench/stream.py at 70% load, 2,000 events: p99 627 -> 324 ms).
# The wait is the worker's fetch_max_wait setting: once the input is read up, it is how often the
# consumer asks again (20 ms: ~45 fetches a second; 100 ms cut the broker's CPU by a third, gained
# no throughput measurable, and put p99 at 70% load at 332-762 ms against 183-433: README, #18).
FETCH_MIN_BYTES = 65536
FETCH_MAX_WAIT_MS = round(Settings.fetch_max_wait * 1000)     # the setting's default, one place for it


def batch_fetches(app: Any, min_bytes: int = FETCH_MIN_BYTES, max_wait_ms: int = FETCH_MAX_WAIT_MS) -> bool:
    """Let the broker hold a fetch until ``min_bytes`` are there or ``max_wait_ms`` have passed.

    faust-streaming 0.15.3 builds its aiokafka consumer with no ``fetch_min_bytes`` (1 byte) and
    offers no setting for it: the broker answers each fetch as soon as one record is there, so a
    steady trickle of events is fetched a few records at a time, and on shared cores the broker's
    and the client's work per request slows inference down. The values are set on the running
    consumer's fetcher, which reads them for every request; returns False (and changes nothing)
    when the consumer has no such fetcher (another faust or aiokafka version).
    """
    thread = getattr(app.consumer, "_thread", None)
    fetcher = getattr(getattr(thread, "_consumer", None), "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "_fetch_min_bytes") or not hasattr(fetcher, "_fetch_max_wait_ms"):
        return False
    fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = min_bytes, max_wait_ms
    return True
