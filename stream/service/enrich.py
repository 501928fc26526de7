"""The pure heart of the worker: a batch of raw events in, the records to publish out.

No Kafka here (STYLE: Kafka at the edge). The agent passes a snapshot of per-product state,
publishes the outputs in order, waits for the broker's acks, and only then stores the
returned state and lets the input offsets be committed.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

from stream.service.events import (INFERENCE_FAILED, OUTPUT_TOO_LARGE, Invalid, Limits, ProductEvent, RawEvent,
                                   dead_letter_record, enriched_record, now_iso, parse_event)
from stream.tagging.pipeline import ProductTags
from stream.tagging.spans import Tag

log = logging.getLogger(__name__)

ENRICHED, DLQ = "enriched", "dlq"


class ProductPipeline(Protocol):
    """What enrich needs of a loaded bundle (``stream.tagging.pipeline.Pipeline``)."""

    model: dict
    model_id: str

    def __call__(self, products: Sequence[Mapping]) -> list[ProductTags]: ...


@dataclass(frozen=True, slots=True)
class Output:
    kind: str                 # ENRICHED or DLQ
    key: bytes | None
    value: bytes | None       # None: a tombstone on the enriched topic
    source: RawEvent
    code: str | None = None   # dead-letter code


@dataclass
class BatchResult:
    outputs: list[Output]
    state: dict[str, dict]                       # product id -> new state, to store after publishing
    counts: Counter = field(default_factory=Counter)
    texts_tagged: int = 0                        # products sent through the model
    # Products the model tagged and that were published: their kept tags and per-text token counts.
    tagged: list[tuple[ProductEvent, ProductTags]] = field(default_factory=list)


def cap_tags(tags: Sequence[Tag], per_field: int) -> tuple[list[Tag], int]:
    """At most ``per_field`` tags per field, the most confident kept, in their reading order; and
    how many were dropped. A 20,000-character title can hold thousands of spans, and one enriched
    record must stay far below the broker's message limit."""
    by_field: dict[str, list[int]] = {}
    for i, tag in enumerate(tags):
        by_field.setdefault(tag.field, []).append(i)
    keep: list[int] = []
    for indices in by_field.values():
        keep += sorted(indices, key=lambda i: (-tags[i].confidence, i))[:per_field]
    return [tags[i] for i in sorted(keep)], len(tags) - len(keep)


def _is_stale(event: ProductEvent, before: dict | None) -> bool:
    """Older than what was handled; at or below a deletion marker (a replayed version must not bring
    a deleted product back)."""
    if before is None or event.version is None:
        return False
    return event.version < before["version"] or (before.get("deleted", False) and event.version <= before["version"])


def parse_batch(batch: Sequence[RawEvent], limits: Limits = Limits()) -> list[ProductEvent | Invalid]:
    return [parse_event(raw, limits) for raw in batch]


def _published(found: ProductTags, per_field: int) -> tuple[list[dict], int, ProductTags]:
    kept, dropped = cap_tags(found.tags, per_field)
    return [t.to_json() for t in kept], dropped, ProductTags(tuple(kept), found.texts)


def _tag_isolating_failures(pipeline: ProductPipeline, products: list[dict]) -> list[ProductTags | Exception]:
    """Tag a batch; if it raises, split it in halves until the offending products are found."""
    try:
        return list(pipeline(products))
    except Exception as err:  # a text that breaks tokenizer or model must not stop the stream
        if len(products) == 1:
            log.warning("inference failed for one product: %r", err)
            return [err]
        middle = len(products) // 2
        return (_tag_isolating_failures(pipeline, products[:middle])
                + _tag_isolating_failures(pipeline, products[middle:]))


