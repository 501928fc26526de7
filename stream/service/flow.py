"""The worker's batches in a pipeline: while batch n is in the model, batch n+1 is taken and waits
ready, and batch n-1's outputs are published and its events acknowledged. The model never waits on
Kafka unless publishing is slower than inference.

Delivery is unchanged by the overlap. Faust's ``take_events`` acks a batch's events as soon as the
agent asks for the next batch, which here is before the batch's outputs exist. So each taken event
is held by one more reference on its message (``Message.incref``): faust's ack only takes that
reference back to one, and the offset can be committed only when this flow acks the event again,
after its batch's outputs are acked by the broker and its state is written. Batches are enriched
and delivered strictly in the order they were taken, so a partition's outputs keep their order.

Batching adapts to the load: the model takes everything that arrived while it was busy (up to
``max_batch`` events) and starts at once when it is idle; a quiet stream gets small batches and
low latency, a backlog gets full ones.

With ``lanes`` above one, that many batches are in the model at once (each on its own inference
thread); they are still delivered and acked in the order they were taken, whichever finishes
first. Keeping batches that share a product apart is ``prepare``'s business (the worker waits for
the earlier batch's state before it reads its own).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Sequence

log = logging.getLogger("tagstream.worker")

Prepare = Callable[[list], Awaitable[Any]]          # events -> what delivery needs (runs the model)
Deliver = Callable[[list, Any], Awaitable[None]]    # events, prepared -> outputs durable, state written
Ack = Callable[[Any], Awaitable[Any]]                # one event: faust's Stream.ack
Fail = Callable[[BaseException], None]               # must not return: stops the process uncommitted


class BatchFlow:
    """Two stages on the event loop (model, then delivery) fed by the agent through ``put``."""

    def __init__(self, max_batch: int, prepare: Prepare, deliver: Deliver, ack: Ack, fail: Fail,
                 lanes: int = 1) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, got {lanes}")
        self.max_batch = max_batch
        self._prepare, self._deliver, self._ack, self._fail = prepare, deliver, ack, fail
        self._waiting: list = []                  # taken, held, not yet in the model
        self._arrived = asyncio.Event()           # _waiting is not empty
        self._room = asyncio.Event()              # _waiting has room for another take
        self._room.set()
        self._lanes = asyncio.Semaphore(lanes)    # a free lane: the model may start another batch
        # (events, the batch's model task) in the order taken: in the model, or enriched and
        # waiting for delivery.
        self._ready: asyncio.Queue = asyncio.Queue(maxsize=lanes)
        self._held = 0                            # events taken and not yet acked
        self._tasks: list[asyncio.Task] = []
        self._in_model: set[asyncio.Task] = set()

    @property
    def busy(self) -> bool:
        """Some taken event is not acknowledged yet."""
        return self._held > 0

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._model_stage()), asyncio.ensure_future(self._delivery_stage())]
        for task in self._tasks:
            task.add_done_callback(self._stage_ended)

    async def stop(self) -> None:
        """At shutdown: what is not delivered stays unacked, so it is consumed again after a restart."""
        for task in self._tasks:
            task.remove_done_callback(self._stage_ended)
            task.cancel()
        for task in self._in_model:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._in_model, return_exceptions=True)
        self._tasks = []

    async def put(self, events: Sequence) -> None:
        """Hold the events (see the module's note) and queue them for the model; waits while a full
        batch is already waiting, so a slow model slows the taking (and faust pauses the fetch)."""
        await self._room.wait()
        for event in events:
            event.message.incref()
        self._held += len(events)
        self._waiting.extend(events)
        self._arrived.set()
        if len(self._waiting) >= self.max_batch:
            self._room.clear()

    async def _next_batch(self) -> list:
        await self._arrived.wait()
        batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
        if not self._waiting:
            self._arrived.clear()
        if len(self._waiting) < self.max_batch:
            self._room.set()
        return batch

    async def _model_stage(self) -> None:
        while True:
            await self._lanes.acquire()
            events = await self._next_batch()
            task = asyncio.ensure_future(self._prepare(events))
            self._in_model.add(task)
            task.add_done_callback(self._lane_freed)
            await self._ready.put((events, task))

    def _lane_freed(self, task: asyncio.Task) -> None:
        self._in_model.discard(task)
        self._lanes.release()

    async def _delivery_stage(self) -> None:
        while True:
            events, task = await self._ready.get()
            prepared = await task       # a failed model task fails this stage: nothing of it is acked
            await self._deliver(events, prepared)
            for event in events:
                await self._ack(event)
            self._held -= len(events)

    def _stage_ended(self, task: asyncio.Task) -> None:
        """A stage never ends by itself: whatever stopped it, the held events must not be acked.
        Cancelled means the worker is shutting down: what is held stays unacked (uncommitted)."""
        if task.cancelled():
            log.debug("a batch stage was cancelled with %d events unacknowledged", self._held)
            return
        self._fail(task.exception() or RuntimeError("a batch stage returned"))
