"""Faults on purpose, for the fault tests: set by ``TAGSTREAM_FAILPOINT=<name>:<arg>``, inert otherwise."""

from __future__ import annotations

import logging
import os
import signal
import time

from aiokafka.errors import KafkaError

from stream.tagging.pipeline import Pipeline

log = logging.getLogger("tagstream.failpoints")

_hits: dict[str, int] = {}


def failpoint(name: str) -> str | None:
    """Faults on purpose, for the fault tests, set by TAGSTREAM_FAILPOINT=<name>:<arg>.

    ``before_publish:<n>`` SIGKILLs the worker the n-th time it is between inference and publish;
    ``slow_inference:<seconds>`` makes every batch's inference that much slower (e.g. longer than the
    consumer's session timeout); ``poison_text:<text>`` makes the model raise on any batch holding a
    title that contains ``<text>`` (see ``PoisonedPipeline``); ``stall_consumer:1`` stops the consumer's
    flow after the first batch, the state the stall watchdog repairs (``stall_consumer:hard``: and
    its first repair leaves the flow stopped); ``fail_send:<n>`` makes the
    n-th output send raise, as a broker refusing a record would; ``skip_fetched:1`` moves every input
    partition to its end when recovery completes, as faust silently dropping fetched records does.
    """
    spec = os.environ.get("TAGSTREAM_FAILPOINT", "")
    if not spec.startswith(name + ":"):
        return
    arg = spec.split(":", 1)[1]
    if name in ("poison_text", "stall_consumer", "skip_fetched"):
        return arg
    if name == "slow_inference":
        time.sleep(float(arg))
        return
    _hits[name] = _hits.get(name, 0) + 1
    if name == "fail_send" and _hits[name] == int(arg):
        raise KafkaError(f"failpoint {spec}: the send is refused")
    if name == "before_publish" and _hits[name] == int(arg):
        log.warning("failpoint %s reached: killing this worker", spec)
        os.kill(os.getpid(), signal.SIGKILL)


class PoisonedPipeline:
    """The serving pipeline, raising like a broken tokenizer on batches with a poisoned title."""

    def __init__(self, pipeline: Pipeline, poison: str) -> None:
        self.pipeline, self.poison = pipeline, poison
        self.model, self.model_id = pipeline.model, pipeline.model_id

    def __call__(self, products):
        if any(self.poison in (p.get("title") or "") for p in products):
            raise RuntimeError(f"failpoint poison_text: the tokenizer broke on {self.poison!r}")
        return self.pipeline(products)
