"""The pipeline serving now: one immutable ``Pipeline`` per loaded bundle, swapped whole between
batches when the model store's pointer changes, so no batch ever sees half of two bundles."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from stream.service import metrics
from stream.service.settings import Settings
from stream.tagging.bundle import POINTER, BundleError, resolve
from stream.tagging.pipeline import Pipeline

log = logging.getLogger("tagstream.worker")


class ServingPipeline:
    """Holds the current pipeline; ``maybe_reload`` swaps it for the store's new bundle."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = Path(settings.bundle)
        self.pipeline = self._load()
        self._stamp = self._pointer_stamp()
        self._checked = time.monotonic()

    def _load(self) -> Pipeline:
        s = self.settings
        pipeline = Pipeline.load(self.path, variant=s.variant, device=s.device, threads=s.threads or None,
                                 batch_size=max(s.max_batch, 1))
        tagger = pipeline.tagger
        metrics.MODEL_INFO.info({"name": tagger.model_name, "version": tagger.model_version,
                                 "variant": tagger.variant, "provider": tagger.providers[0]})
        log.info("serving %s (%s, %s) from %s", pipeline.bundle.model_id, tagger.variant, tagger.providers[0],
                 pipeline.bundle.path)
        return pipeline

    def _pointer_stamp(self) -> tuple:
        pointer = self.path / POINTER
        try:
            return (pointer.read_text(encoding="utf-8").strip(), pointer.stat().st_mtime_ns)
        except OSError:
            return (str(resolve(self.path)), 0)

    def maybe_reload(self) -> Pipeline:
        """Called between batches (in the inference thread): never while a batch is tagged. Returns
        the pipeline the next batch uses."""
        if time.monotonic() - self._checked < self.settings.reload_interval:
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
