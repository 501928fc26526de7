"""Label Studio review, without a server: config, tasks, offsets, export conversion, push logic."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from xml.etree import ElementTree

import pytest

from stream.service.labelstudio import (Client, LabelStudioError, config_labels, examples_from_export,
                                        labelling_config, not_annotated, push, tasks_from_picks,
                                        utf16_to_code_points)
from stream.tagging.taxonomy import Taxonomy

EMOJI_TEXT = "🔥🔥 Nike 跑步鞋 👟 黑色"       # astral characters before and between the spans
CHINESE_TEXT = "华为 HUAWEI Mate 60 Pro 手机壳 雅川青"


def _js(text: str, start: int, end: int) -> tuple[int, int]:
    """What a JS string index would say for these code-point offsets (UTF-16 units)."""
    return len(text[:start].encode("utf-16-le")) // 2, len(text[:end].encode("utf-16-le")) // 2


def _pick(pid="p1", text=CHINESE_TEXT, spans=((0, 2, "brand"),), version=3, field="title"):
    return {"id": pid, "version": version, "field": field, "text": text, "category": "phones",
            "content_hash": "abc", "score": 0.73, "reasons": ["token entropy 0.61", "lowest span confidence 0.42"],
            "predictions": [{"start": s, "end": e, "label": lab, "text": text[s:e], "confidence": 0.9}
                            for s, e, lab in spans],
            "model": {"name": "m", "version": "1"}}


def _item(start, end, label="brand", text=None, **extra):
    value = {"start": start, "end": end, "labels": [label] if label is not None else []}
    if text is not None:
        value["text"] = text
    return {"from_name": "label", "to_name": "text", "type": "labels", "value": value, **extra}


def _task(tid, text, *annotations, product="p1"):
    return {"id": tid, "data": {"text": text, "product_id": product, "version": 1, "field": "title"},
            "annotations": list(annotations)}


def _annotation(aid, result, updated="2026-01-01T00:00:00Z", cancelled=False):
    return {"id": aid, "result": result, "was_cancelled": cancelled, "created_at": updated, "updated_at": updated}


# --- config -----------------------------------------------------------------------------------------

def test_config_is_valid_xml_with_one_label_per_type_sorted_and_hints_from_the_taxonomy():
    taxonomy = Taxonomy.from_dict({"types": [{"name": "brand", "en": "Brand & \"Maker\" <x>", "zh": "品牌"}],
                                   "nodes": []})
    config = labelling_config(["size", "brand", "color", "brand"], taxonomy)
    root = ElementTree.fromstring(config)
    labels = root.find("Labels")
    assert labels.get("name") == "label" and labels.get("toName") == "text"
    assert [el.get("value") for el in labels.iter("Label")] == ["brand", "color", "size"]
    brand = labels.find("Label")
    assert brand.get("hint") == 'Brand & "Maker" <x> / 品牌'
    assert brand.get("alias") is None                       # an alias would replace the type in results
    assert root.find("Text").get("name") == "text" and root.find("Text").get("value") == "$text"
    assert config_labels(config) == ["brand", "color", "size"]
    assert labelling_config(["color", "size", "brand"], taxonomy) == config
    with pytest.raises(ValueError):
        labelling_config([], None)


def test_config_escapes_type_names():
    config = labelling_config(['a"b', "x<y&z"], None)
    assert config_labels(config) == ['a"b', "x<y&z"]


# --- tasks ------------------------------------------------------------------------------------------

def test_tasks_carry_data_and_predictions_with_code_point_offsets():
    picks = [_pick(), _pick("p2", EMOJI_TEXT, ((3, 7, "brand"), (12, 13, "category"), (14, 16, "color")))]
    tasks = tasks_from_picks(picks, "tiny:1")
    assert tasks[0]["data"] == {"text": CHINESE_TEXT, "product_id": "p1", "version": 3, "field": "title",
                                "score": 0.73, "reasons": "token entropy 0.61; lowest span confidence 0.42",
                                "category": "phones"}
    prediction = tasks[1]["predictions"][0]
    assert prediction["model_version"] == "tiny:1" and prediction["score"] == pytest.approx(0.27)
    values = [r["value"] for r in prediction["result"]]
    assert [(v["start"], v["end"], v["text"], v["labels"]) for v in values] == [
        (3, 7, "Nike", ["brand"]), (12, 13, "👟", ["category"]), (14, 16, "黑色", ["color"])]
    assert all(r["from_name"] == "label" and r["to_name"] == "text" and r["type"] == "labels"
               and r["score"] == 0.9 for r in prediction["result"])
    # The same spans in JS units would be shifted by the emoji before them: we send code points.
    assert _js(EMOJI_TEXT, 3, 7) == (5, 9)


@pytest.mark.parametrize("span", [(0, 99, "brand"), (2, 2, "brand"), (0, 2, "")])
def test_a_prediction_that_does_not_fit_its_text_is_refused(span):
    with pytest.raises(ValueError, match="p1"):
        tasks_from_picks([_pick(spans=(span,))], "m")


def test_a_prediction_whose_text_disagrees_is_refused():
    pick = _pick()
    pick["predictions"][0]["text"] = "耐克"
    with pytest.raises(ValueError, match="耐克"):
        tasks_from_picks([pick], "m")


# --- export -> records --------------------------------------------------------------------------------

def test_latest_submitted_annotation_becomes_a_record():
    old = _annotation(1, [_item(0, 2, "brand", "华为")], "2026-01-01T00:00:00Z")
    new = _annotation(2, [_item(10, 12, "model", "Ma"), _item(0, 2, "brand", "华为")], "2026-01-02T00:00:00Z")
    skipped = _annotation(3, [], "2026-01-03T00:00:00Z", cancelled=True)
    export = [_task(7, CHINESE_TEXT, old, new, skipped), _task(8, "无人标注", product="p9"),
              _task(9, "只跳过", _annotation(4, [], cancelled=True), product="p8")]
    records, problems = examples_from_export(export, ["brand", "model"])
    assert problems == []
    assert records == [{"id": "p1", "text": CHINESE_TEXT, "source": "label-studio", "task": 7, "annotation": 2,
                        "version": 1, "field": "title",
                        "spans": [{"start": 0, "end": 2, "label": "brand"}, {"start": 10, "end": 12, "label": "model"}]}]
    assert not_annotated(export) == [8, 9]


def test_an_annotation_with_no_spans_is_a_record_with_none():
    records, problems = examples_from_export([_task(1, "纯文本", _annotation(5, []))])
    assert problems == [] and records[0]["spans"] == []


def test_code_point_and_utf16_offsets_both_round_trip_emoji():
    start, end = 12, 13                                         # '👟' after two astral 🔥
    js_start, js_end = _js(EMOJI_TEXT, start, end)
    assert (js_start, js_end) == (14, 16)
    for s, e in ((start, end), (js_start, js_end)):
        records, problems = examples_from_export(
            [_task(1, EMOJI_TEXT, _annotation(1, [_item(s, e, "category", "👟"), _item(*_js(EMOJI_TEXT, 14, 16), "color", "黑色")]))])
        assert problems == [], (s, e)
        spans = records[0]["spans"]
        assert [EMOJI_TEXT[sp["start"]:sp["end"]] for sp in spans] == ["👟", "黑色"]


def test_utf16_map_skips_offsets_inside_surrogate_pairs():
    units = utf16_to_code_points("a😀b")
    assert units == {0: 0, 1: 1, 3: 2, 4: 3}


@pytest.mark.parametrize("item, reason", [
    (_item(0, 99, "brand", "华为"), "outside the text"),
    (_item(0, 2, "brand", "耐克"), "is not the text at [0, 2)"),
    (_item(0, 2, "colour", "华为"), "unknown label 'colour'"),
    (_item(0, 2, None, "华为"), "exactly one label"),
    (_item(2, 2, "brand"), "empty or reversed"),
    (_item("0", 2, "brand"), "not integers"),
    ({"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["x"]}}, "unsupported result"),
])
def test_every_problem_keeps_the_task_out_and_says_why(item, reason):
    good = _item(3, 9, "brand", "HUAWEI")
    records, problems = examples_from_export([_task(4, CHINESE_TEXT, _annotation(11, [good, item]))],
                                             ["brand", "model"])
    assert records == []
    assert len(problems) == 1 and problems[0]["task"] == 4 and problems[0]["annotation"] == 11
    assert reason in problems[0]["reason"]


def test_overlapping_spans_and_a_task_without_text_are_problems():
    overlap = _task(1, CHINESE_TEXT, _annotation(1, [_item(3, 9, "brand", "HUAWEI"), _item(5, 12, "model", "AWEI Ma")]))
    textless = {"id": 2, "data": {"product_id": "x"}, "annotations": [_annotation(2, [])]}
    fine = _task(3, CHINESE_TEXT, _annotation(3, [_item(0, 2, "brand", "华为")]), product="p3")
    records, problems = examples_from_export([overlap, textless, fine], ["brand", "model"])
    assert [r["task"] for r in records] == [3]
    assert [(p["task"], p["annotation"]) for p in problems] == [(1, 1), (2, 2)]
    assert "overlaps" in problems[0]["reason"] and "no text" in problems[1]["reason"]


# --- push (a fake server) -----------------------------------------------------------------------------

class FakeStudio:
    """Just enough of the API for push: projects by title, config, export, import."""

    def __init__(self):
        self.projects: dict[int, dict] = {}
        self.calls: list[tuple[str, str]] = []

    def request(self, method, path, body=None, query=None):
        self.calls.append((method, path))
        if (method, path) == ("GET", "/api/projects/"):
            rows = [{"id": i, "title": p["title"]} for i, p in self.projects.items() if query["title"] in p["title"]]
            return {"count": len(rows), "next": None, "results": rows}
        if (method, path) == ("POST", "/api/projects/"):
            pid = len(self.projects) + 1
            self.projects[pid] = {"title": body["title"], "label_config": body["label_config"], "tasks": []}
            return {"id": pid}
        pid = int(path.split("/")[3])
        project = self.projects[pid]
        if method == "GET" and path.endswith("/export"):
            return [{"id": n, "data": t["data"], "annotations": []} for n, t in enumerate(project["tasks"], 1)]
        if method == "GET":
            return {"id": pid, "label_config": project["label_config"]}
        if method == "PATCH":
            project.update(body)
            return {"id": pid}
        project["tasks"] += body
        return {"task_count": len(body)}


def test_push_creates_once_then_skips_tasks_already_there_and_updates_the_config():
    studio = FakeStudio()
    studio.projects[1] = {"title": "tagstream review (old)", "label_config": "", "tasks": []}
    tasks = tasks_from_picks([_pick("a"), _pick("b"), _pick("a")], "m")
    first = push(studio, "tagstream review", labelling_config(["brand"]), tasks)
    assert (first.project, first.imported, first.skipped) == (2, 2, 1)
    second = push(studio, "tagstream review",
                  labelling_config(["brand", "color"]), tasks + tasks_from_picks([_pick("a", version=4)], "m"))
    assert (second.project, second.imported, second.skipped) == (2, 1, 3)
    assert config_labels(studio.projects[2]["label_config"]) == ["brand", "color"]
    assert len(studio.projects[2]["tasks"]) == 3 and studio.projects[1]["tasks"] == []


# --- client errors --------------------------------------------------------------------------------------

class _Answer400(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.dumps({"status_code": 400, "detail": "Validation error",
                           "validation_errors": {"label_config": ["bad\nconfig"]}}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_client_errors_are_one_line_with_status_path_and_message_and_never_the_token():
    server = HTTPServer(("127.0.0.1", 0), _Answer400)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = Client(f"http://127.0.0.1:{server.server_port}", "s3cret-token")
        with pytest.raises(LabelStudioError) as err:
            client.request("POST", "/api/projects/", {"title": "x"})
    finally:
        server.shutdown()
        server.server_close()
    message = str(err.value)
    assert "\n" not in message and "s3cret" not in message and "s3cret" not in repr(client)
    assert "POST /api/projects/" in message and "HTTP 400" in message and "Validation error" in message
    assert "bad" in message


def test_client_says_when_the_server_is_unreachable():
    server = HTTPServer(("127.0.0.1", 0), _Answer400)
    port = server.server_port
    server.server_close()
    with pytest.raises(LabelStudioError, match=f"cannot reach http://127.0.0.1:{port}"):
        Client(f"http://127.0.0.1:{port}", "t", timeout=5).request("GET", "/api/projects/")
