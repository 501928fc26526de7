"""The worker's batch pipeline (stream/service/flow.py) with stand-in events: overlap, order, holds, acks."""

from __future__ import annotations

import asyncio

import pytest

from stream.service.flow import BatchFlow


class Message:
    def __init__(self) -> None:
        self.refcount = 1          # faust's own reference, taken back by take_events' ack

    def incref(self) -> None:
        self.refcount += 1


class Event:
    def __init__(self, n: int) -> None:
        self.n, self.message = n, Message()


class Recorder:
    """prepare/deliver/ack that log what happened, with gates a test can hold shut."""

    def __init__(self) -> None:
        self.log: list[tuple] = []
        self.acked: list[int] = []
        self.model_gate = asyncio.Event()
        self.model_gate.set()
        self.delivery_gate = asyncio.Event()
        self.delivery_gate.set()
        self.failed: list[BaseException] = []

    async def prepare(self, events):
        self.log.append(("model", [e.n for e in events]))
        await self.model_gate.wait()
        return [e.n * 10 for e in events]

    async def deliver(self, events, prepared):
        self.log.append(("deliver", [e.n for e in events], prepared))
        await self.delivery_gate.wait()

    async def ack(self, event):
        event.message.refcount -= 1
        self.acked.append(event.n)

    def fail(self, err):
        self.failed.append(err)


async def take(flow: BatchFlow, events: list[Event]) -> None:
    """What the agent does, and what faust's take_events does on the next take: its own ack."""
    await flow.put(events)
    for e in events:
        e.message.refcount -= 1


def started(max_batch: int) -> tuple[Recorder, BatchFlow]:
    r = Recorder()
    flow = BatchFlow(max_batch, r.prepare, r.deliver, r.ack, r.fail)
    flow.start()
    return r, flow


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def run(coro):
    return asyncio.run(coro)


def test_the_next_batch_is_in_the_model_while_the_last_one_is_delivered_and_nothing_is_acked_early():
    async def scenario():
        r, flow = started(4)
        r.delivery_gate.clear()                      # publishing is slow
        first = [Event(i) for i in range(4)]
        await take(flow, first)
        await settle()
        second = [Event(i) for i in range(4, 8)]
        await take(flow, second)
        await settle()
        # batch 2 went through the model while batch 1 waits on its publish
        assert r.log == [("model", [0, 1, 2, 3]), ("deliver", [0, 1, 2, 3], [0, 10, 20, 30]),
                         ("model", [4, 5, 6, 7])]
        # faust's own acks happened; the flow's hold keeps every offset uncommittable
        assert r.acked == [] and all(e.message.refcount == 1 for e in first + second)
        assert flow.busy
        r.delivery_gate.set()
        await settle()
        assert r.acked == list(range(8)) and all(e.message.refcount == 0 for e in first + second)
        assert not flow.busy and not r.failed
        await flow.stop()
    run(scenario())


def test_takes_that_arrive_while_the_model_is_busy_go_in_together_up_to_max_batch():
    async def scenario():
        r, flow = started(5)
        r.model_gate.clear()
        await take(flow, [Event(0)])                 # an idle model starts at once, with one event
        await settle()
        for n in range(1, 4):                        # three single takes while it works...
            await take(flow, [Event(n)])
        await take(flow, [Event(n) for n in range(4, 9)])    # ...and one of five
        r.model_gate.set()
        await settle()
        batches = [entry[1] for entry in r.log if entry[0] == "model"]
        assert batches == [[0], [1, 2, 3, 4, 5], [6, 7, 8]]
        assert r.acked == list(range(9))
        await flow.stop()
    run(scenario())


def test_a_full_waiting_batch_makes_the_agent_wait():
    async def scenario():
        r, flow = started(2)
        r.model_gate.clear()
        await take(flow, [Event(0), Event(1)])
        await settle()                               # in the model
        await take(flow, [Event(2), Event(3)])       # waits, ready: a full batch
        blocked = asyncio.ensure_future(take(flow, [Event(4)]))
        await settle()
        assert not blocked.done()
        r.model_gate.set()
        await settle()
        assert blocked.done()
        assert r.acked == [0, 1, 2, 3, 4]
        await flow.stop()
    run(scenario())


