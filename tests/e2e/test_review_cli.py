"""`tagstream review select` as a user runs it: a tail dump of the input topic, the live service's
enriched records and a bundle in; explained picks out, in the form `review push` reads."""

from __future__ import annotations

import json

import orjson

from stream.service.enrich import enrich
from stream.service.events import RawEvent
from stream.tagging.pipeline import Pipeline
from tests.e2e.conftest import one_line_error


def _dump(path, records) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def test_review_select_picks_explains_and_skips_duplicates(cli, tiny_bundle, tmp_path):
    titles = ["耐克 Nike 男士跑步鞋 黑色 42码", "华为 手机 红色 128GB", "Zorblax gadget thing 9000 purple",
              "UNIQLO women's cotton T-shirt white", "unknown words only here", "耐克 nike 男士跑步鞋 黑色 42码"]
    events = [{"product_id": f"p{i}", "op": "upsert", "version": 2, "title": t,
               "category_hint": "shoes" if i % 2 else "phones"} for i, t in enumerate(titles)]
    events.append({"product_id": "p0", "op": "upsert", "version": 1, "title": "an older version"})
    products = tmp_path / "updates.jsonl"
    _dump(products, [{"partition": 0, "offset": i, "key": e["product_id"], "value": e} for i, e in enumerate(events)])
    # The live service's output for these products, as `tagstream tail products.enriched` prints it.
    pipeline = Pipeline.load(tiny_bundle, device="cpu")
    raws = [RawEvent(e["product_id"].encode(), orjson.dumps(e), "products.updates", 0, i)
            for i, e in enumerate(events[:-1])]
    outputs = enrich(raws, pipeline, {}).outputs
    enriched = tmp_path / "enriched.jsonl"
    _dump(enriched, [{"value": orjson.loads(o.value)} for o in outputs])
    picks_file = tmp_path / "picks.jsonl"
    run = cli("review", "select", "--products", str(products), "--enriched", str(enriched), "--bundle",
              str(tiny_bundle), "-n", "4", "--out", str(picks_file))
    assert "picked 4 of 6 products" in run.stderr and "duplicates 1" in run.stderr
    picks = [json.loads(line) for line in picks_file.read_text(encoding="utf-8").splitlines()]
    assert len(picks) == 4 and len({p["content_hash"] for p in picks}) == 4
    assert [p["score"] for p in picks] == sorted((p["score"] for p in picks), reverse=True)
    by_id = {e["product_id"]: e for e in events[:-1]}
    live = {orjson.loads(o.value)["product_id"]: orjson.loads(o.value) for o in outputs}
    for pick in picks:
        assert pick["text"] == by_id[pick["id"]]["title"] and pick["version"] == 2
        assert pick["reasons"] and pick["reasons"][0].startswith(("token entropy", "lowest tag", "outside", "no tags"))
        assert "entropy" in pick["parts"]
        # Pre-annotations are the live record's title tags, offsets into the title.
        title_tags = [t for t in live[pick["id"]]["tags"] if t["field"] == "title"]
        assert [(p["start"], p["end"], p["label"]) for p in pick["predictions"]] == [
            (t["start"], t["end"], t["type"]) for t in title_tags]
        for p in pick["predictions"]:
            assert pick["text"][p["start"]:p["end"]] == p["text"]
    # Picks already sent are not picked again.
    again = cli("review", "select", "--products", str(products), "--bundle", str(tiny_bundle), "-n", "4",
                "--exclude", str(picks_file), "--out", str(tmp_path / "more.jsonl"))
    assert "excluded 4" in again.stderr or "excluded 5" in again.stderr


def test_review_select_bad_arguments_say_why_in_one_line(cli, tmp_path):
    products = tmp_path / "p.jsonl"
    _dump(products, [{"product_id": "p1", "title": "x"}])
    one_line_error(cli("review", "select", "--products", str(products), "--out", str(tmp_path / "o.jsonl"),
                       check=False), "--enriched", "--bundle")
    one_line_error(cli("review", "select", "--products", str(products), "--bundle", "x", "--max-category-share", "2",
                       "--out", str(tmp_path / "o.jsonl"), check=False), "share", exit_code=2)
