"""Hostile events: whatever arrives, enrich() answers with exactly one record per event, either a
dead letter with a known code or tags whose offsets index the original strings."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.service import events
from stream.service.enrich import DLQ, ENRICHED, Limits, enrich
from stream.service.events import RawEvent
from stream.tagging.pipeline import Pipeline

CODES = {events.INVALID_UTF8, events.INVALID_JSON, events.NOT_AN_OBJECT, events.MISSING_FIELD, events.WRONG_TYPE,
         events.INVALID_VALUE, events.TOO_LARGE, events.KEY_MISMATCH, events.INFERENCE_FAILED}
ODD = ["\u200b", "\u200d", "\u202e", "\u2066", "\ufeff", "\x00", "\x07", "\x1b", "\u0085", "\u2028", "😀", "👩‍👩‍👧",
       "e\u0301", "Ｎｉｋｅ", "耐克", " ", "\t", "\n", "\ud7ff", "A" * 300]

ints = st.integers(-(2**63), 2**63 - 1)  # what JSON producers emit
text = st.lists(st.sampled_from(ODD) | st.characters(codec="utf-8"), max_size=30).map("".join)
titles = st.one_of(text, st.lists(st.sampled_from(ODD + ["黑色", "跑步鞋", " Nike "]), max_size=20).map("".join))
field_values = st.one_of(titles, st.none(), ints, st.floats(allow_nan=True), st.booleans(),
                         st.lists(ints, max_size=3), st.dictionaries(st.text(max_size=3), ints,
                                                                              max_size=2))


@st.composite
def hostile(draw):
    kind = draw(st.sampled_from(["object", "object", "object", "bytes", "json", "huge", "dupkeys"]))
    pid = draw(st.one_of(st.just("p1"), text))
    if kind == "bytes":
        return draw(st.one_of(st.none(), st.binary(max_size=40))), draw(st.binary(max_size=200))
    if kind == "json":
        return b"p1", orjson.dumps(draw(st.one_of(ints, st.text(max_size=10), st.lists(ints))))
    if kind == "huge":
        return b"p1", orjson.dumps({"product_id": "p1", "op": "upsert", "version": 1, "title": "x" * 30_000})
    if kind == "dupkeys":
        return b"p1", b'{"product_id": "p1", "op": "upsert", "version": 1, "title": "a", "title": "' + \
            orjson.dumps(draw(titles))[1:-1] + b'"}'
    record = {"product_id": pid, "op": draw(st.sampled_from(["upsert", "upsert", "delete", "merge"])),
              "version": draw(st.one_of(st.integers(-2, 10**12), st.text(max_size=3), st.none(), ints)),
              "title": draw(field_values), "description": draw(field_values)}
    for name in draw(st.lists(st.sampled_from(list(record)), max_size=2)):
        record.pop(name, None)
    key = draw(st.one_of(st.just(pid.encode("utf-8")), st.none(), st.binary(max_size=5)))
    return key, orjson.dumps(record)


@pytest.fixture(scope="module")
def tagger(tiny_bundle):
    return Pipeline.load(tiny_bundle, device="cpu")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(batch=st.lists(hostile(), min_size=1, max_size=6))
def test_every_hostile_event_gets_one_clear_answer(tagger, batch):
    raws = [RawEvent(key, value, "in", 0, i) for i, (key, value) in enumerate(batch)]
    result = enrich(raws, tagger, {}, limits=Limits(max_bytes=20_000, max_chars=10_000))
    assert len(result.outputs) + result.counts["skipped_stale"] == len(raws)
    for out in result.outputs:
        if out.kind == DLQ:
            letter = orjson.loads(out.value)
            assert letter["error"] in CODES and letter["reason"]
        else:
            assert out.kind == ENRICHED
            if out.value is None:
                continue  # a tombstone
            record = orjson.loads(out.value)
            source = orjson.loads(out.source.value)
            for tag in record["tags"]:
                original = source[tag["field"]]
                assert original[tag["start"]:tag["end"]] == tag["text"] and 0 <= tag["confidence"] <= 1
