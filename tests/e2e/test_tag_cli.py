"""`tagstream tag` prints the very tag objects the worker publishes: one pipeline, one shape."""

from __future__ import annotations

import json

import orjson

from stream.service.enrich import enrich
from stream.service.events import RawEvent
from stream.tagging.pipeline import Pipeline

PRODUCT = {"product_id": "p1", "op": "upsert", "version": 1, "title": "耐克 Nike 男士跑步鞋 黑色 42码",
           "description": "华为 手机 红色"}


def test_tag_prints_what_products_enriched_carries(cli, tiny_bundle):
    printed = cli("tag", "--bundle", str(tiny_bundle), input=json.dumps(PRODUCT, ensure_ascii=False) + "\n").stdout
    by_cli = json.loads(printed)
    raw = RawEvent(b"p1", orjson.dumps(PRODUCT), "products.updates", 0, 0)
    published = orjson.loads(enrich([raw], Pipeline.load(tiny_bundle, device="cpu"), {}).outputs[0].value)
    assert by_cli["tags"] == published["tags"] and by_cli["model"] == published["model"]
    assert {t["field"] for t in by_cli["tags"]} <= {"title", "description"}
    plain = json.loads(cli("tag", "--bundle", str(tiny_bundle), PRODUCT["title"]).stdout)
    assert plain["text"] == PRODUCT["title"]
    # Alone in its batch the title's confidences may move in the last digits (padding); nothing else.
    drop = lambda tags: [{k: v for k, v in t.items() if k != "confidence"} for t in tags]  # noqa: E731
    assert drop(plain["tags"]) == drop([t for t in published["tags"] if t["field"] == "title"])
