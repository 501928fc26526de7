"""The worker's inference lanes (stream/service/serving.Lanes): batches that share a product are
kept in order, others run side by side, and a reload never puts a later batch on an older bundle."""

from __future__ import annotations

import asyncio
import threading

from stream.service.serving import Lanes


class Models:
    """A stand-in ServingPipeline: ``pipeline`` names the bundle; a due reload swaps it."""

    def __init__(self) -> None:
        self.pipeline, self.reload_due, self.loaded = "v1", False, threading.Event()

    def maybe_reload(self):
        self.loaded.wait(5)           # a load takes a while, off the loop
        self.pipeline, self.reload_due = "v2", False
        return self.pipeline


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_batch_waits_for_the_earlier_batches_holding_its_products_and_no_other():
    async def scenario():
        lanes, log = Lanes(Models(), 2), []
        release = {name: asyncio.Event() for name in "abc"}

        async def batch(name, products):
            async with lanes.batch(products):
                log.append(f"{name} in")
                await release[name].wait()
            log.append(f"{name} out")
        a = asyncio.ensure_future(batch("a", ["p1", "p2"]))
        await settle()
        b = asyncio.ensure_future(batch("b", ["p2", "p3"]))      # shares p2 with a
        c = asyncio.ensure_future(batch("c", ["p4"]))
        await settle()
        assert log == ["a in", "c in"]                          # c runs beside a; b waits for a
        release["a"].set()
        await settle()
        assert log == ["a in", "c in", "a out", "b in"]
        release["b"].set()
        release["c"].set()
        await asyncio.gather(a, b, c)
        assert lanes._holding == {}                             # nothing left held
        lanes.executor.shutdown()
    asyncio.run(scenario())


def test_batches_get_their_pipeline_in_the_order_they_entered_across_a_reload():
    async def scenario():
        models = Models()
        lanes, got = Lanes(models, 2), {}

        async def batch(name, products):
            async with lanes.batch(products) as pipeline:
                got[name] = pipeline
        first = asyncio.ensure_future(batch("first", ["p1"]))
        await settle()
        models.reload_due = True
        second = asyncio.ensure_future(batch("second", ["p2"]))   # reloads (slowly, off the loop)
        await settle()
        third = asyncio.ensure_future(batch("third", ["p3"]))     # enters while the load runs
        await settle()
        assert got == {"first": "v1"}
        models.loaded.set()
        await asyncio.gather(first, second, third)
        assert got == {"first": "v1", "second": "v2", "third": "v2"}
        lanes.executor.shutdown()
    asyncio.run(scenario())
