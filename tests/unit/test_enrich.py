"""enrich(): the worker's decisions, tested without a broker on a real tiny bundle."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest

from stream.service.enrich import DLQ, ENRICHED, Limits, enrich
from stream.service.events import RawEvent
from stream.tagging.pipeline import Pipeline


@pytest.fixture(scope="module")
def tagger(tiny_bundle):
    return Pipeline.load(tiny_bundle, device="cpu")


class CountingTagger:
    """The real pipeline, counting the products it is asked to tag (and failing on demand)."""

    def __init__(self, inner, poison: str | None = None):
        self.inner, self.poison, self.tagged = inner, poison, 0
        self.model, self.model_id = inner.model, inner.model_id

    def __call__(self, products):
        if self.poison and any(self.poison in p["title"] for p in products):
            raise RuntimeError("tokenizer exploded")
        self.tagged += len(products)
        return self.inner(products)


def raw(key, value, offset=0):
    if isinstance(value, dict):
        value = orjson.dumps(value)
    return RawEvent(key.encode() if key else None, value, "in", 0, offset, 1_000)


def upsert(pid, version, title, description=None):
    return {"product_id": pid, "op": "upsert", "version": version, "title": title, "description": description}


def test_one_model_call_per_batch_and_outputs_in_input_order(tagger):
    counting = CountingTagger(tagger)
    batch = [raw(f"p{i}", upsert(f"p{i}", 1, t)) for i, t in enumerate(["耐克黑色跑步鞋", "华为手机", "Nike shoes"])]
    result = enrich(batch, counting, {})
    assert [o.key for o in result.outputs] == [b"p0", b"p1", b"p2"] and counting.tagged == 3
    records = [orjson.loads(o.value) for o in result.outputs]
    for record, title in zip(records, ["耐克黑色跑步鞋", "华为手机", "Nike shoes"]):
        for tag in record["tags"]:
            assert title[tag["start"]:tag["end"]] == tag["text"] and tag["field"] == "title"
    assert result.state["p0"]["version"] == 1 and "tags" in result.state["p0"]


def test_unchanged_content_reuses_tags_even_within_one_batch(tagger):
    counting = CountingTagger(tagger)
    batch = [raw("p", upsert("p", 1, "耐克黑色跑步鞋")), raw("p", upsert("p", 2, "耐克黑色跑步鞋"))]
    result = enrich(batch, counting, {})
    assert counting.tagged == 1 and result.counts["skipped_unchanged"] == 1
    first, second = (orjson.loads(o.value) for o in result.outputs)
    assert first["tags"] == second["tags"] and second["version"] == 2
    again = enrich([raw("p", upsert("p", 3, "耐克黑色跑步鞋"))], counting, result.state)
    assert counting.tagged == 1 and orjson.loads(again.outputs[0].value)["tags"] == first["tags"]


def test_with_skipping_off_unchanged_content_goes_through_the_model(tagger):
    counting = CountingTagger(tagger)
    batch = [raw("p", upsert("p", 1, "耐克黑色跑步鞋", "红色")), raw("p", upsert("p", 2, "耐克黑色跑步鞋", "红色"))]
    result = enrich(batch, counting, {}, skip_unchanged=False)
    assert counting.tagged == 2 and result.texts_tagged == 2 and not result.counts["skipped_unchanged"]
    again = enrich([raw("p", {**upsert("p", 3, "耐克黑色跑步鞋", "红色"), "price": 9.5, "stock": 3})], counting,
                   result.state, skip_unchanged=False)
    assert counting.tagged == 3 and again.texts_tagged == 1
    first, last = orjson.loads(result.outputs[0].value), orjson.loads(again.outputs[0].value)
    assert last["tags"] == first["tags"] and last["version"] == 3


def test_price_and_stock_do_not_change_the_content_hash(tagger):
    counting = CountingTagger(tagger)
    state = enrich([raw("p", {**upsert("p", 1, "华为手机", "黑色"), "price": 10.0, "stock": 5})], counting, {}).state
    result = enrich([raw("p", {**upsert("p", 2, "华为手机", "黑色"), "price": 8.0, "stock": 0})], counting, state)
    assert counting.tagged == 1 and result.counts["skipped_unchanged"] == 1


def test_a_new_model_retags_unchanged_content(tagger):
    counting = CountingTagger(tagger)
    state = enrich([raw("p", upsert("p", 1, "华为手机"))], counting, {}).state
    state["p"]["model"] = "older-model:0"
    enrich([raw("p", upsert("p", 2, "华为手机"))], counting, state)
    assert counting.tagged == 2


def test_stale_versions_are_skipped_and_deletes_become_tombstones(tagger):
    state = {"p": {"version": 5, "content_hash": "x", "model": "m", "tags": [], "deleted": False}}
    batch = [raw("p", upsert("p", 4, "old")), raw("p", {"product_id": "p", "op": "delete", "version": 6}),
             raw("q", None), raw("p", upsert("p", 5, "too late after the delete"))]
    result = enrich(batch, tagger, state)
    assert result.counts["skipped_stale"] == 2
    assert [(o.kind, o.key, o.value) for o in result.outputs] == [(ENRICHED, b"p", None), (ENRICHED, b"q", None)]
    assert result.state["p"] == {"version": 6, "deleted": True}


def test_bad_events_are_dead_lettered_with_codes(tagger):
    batch = [raw("a", b"{"), raw("b", {"product_id": "b", "op": "upsert", "version": True, "title": "x"}),
             raw("c", upsert("c", 1, "x" * 50)), raw(None, None), raw("d", upsert("d", 1, "华为手机"))]
    result = enrich(batch, tagger, {}, limits=Limits(max_bytes=1000, max_chars=20))
    assert [(o.kind, o.code) for o in result.outputs] == [(DLQ, "invalid_json"), (DLQ, "wrong_type"),
                                                          (DLQ, "too_large"), (DLQ, "missing_field"), (ENRICHED, None)]
    letter = orjson.loads(result.outputs[0].value)
    assert letter["source"] == {"topic": "in", "partition": 0, "offset": 0, "timestamp_ms": 1000}


def test_a_text_that_breaks_inference_is_isolated(tagger):
    poisoned = CountingTagger(tagger, poison="BOOM")
    titles = ["耐克黑色跑步鞋", "华为手机", "BOOM 1", "小米扫地机器人", "Nike shoes"]
    result = enrich([raw(f"p{i}", upsert(f"p{i}", 1, t)) for i, t in enumerate(titles)], poisoned, {})
    assert [(o.key, o.kind, o.code) for o in result.outputs] == [
        (b"p0", ENRICHED, None), (b"p1", ENRICHED, None), (b"p2", DLQ, "inference_failed"),
        (b"p3", ENRICHED, None), (b"p4", ENRICHED, None)]
    assert "p2" not in result.state and "tokenizer exploded" in orjson.loads(result.outputs[2].value)["reason"]


def test_state_follows_the_value_s_product_id_and_keys_that_disagree_are_dead_lettered(tagger):
    state = enrich([raw("p1", upsert("p1", 5, "华为手机"))], tagger, {}).state
    keyless, not_utf8 = raw(None, upsert("p1", 3, "华为手机 旧")), RawEvent(b"\xff", orjson.dumps(upsert("p1", 3, "x")),
                                                                         "in", 0, 2, 1_000)
    other = raw("p2", upsert("p1", 3, "华为手机 旧"))
    result = enrich([keyless, not_utf8, other], tagger, state)
    assert [(o.kind, o.code) for o in result.outputs] == [(DLQ, "key_mismatch")] * 3
    assert result.state == {}
    # Accepted by the documented setting, the value's id decides, so v3 after v5 is stale.
    lenient = Limits(key_policy="value")
    result = enrich([keyless, not_utf8, raw(None, upsert("p1", 6, "华为手机 新"))], tagger, state, limits=lenient)
    assert result.counts["skipped_stale"] == 2 and [o.key for o in result.outputs] == [b"p1"]
    assert result.state["p1"]["version"] == 6


def test_a_replay_at_or_below_a_deletion_marker_is_stale(tagger):
    first = enrich([raw("p", upsert("p", 1, "华为手机")), raw("p", None)], tagger, {})
    assert first.state["p"] == {"version": 1, "deleted": True}
    replay = enrich([raw("p", upsert("p", 1, "华为手机"))], tagger, first.state)
    assert replay.outputs == [] and replay.counts["skipped_stale"] == 1
    newer = enrich([raw("p", upsert("p", 2, "华为手机"))], tagger, first.state)
    assert [o.kind for o in newer.outputs] == [ENRICHED] and not newer.state["p"]["deleted"]


def test_ids_and_versions_beyond_what_consumers_hold_are_dead_lettered(tagger):
    long_id = "x" * 257
    batch = [raw(long_id, upsert(long_id, 1, "华为手机")), raw("v", upsert("v", 2**63, "华为手机")),
             raw("w", upsert("w", 2**63 - 1, "华为手机"))]
    result = enrich(batch, tagger, {})
    assert [(o.kind, o.code) for o in result.outputs] == [(DLQ, "invalid_value"), (DLQ, "invalid_value"),
                                                          (ENRICHED, None)]
    reasons = [orjson.loads(o.value)["reason"] for o in result.outputs[:2]]
    assert "257 characters, the limit is 256" in reasons[0] and "2^63-1" in reasons[1]


def test_outputs_are_bounded_by_construction(tagger):
    title = "耐克跑步鞋黑色" * 2857                  # 19,999 characters: a valid event
    limits = Limits(max_tags_per_field=8, dlq_prefix_bytes=1024)
    huge = b"\x00not json" + b"x" * 900_000
    result = enrich([raw("big", upsert("big", 1, title)), raw("bad", huge)], tagger, {}, limits=limits)
    enriched, letter = result.outputs
    record = orjson.loads(enriched.value)
    assert enriched.kind == ENRICHED and len(record["tags"]) <= 8 and record["tags_dropped"] > 100
    assert all(title[t["start"]:t["end"]] == t["text"] for t in record["tags"])
    assert len(result.state["big"]["tags"]) <= 8
    dead = orjson.loads(letter.value)
    assert letter.code == "invalid_utf8" or letter.code == "invalid_json"
    assert len(letter.value) < 4096 and dead["value_bytes"] == len(huge) and dead["value_truncated"]
    assert base64.b64decode(dead["value_b64"]) == huge[:1024]
    assert dead["value_sha256"] == hashlib.sha256(huge).hexdigest()
    # Past the output limit the record is dead-lettered, and nothing of it is kept for re-use.
    tight = Limits(max_output_bytes=600)
    result = enrich([raw("big", upsert("big", 2, title))], tagger, {}, limits=tight)
    assert [(o.kind, o.code) for o in result.outputs] == [(DLQ, "output_too_large")]
    assert "the limit is 600" in orjson.loads(result.outputs[0].value)["reason"]
    assert result.state["big"] == {"version": 2, "deleted": False}
