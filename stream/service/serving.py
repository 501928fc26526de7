"""The pipeline serving now: one immutable ``Pipeline`` per loaded bundle, swapped whole between
batches when the model store's pointer changes, so no batch ever sees half of two bundles; and the
lanes that run batches through it, several at once when the worker has more than one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator, Iterable

from stream.service import metrics
from stream.service.settings import Settings
from stream.tagging.bundle import POINTER, BundleError, resolve
from stream.tagging.pipeline import Pipeline

log = logging.getLogger("tagstream.worker")


class ServingPipeline:
    """Holds the current pipeline; ``maybe_reload`` swaps it for the store's new bundle."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lanes = settings.lanes if settings.pipeline else 1     # one batch at a time: one lane
        self.path = Path(settings.bundle)
        self.pipeline = self._load()
        self._stamp = self._pointer_stamp()
        self._checked = time.monotonic()

    @property
    def threads(self) -> int | None:
        """ONNX Runtime threads per call: the setting, or the cores shared among the lanes (None:
        one lane, onnxruntime's own default of one per core)."""
        s = self.settings
        if s.threads or self.lanes == 1:
            return s.threads or None
        return max(1, (os.cpu_count() or 1) // self.lanes)

    def _load(self) -> Pipeline:
        s = self.settings
        pipeline = Pipeline.load(self.path, variant=s.variant, device=s.device, threads=self.threads,
                                 batch_size=max(s.max_batch, 1))
        tagger = pipeline.tagger
        metrics.MODEL_INFO.info({"name": tagger.model_name, "version": tagger.model_version,
                                 "variant": tagger.variant, "provider": tagger.providers[0]})
        threads = self.threads or os.cpu_count() or 1
        log.info("serving %s (%s, %s) from %s, %d lane%s of %d thread%s", pipeline.bundle.model_id, tagger.variant,
                 tagger.providers[0], pipeline.bundle.path, self.lanes, "s" * (self.lanes > 1), threads,
                 "s" * (threads > 1))
        return pipeline

    def _pointer_stamp(self) -> tuple:
        pointer = self.path / POINTER
        try:
            return (pointer.read_text(encoding="utf-8").strip(), pointer.stat().st_mtime_ns)
        except OSError:
            return (str(resolve(self.path)), 0)

    @property
    def reload_due(self) -> bool:
        return time.monotonic() - self._checked >= self.settings.reload_interval

    def maybe_reload(self) -> Pipeline:
        """Called before a batch, off the event loop (a load takes seconds), one call at a time
        (``Lanes`` calls it under its lock); a batch in the model keeps the pipeline it started
        with. Returns the pipeline the next batch uses."""
        if not self.reload_due:
            return self.pipeline
        self._checked = time.monotonic()
        stamp = self._pointer_stamp()
        if stamp == self._stamp:
            return self.pipeline
        self._stamp = stamp
        try:
            self.pipeline = self._load()
            metrics.MODEL_RELOADS.labels("loaded").inc()
        except (BundleError, ValueError, OSError) as err:
            # A bad bundle never replaces a good one: keep serving, say why.
            metrics.MODEL_RELOADS.labels("refused").inc()
            log.error("new bundle refused, still serving %s: %s", self.pipeline.bundle.model_id, err)
        return self.pipeline


class Lanes:
    """The inference threads, one batch each. A batch enters with its product ids: it waits for the
    earlier batches in the model that hold any of them (their new state must be read first, or an
    update would be compared with the state before the last one), and gets its pipeline in the
    order the batches entered, so a reload never puts a later batch on an older bundle."""

    def __init__(self, models: ServingPipeline, lanes: int) -> None:
        self.models = models
        self.executor = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="inference")
        self._picking = asyncio.Lock()
        self._holding: dict[str, asyncio.Future] = {}      # product id -> the batch in the model with it

    @contextlib.asynccontextmanager
    async def batch(self, products: Iterable[str]) -> AsyncIterator[Pipeline]:
        products = list(products)
        done = asyncio.get_running_loop().create_future()
        async with self._picking:
            earlier = {self._holding[p] for p in products if p in self._holding}
            for product in products:
                self._holding[product] = done
            pipeline = self.models.pipeline
            if self.models.reload_due:
                pipeline = await asyncio.get_running_loop().run_in_executor(self.executor, self.models.maybe_reload)
        try:
            if earlier:
                await asyncio.wait(earlier)
            yield pipeline
        finally:
            done.set_result(None)
            for product in products:
                if self._holding.get(product) is done:
                    del self._holding[product]
