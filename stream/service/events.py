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

# 2: tags are capped per field (``tags_dropped`` counts the rest); dead letters carry a bounded
# prefix of the key and value with their full length and sha256 instead of the whole payload.
ENRICHED_SCHEMA_VERSION = 2
DLQ_SCHEMA_VERSION = 2
OPS = ("upsert", "delete")
MAX_VERSION = 2**63 - 1         # Kafka's and most consumers' signed 64-bit long
MAX_REASON_CHARS = 1000

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
OUTPUT_TOO_LARGE = "output_too_large"


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


@dataclass(frozen=True)
class Limits:
    """What an input event may be, and how large any output record may grow."""

    max_bytes: int = 1_048_576
    max_chars: int = 20_000
    max_id_chars: int = 256
    key_policy: str = "strict"          # strict: the key must be the product id; value: the value's id wins
    max_tags_per_field: int = 32
    max_output_bytes: int = 1_000_000
    dlq_prefix_bytes: int = 4096


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _key_problem(key: bytes | None, product_id: str) -> str | None:
    """Why a record's key does not name the product of its value (None when it does)."""
    if key is None:
        return f"record has no key; its value is product_id {product_id!r:.80}"
    text = _key_text(key)
    if text is None:
        return f"record key is not UTF-8 ({len(key)} bytes); its value is product_id {product_id!r:.80}"
    if text != product_id:
        return f"record key {text!r:.80} differs from product_id {product_id!r:.80}"
    return None


def parse_event(raw: RawEvent, limits: Limits = Limits()) -> ProductEvent | Invalid:
    """Validate one input record. The product id of the value is the identity; under the strict
    key policy a key that is absent, undecodable or different is a ``key_mismatch``, because the
    key decides the partition and so which worker holds the product's state."""
    if raw.value is None:
        return _parse_tombstone(raw.key, limits)
    if len(raw.value) > limits.max_bytes:
        return Invalid(TOO_LARGE, f"event is {len(raw.value)} bytes, the limit is {limits.max_bytes}")
    try:
        raw.value.decode("utf-8")
    except UnicodeDecodeError as err:
        return Invalid(INVALID_UTF8, f"value is not valid UTF-8 ({err.reason} at byte {err.start})")
    try:
        data = orjson.loads(raw.value)
    except orjson.JSONDecodeError as err:
        return Invalid(INVALID_JSON, f"value is not valid JSON ({str(err)[:200]})")
    if not isinstance(data, dict):
        return Invalid(NOT_AN_OBJECT, f"expected a JSON object, got {type(data).__name__}")
    for name in ("product_id", "op", "version"):
        if name not in data:
            return Invalid(MISSING_FIELD, f"required field {name!r} is missing")
    product_id, op, version = data["product_id"], data["op"], data["version"]
    if not isinstance(product_id, str) or not product_id.strip():
        return Invalid(WRONG_TYPE, f"product_id must be a non-empty string, got {product_id!r:.80}")
    if len(product_id) > limits.max_id_chars:
        return Invalid(INVALID_VALUE, f"product_id has {len(product_id)} characters, the limit is {limits.max_id_chars}")
    if limits.key_policy == "strict" and (problem := _key_problem(raw.key, product_id)):
        return Invalid(KEY_MISMATCH, problem)
    if op not in OPS:
        return Invalid(INVALID_VALUE, f"op must be one of {', '.join(OPS)}, got {op!r:.80}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        return Invalid(WRONG_TYPE, f"version must be a non-negative integer, got {version!r:.80}")
    if version > MAX_VERSION:
        return Invalid(INVALID_VALUE, f"version {version} is above 2^63-1, the largest a consumer can hold")
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
        if value is not None and len(value) > limits.max_chars:
            return Invalid(TOO_LARGE, f"{name} has {len(value)} characters, the limit is {limits.max_chars}")
    return ProductEvent(product_id, op, version, title, **optional)


def _parse_tombstone(key: bytes | None, limits: Limits) -> ProductEvent | Invalid:
    """A null value deletes the product its key names: here the key is the only identity."""
    if key is None:
        return Invalid(MISSING_FIELD, "tombstone without a key: cannot tell which product to delete")
    product_id = _key_text(key)
    if product_id is None:
        return Invalid(KEY_MISMATCH, f"tombstone key is not UTF-8 ({len(key)} bytes): cannot tell which product")
    if not product_id.strip():
        return Invalid(MISSING_FIELD, "tombstone with an empty key: cannot tell which product to delete")
    if len(product_id) > limits.max_id_chars:
        return Invalid(INVALID_VALUE, f"tombstone key has {len(product_id)} characters, the limit is {limits.max_id_chars}")
    return ProductEvent(product_id=product_id, op="delete", version=None)


def iso_time(ts: float) -> str:
    """A Unix time as UTC ISO 8601 with milliseconds, e.g. 2026-11-30T13:14:29.123Z."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso_time(datetime.now(timezone.utc).timestamp())


def enriched_record(event: ProductEvent, tags: list[dict], model: dict, enriched_at: str,
                    tags_dropped: int = 0) -> bytes:
    return orjson.dumps({
        "schema_version": ENRICHED_SCHEMA_VERSION,
        "product_id": event.product_id,
        "version": event.version,
        "op": event.op,
        "locale": event.locale,
        "category_hint": event.category_hint,
        "updated_at": event.updated_at,
        "tags": tags,
        "tags_dropped": tags_dropped,
        "model": model,
        "content_hash": event.content_hash,
        "enriched_at": enriched_at,
    })


def _payload(data: bytes | None, prefix: int, name: str) -> dict:
    """A bounded view of a payload: its first ``prefix`` bytes, its full length and sha256."""
    if data is None:
        return {f"{name}_b64": None, f"{name}_bytes": None, f"{name}_sha256": None, f"{name}_truncated": False}
    return {f"{name}_b64": base64.b64encode(data[:prefix]).decode("ascii"), f"{name}_bytes": len(data),
            f"{name}_sha256": hashlib.sha256(data).hexdigest(), f"{name}_truncated": len(data) > prefix}


def dead_letter_record(raw: RawEvent, code: str, reason: str, worker: str, prefix_bytes: int = 4096) -> bytes:
    """Bounded by construction (about 4/3 of twice ``prefix_bytes`` plus a few hundred bytes), so a
    dead letter fits the broker's limit whatever the event was."""
    return orjson.dumps({
        "schema_version": DLQ_SCHEMA_VERSION,
        **_payload(raw.key, prefix_bytes, "key"),
        **_payload(raw.value, prefix_bytes, "value"),
        "source": {"topic": raw.topic, "partition": raw.partition, "offset": raw.offset,
                   "timestamp_ms": raw.timestamp_ms},
        "error": code,
        "reason": reason[:MAX_REASON_CHARS],
        "failed_at": now_iso(),
        "worker": worker[:200],
    })