@pytest.mark.parametrize("stage", ["model", "deliver"])
def test_a_failing_stage_stops_the_flow_and_acks_nothing_of_its_batch(stage):
    async def scenario():
        r = Recorder()

        async def broken(*args):
            raise RuntimeError("broken")
        flow = BatchFlow(2, broken if stage == "model" else r.prepare,
                         broken if stage == "deliver" else r.deliver, r.ack, r.fail)
        flow.start()
        events = [Event(0), Event(1)]
        await take(flow, events)
        await settle()
        assert [str(e) for e in r.failed] == ["broken"]
        assert r.acked == [] and all(e.message.refcount == 1 for e in events)
        await flow.stop()
    run(scenario())


def test_stopping_leaves_what_is_in_flight_unacked_and_is_not_a_failure():
    async def scenario():
        r, flow = started(2)
        r.delivery_gate.clear()
        events = [Event(0), Event(1)]
        await take(flow, events)
        await settle()
        await flow.stop()
        assert r.acked == [] and not r.failed and all(e.message.refcount == 1 for e in events)
    run(scenario())


def test_with_two_lanes_two_batches_are_in_the_model_at_once_and_are_delivered_in_the_order_taken():
    async def scenario():
        r = Recorder()
        gates = {0: asyncio.Event(), 2: asyncio.Event()}     # per batch, by its first event

        async def prepare(events):
            r.log.append(("model", [e.n for e in events]))
            await gates[events[0].n].wait()
            return [e.n * 10 for e in events]
        flow = BatchFlow(2, prepare, r.deliver, r.ack, r.fail, lanes=2)
        flow.start()
        await take(flow, [Event(0), Event(1)])
        await settle()
        await take(flow, [Event(2), Event(3)])
        await settle()
        assert r.log == [("model", [0, 1]), ("model", [2, 3])]     # both in the model
        gates[2].set()                                              # the later batch finishes first...
        await settle()
        assert [e[0] for e in r.log] == ["model", "model"] and r.acked == []    # ...and waits for the first
        gates[4] = asyncio.Event()
        await take(flow, [Event(4), Event(5)])
        await settle()
        assert r.log[-1] == ("model", [4, 5])                       # in the lane the second batch left
        gates[4].set()
        await settle()
        assert r.acked == []                                        # still behind the first
        gates[0].set()
        await settle()
        assert [e[1] for e in r.log if e[0] == "deliver"] == [[0, 1], [2, 3], [4, 5]]
        assert r.acked == list(range(6)) and not flow.busy and not r.failed
        await flow.stop()
    run(scenario())


def test_with_two_lanes_a_failed_later_batch_lets_the_earlier_one_finish_and_is_not_acked():
    async def scenario():
        r = Recorder()
        first_gate = asyncio.Event()

        async def prepare(events):
            if events[0].n == 2:
                raise RuntimeError("broken")
            await first_gate.wait()
            return [e.n for e in events]
        flow = BatchFlow(2, prepare, r.deliver, r.ack, r.fail, lanes=2)
        flow.start()
        first, second = [Event(0), Event(1)], [Event(2), Event(3)]
        await take(flow, first)
        await settle()
        await take(flow, second)
        await settle()
        assert not r.failed                          # the failure waits its turn
        first_gate.set()
        await settle()
        assert r.acked == [0, 1] and [str(e) for e in r.failed] == ["broken"]
        assert all(e.message.refcount == 1 for e in second)
        await flow.stop()
    run(scenario())


def test_lanes_must_be_at_least_one():
    with pytest.raises(ValueError, match="lanes must be at least 1"):
        BatchFlow(2, None, None, None, None, lanes=0)
