"""enrich(): the worker's decisions, tested without a broker on a real tiny bundle."""

from __future__ import annotations

import orjson
import pytest

from stream.enrich import DLQ, ENRICHED, Limits, enrich
from stream.events import RawEvent
from stream.tagger import Tagger
from stream.taxonomy import Taxonomy


@pytest.fixture(scope="module")
def tagger(tiny_bundle):
    return Tagger.load(tiny_bundle, device="cpu")


class CountingTagger:
    """The real tagger, counting the products it is asked to tag (and failing on demand)."""

    def __init__(self, inner, poison: str | None = None):
        self.inner, self.poison, self.tagged = inner, poison, 0
        self.model_name, self.model_version = inner.model_name, inner.model_version

    def tag_products(self, products):
        if self.poison and any(self.poison in p["title"] for p in products):
            raise RuntimeError("tokenizer exploded")
        self.tagged += len(products)
        return self.inner.tag_products(products)


def raw(key, value, offset=0):
    if isinstance(value, dict):
        value = orjson.dumps(value)
    return RawEvent(key.encode() if key else None, value, "in", 0, offset, 1_000)


def upsert(pid, version, title, description=None):
    return {"product_id": pid, "op": "upsert", "version": version, "title": title, "description": description}


def test_one_model_call_per_batch_and_outputs_in_input_order(tagger):
    counting = CountingTagger(tagger)
    batch = [raw(f"p{i}", upsert(f"p{i}", 1, t)) for i, t in enumerate(["耐克黑色跑步鞋", "华为手机", "Nike shoes"])]
    result = enrich(batch, counting, {}, taxonomy=Taxonomy.load(tagger.bundle.file("taxonomy.json")))
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