def enrich(batch: Sequence[RawEvent], pipeline: ProductPipeline, state: Mapping[str, dict], *,
           limits: Limits = Limits(), worker: str = "tagstream",
           skip_unchanged: bool = True, parsed: Sequence[ProductEvent | Invalid] | None = None) -> BatchResult:
    """Decide, per event in order: dead-letter, skip as stale, re-use unchanged tags, tombstone,
    or tag. Everything that needs the model is tagged in one call. ``state`` is keyed by the
    value's product id (``parsed``, if the caller parsed the batch already to look its state up).
    ``skip_unchanged=False`` sends unchanged content through the model too (the baseline the
    update-mix benchmark compares with)."""
    model, model_id = pipeline.model, pipeline.model_id
    counts: Counter = Counter(consumed=len(batch))
    work: dict[str, dict] = {}
    plan: list[tuple[str, RawEvent, object]] = []   # (action, raw, detail) in input order
    pending: list[ProductEvent] = []

    def prior(pid: str) -> dict | None:
        return work[pid] if pid in work else state.get(pid)

    for raw, event in zip(batch, parsed if parsed is not None else parse_batch(batch, limits)):
        if isinstance(event, Invalid):
            plan.append(("dlq", raw, event))
            continue
        before = prior(event.product_id)
        if _is_stale(event, before):
            counts["skipped_stale"] += 1
            plan.append(("skip", raw, event))
            continue
        if event.op == "delete":
            version = event.version if event.version is not None else (before or {}).get("version", -1)
            work[event.product_id] = {"version": version, "deleted": True}
            plan.append(("delete", raw, event))
            continue
        unchanged = (skip_unchanged and before is not None and not before.get("deleted")
                     and before.get("content_hash") == event.content_hash and before.get("model") == model_id)
        if unchanged:
            counts["skipped_unchanged"] += 1
            source = before.get("pending")
            work[event.product_id] = {**before, "version": event.version}
            reused = source if source is not None else (before["tags"], before.get("tags_dropped", 0), None)
            plan.append(("reuse", raw, (event, reused)))
            continue
        index = len(pending)
        pending.append(event)
        work[event.product_id] = {"version": event.version, "content_hash": event.content_hash, "model": model_id,
                                  "pending": index, "deleted": False}
        plan.append(("tag", raw, (event, index)))

    found = _tag_isolating_failures(pipeline, [{"title": e.title, "description": e.description} for e in pending]) \
        if pending else []
    # Per product sent to the model: (kept tags as published, how many were dropped, what it found),
    # or the exception its tagging raised.
    tags = [err if isinstance(err, Exception) else _published(err, limits.max_tags_per_field) for err in found]
    outputs, tagged_products, oversized = _outputs(plan, tags, model, limits, worker, counts)
    # Pending references are resolved now that the model has run.
    new_state = {}
    for pid, entry in work.items():
        entry = dict(entry)
        index = entry.pop("pending", None)
        if index is not None:
            if isinstance(tags[index], Exception):
                continue
            entry["tags"], entry["tags_dropped"], _ = tags[index]
        if oversized.get(pid) == entry["version"]:
            # Its record was dead-lettered: nothing to re-use, and tags that large must not reach the
            # changelog either. The version stays, so older events remain stale.
            entry = {"version": entry["version"], "deleted": False}
        new_state[pid] = entry
    return BatchResult(outputs, new_state, counts, texts_tagged=len(pending), tagged=tagged_products)


def _outputs(plan, tags, model: dict, limits: Limits, worker: str,
             counts: Counter) -> tuple[list[Output], list[tuple[ProductEvent, ProductTags]], dict[str, int]]:
    """The records to publish, in input order, each bounded in size by construction; and the
    version of each product whose enriched record was too large to publish."""
    enriched_at = now_iso()
    outputs: list[Output] = []
    tagged_products: list[tuple[ProductEvent, ProductTags]] = []
    oversized: dict[str, int] = {}

    def dead_letter(raw: RawEvent, code: str, reason: str) -> None:
        counts[f"dlq_{code}"] += 1
        record = dead_letter_record(raw, code, reason, worker, limits.dlq_prefix_bytes)
        outputs.append(Output(DLQ, raw.key, record, raw, code))

    for action, raw, detail in plan:
        if action == "dlq":
            dead_letter(raw, detail.code, detail.reason)
        elif action == "delete":
            counts["deleted"] += 1
            outputs.append(Output(ENRICHED, detail.product_id.encode("utf-8"), None, raw))
        elif action in ("tag", "reuse"):
            event, source = detail
            result = tags[source] if isinstance(source, int) else source
            if isinstance(result, Exception):
                dead_letter(raw, INFERENCE_FAILED, f"inference failed: {type(result).__name__}: {str(result)[:300]}")
                continue
            kept, dropped, found = result
            value = enriched_record(event, kept, model, enriched_at, dropped)
            if len(value) > limits.max_output_bytes:
                dead_letter(raw, OUTPUT_TOO_LARGE, f"the enriched record would be {len(value)} bytes, the limit "
                                                   f"is {limits.max_output_bytes} (TAGSTREAM_MAX_OUTPUT_BYTES)")
                oversized[event.product_id] = event.version
                continue
            counts["enriched"] += 1
            if action == "tag":
                tagged_products.append((event, found))
            outputs.append(Output(ENRICHED, event.product_id.encode("utf-8"), value, raw))
    return outputs, tagged_products, oversized
