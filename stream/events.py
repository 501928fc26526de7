"""Event contracts: the input product event, the enriched record and the dead-letter record.

Validation turns raw Kafka bytes into a `ProductEvent` or an `Invalid` with an error code and a
human-readable reason; nothing is dropped silently.
"""

from __future__ import annotations

import base64
import hashlib
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson

ENRICHED_SCHEMA_VERSION = 1
DLQ_SCHEMA_VERSION = 1
OPS = ("upsert", "delete")

# Dead-letter codes: stable strings that dashboards and alerts group by.
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
INVALID_VALUE = "invalid_value"
TOO_LARGE = "too_large"
KEY_MISMATCH = "key_mismatch"
INFERENCE_FAILED = "inference_failed"


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One Kafka record as consumed: bytes and where it came from."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ProductEvent:
    product_id: str
    op: str
    version: int | None                 # None only for a tombstone
    title: str = ""
    description: str | None = None
    locale: str | None = None
    category_hint: str | None = None
    updated_at: str | None = None

    @property
    def content_hash(self) -> str:
        """What the tags depend on: title and description, NFC-normalised."""
        text = unicodedata.normalize("NFC", self.title) + "\x1f" + unicodedata.normalize("NFC", self.description or "")
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Invalid:
    code: str
    reason: str


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def parse_event(raw: RawEvent, *, max_bytes: int, max_chars: int) -> ProductEvent | Invalid:
    """Validate one input record; the key is the product id."""
    key = _key_text(raw.key)
    if raw.value is None:
        if not key:
            return Invalid(MISSING_FIELD, "tombstone without a usable key: cannot tell which product to delete")
        return ProductEvent(product_id=key, op="delete", version=None)
    if len(raw.value) > max_bytes:
        return Invalid(TOO_LARGE, f"event is {len(raw.value)} bytes, the limit is {max_bytes}")
    try:
        raw.value.decode("utf-8")
    except UnicodeDecodeError as err:
        return Invalid(INVALID_UTF8, f"value is not valid UTF-8 ({err.reason} at byte {err.start})")
    try:
        data = orjson.loads(raw.value)
    except orjson.JSONDecodeError as err:
        return Invalid(INVALID_JSON, f"value is not valid JSON ({err})")
    if not isinstance(data, dict):
        return Invalid(NOT_AN_OBJECT, f"expected a JSON object, got {type(data).__name__}")
    for name in ("product_id", "op", "version"):
        if name not in data:
            return Invalid(MISSING_FIELD, f"required field {name!r} is missing")
    product_id, op, version = data["product_id"], data["op"], data["version"]
    if not isinstance(product_id, str) or not product_id.strip():
        return Invalid(WRONG_TYPE, f"product_id must be a non-empty string, got {product_id!r:.80}")
    if key is not None and key != product_id:
        return Invalid(KEY_MISMATCH, f"record key {key!r:.80} differs from product_id {product_id!r:.80}")
    if op not in OPS:
        return Invalid(INVALID_VALUE, f"op must be one of {', '.join(OPS)}, got {op!r:.80}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        return Invalid(WRONG_TYPE, f"version must be a non-negative integer, got {version!r:.80}")
    optional = {}
    for name in ("description", "locale", "category_hint", "updated_at"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            return Invalid(WRONG_TYPE, f"{name} must be a string, got {type(value).__name__}")
        optional[name] = value
    if op == "delete":
        return ProductEvent(product_id, op, version, **{k: v for k, v in optional.items() if k != "description"})
    title = data.get("title")
    if title is None:
        return Invalid(MISSING_FIELD, "required field 'title' is missing (an upsert needs a title)")
    if not isinstance(title, str):
        return Invalid(WRONG_TYPE, f"title must be a string, got {type(title).__name__}")
    if not title.strip():
        return Invalid(INVALID_VALUE, "title is empty")
    for name, value in (("title", title), ("description", optional["description"])):
        if value is not None and len(value) > max_chars:
            return Invalid(TOO_LARGE, f"{name} has {len(value)} characters, the limit is {max_chars}")
    return ProductEvent(product_id, op, version, title, **optional)


def iso_time(ts: float) -> str:
    """A Unix time as UTC ISO 8601 with milliseconds, e.g. 2026-11-30T13:14:29.123Z."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso_time(datetime.now(timezone.utc).timestamp())


def enriched_record(event: ProductEvent, tags: list[dict], model: dict, enriched_at: str) -> bytes:
    return orjson.dumps({
        "schema_version": ENRICHED_SCHEMA_VERSION,
        "product_id": event.product_id,
        "version": event.version,
        "op": event.op,
        "locale": event.locale,
        "category_hint": event.category_hint,
        "updated_at": event.updated_at,
        "tags": tags,
        "model": model,
        "content_hash": event.content_hash,
        "enriched_at": enriched_at,
    })


def dead_letter_record(raw: RawEvent, code: str, reason: str, worker: str) -> bytes:
    return orjson.dumps({
        "schema_version": DLQ_SCHEMA_VERSION,
        "key_b64": base64.b64encode(raw.key).decode("ascii") if raw.key is not None else None,
        "value_b64": base64.b64encode(raw.value).decode("ascii") if raw.value is not None else None,
        "source": {"topic": raw.topic, "partition": raw.partition, "offset": raw.offset,
                   "timestamp_ms": raw.timestamp_ms},
        "error": code,
        "reason": reason,
        "failed_at": now_iso(),
        "worker": worker,
    })
