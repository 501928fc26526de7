"""Fixes for faust-streaming 0.15.3 behaviours the worker depends on; each says what it fixes and why.

Nothing in faust is patched in place: the worker installs these through faust's own extension
points (``App(TableManager=...)``) or wraps the one call that needs them.
"""

from __future__ import annotations

import logging
import weakref
from contextlib import contextmanager
from typing import Any, Iterator

from faust.streams import _current_event
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery

log = logging.getLogger("tagstream.worker")


class SeekThenDeliverRecovery(Recovery):
    """Faust's recovery with the input held back until the seek to committed offsets is done.

    After table recovery, faust-streaming 0.15.3 resumes the input partitions while the consumer's
    flow is still on (it was turned on to read the changelogs), awaits the seek to the committed
    offsets, and only then calls ``flow_control.resume()``, which empties every stream queue. Records
    fetched from the committed position during that await were queued, marked as read, and then
    thrown away with the queue: never delivered, never acked, so the committed offset stopped below
    them until the next restart. Stopping the flow first means nothing is delivered until the queues
    are cleared and the flow is resumed, and then delivery starts at the committed offset.
    """

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.app.consumer.stop_flow()
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


async def reseek_stalled_consumer(app: Any, topic: str, idle: float, lags: dict[int, int]) -> None:
    """The stall watchdog's repair: log the consumer's state (for the record), then redo what
    recovery ends with: stop the flow, seek to the committed offsets, clear the stream queues
    (``flow_control.resume`` empties them: anything stale goes), resume.

    Seen rarely after a restart with faust-streaming 0.15.3: the consumer ready, lag on its
    partitions, and nothing delivered; the cause is not known, so the state is logged in full.
    """
    consumer = app.consumer
    log.warning("no batch for %.0f s with %d events waiting (lag %s); consumer flow=%s, paused=%s, read=%s; "
                "seeking to the committed offsets and resuming", idle, sum(lags.values()), lags,
                consumer.flow_active, sorted(tp.partition for tp in consumer._paused_partitions if tp.topic == topic),
                {tp.partition: o for tp, o in consumer._read_offset.items() if tp.topic == topic})
    consumer.stop_flow()
    await consumer.perform_seek()
    app.flow_control.resume()
    consumer.resume_flow()
    consumer.resume_partitions({tp for tp in consumer.assignment() if tp.topic == topic})
