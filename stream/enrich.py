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

from stream.decode import TaggedSpan
from stream.events import (INFERENCE_FAILED, Invalid, ProductEvent, RawEvent, dead_letter_record, enriched_record,
                           now_iso, parse_event)
from stream.profile import normalise_value
from stream.taxonomy import Taxonomy

log = logging.getLogger(__name__)

ENRICHED, DLQ = "enriched", "dlq"


class ProductTagger(Protocol):
    model_name: str
    model_version: str

    def tag_products(self, products: Sequence[dict]) -> list[list[TaggedSpan]]: ...


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
    tagged: list[tuple[ProductEvent, list[dict]]] = field(default_factory=list)  # enriched, with their tags


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 1_048_576
    max_chars: int = 20_000


def tag_dicts(spans: Sequence[TaggedSpan], taxonomy: Taxonomy | None) -> list[dict]:
    out = []
    for s in spans:
        node = taxonomy.lookup(s.type, s.text) if taxonomy else None
        out.append({"tag": node.id if node else normalise_value(s.text), "type": s.type,
                    "path": taxonomy.path(node) if node else [], "text": s.text,
                    "field": s.field, "start": s.start, "end": s.end, "confidence": round(s.confidence, 4),
                    "in_taxonomy": node is not None})
    return out


def _tag_isolating_failures(tagger: ProductTagger, products: list[dict]) -> list[list[TaggedSpan] | Exception]:
    """Tag a batch; if it raises, split it in halves until the offending products are found."""
    try:
        return list(tagger.tag_products(products))
    except Exception as err:  # a text that breaks tokenizer or model must not stop the stream
        if len(products) == 1:
            log.warning("inference failed for one product: %r", err)
            return [err]
        middle = len(products) // 2
        return (_tag_isolating_failures(tagger, products[:middle])
                + _tag_isolating_failures(tagger, products[middle:]))


def enrich(batch: Sequence[RawEvent], tagger: ProductTagger, state: Mapping[str, dict], *,
           taxonomy: Taxonomy | None = None, limits: Limits = Limits(), worker: str = "tagstream",
           skip_unchanged: bool = True) -> BatchResult:
    """Decide, per event in order: dead-letter, skip as stale, re-use unchanged tags, tombstone,
    or tag. Everything that needs the model is tagged in one call. ``skip_unchanged=False`` sends
    unchanged content through the model too (the baseline the update-mix benchmark compares with)."""
    model = {"name": tagger.model_name, "version": tagger.model_version}
    model_id = f"{model['name']}:{model['version']}"
    counts: Counter = Counter(consumed=len(batch))
    work: dict[str, dict] = {}
    plan: list[tuple[str, RawEvent, object]] = []   # (action, raw, detail) in input order
    pending: list[ProductEvent] = []

    def prior(pid: str) -> dict | None:
        return work[pid] if pid in work else state.get(pid)

    for raw in batch:
        event = parse_event(raw, max_bytes=limits.max_bytes, max_chars=limits.max_chars)
        if isinstance(event, Invalid):
            plan.append(("dlq", raw, event))
            continue
        before = prior(event.product_id)
        if before is not None and event.version is not None and event.version < before["version"]:
            counts["skipped_stale"] += 1
            plan.append(("skip", raw, event))
            continue
        if event.op == "delete":
            version = event.version if event.version is not None else (before or {}).get("version", 0)
            work[event.product_id] = {"version": version, "deleted": True}
            plan.append(("delete", raw, event))
            continue
        unchanged = (skip_unchanged and before is not None and not before.get("deleted")
                     and before.get("content_hash") == event.content_hash and before.get("model") == model_id)
        if unchanged:
            counts["skipped_unchanged"] += 1
            source = before.get("pending")
            work[event.product_id] = {**before, "version": event.version}
            plan.append(("reuse", raw, (event, source if source is not None else before["tags"])))
            continue
        index = len(pending)
        pending.append(event)
        work[event.product_id] = {"version": event.version, "content_hash": event.content_hash, "model": model_id,
                                  "pending": index, "deleted": False}
        plan.append(("tag", raw, (event, index)))

    tagged = _tag_isolating_failures(tagger, [{"title": e.title, "description": e.description} for e in pending]) \
        if pending else []
    tags = [err if isinstance(err, Exception) else tag_dicts(err, taxonomy) for err in tagged]

    enriched_at = now_iso()
    outputs: list[Output] = []
    tagged_products: list[tuple[ProductEvent, list[dict]]] = []
    for action, raw, detail in plan:
        if action == "dlq":
            counts[f"dlq_{detail.code}"] += 1
            outputs.append(Output(DLQ, raw.key, dead_letter_record(raw, detail.code, detail.reason, worker), raw,
                                  detail.code))
        elif action == "delete":
            counts["deleted"] += 1
            outputs.append(Output(ENRICHED, detail.product_id.encode("utf-8"), None, raw))
        elif action in ("tag", "reuse"):
            event, source = detail
            result = tags[source] if isinstance(source, int) else source
            if isinstance(result, Exception):
                counts[f"dlq_{INFERENCE_FAILED}"] += 1
                reason = f"inference failed: {type(result).__name__}: {str(result)[:300]}"
                outputs.append(Output(DLQ, raw.key, dead_letter_record(raw, INFERENCE_FAILED, reason, worker), raw,
                                      INFERENCE_FAILED))
                continue
            counts["enriched"] += 1
            tagged_products.append((event, result))
            outputs.append(Output(ENRICHED, event.product_id.encode("utf-8"),
                                  enriched_record(event, result, model, enriched_at), raw))
    # Pending references are resolved now that the model has run.
    new_state = {}
    for pid, entry in work.items():
        entry = dict(entry)
        index = entry.pop("pending", None)
        if index is not None:
            if isinstance(tags[index], Exception):
                continue
            entry["tags"] = tags[index]
        new_state[pid] = entry
    return BatchResult(outputs, new_state, counts, texts_tagged=len(pending), tagged=tagged_products)
