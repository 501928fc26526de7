"""`tagstream review push|pull` against a real Label Studio (deploy/labelstudio/labelstudio.sh): picks
with Chinese and emoji titles go in as pre-annotations, an annotator corrects them through the API,
and the training records that come back hold exactly the annotated text."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stream.service.labelstudio import Client, find_project, pull
from stream.tagging.bundle import read_bundle
from stream.tagging.spans import entity_types

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "labelstudio" / "labelstudio.sh"
TOKEN = "tagstream-test-token-5f1c0a9d2b7e4c63"
PROJECT = "tagstream review (test)"

ZH_TITLE = "华为 HUAWEI Mate 60 Pro 手机壳 雅川青"
ZH_TITLE_2 = "耐克 男士跑步鞋 黑色 42码"
EMOJI_TITLE = "🔥🔥爆款 Nike 跑步鞋 👟 黑色 😀"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A Label Studio of its own (free port, temp data dir), stopped when the session ends. Skips only
    when the package cannot be installed; a server that will not start fails the test."""
    install = subprocess.run(["bash", str(SCRIPT), "install"], capture_output=True, text=True, timeout=1200)
    if install.returncode != 0:
        lines = install.stderr.strip().splitlines() or ["no output"]
        reason = " | ".join([line for line in lines if line.startswith("ERROR")][-1:] + lines[-1:])
        pytest.skip(f"label-studio could not be installed: {reason}")
    port = _free_port()
    env = {**os.environ, "LABEL_STUDIO_PORT": str(port), "LABEL_STUDIO_USER_TOKEN": TOKEN,
           "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path_factory.mktemp("labelstudio") / "data")}
    start = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900, env=env)
    try:
        assert start.returncode == 0, f"labelstudio.sh start exited {start.returncode}\n{start.stdout}\n{start.stderr}"
        yield Client(f"http://127.0.0.1:{port}", TOKEN)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True, timeout=120, env=env)


def _review(*args: str, url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LABEL_STUDIO_URL": url, "LABEL_STUDIO_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    env.pop("TAGSTREAM_DEBUG", None)
    run = subprocess.run([sys.executable, "-m", "stream.cli", "review", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=env)
    assert TOKEN not in run.stdout + run.stderr
    return run


def _roles(bundle) -> tuple[str, str, str]:
    """Three entity types of the bundle: the demo's brand, category and color when it has them."""
    types = entity_types(read_bundle(bundle).manifest.labels)
    wanted = [t for t in ("brand", "category", "color") if t in types]
    return tuple((wanted + [t for t in types if t not in wanted])[:3])


def _span(text: str, part: str, label: str, nth: int = 0) -> dict:
    start = -1
    for _ in range(nth + 1):
        start = text.index(part, start + 1)
    return {"start": start, "end": start + len(part), "label": label, "text": part}


def _picks(brand: str, category: str, color: str) -> list[dict]:
    def pick(pid, text, spans):
        return {"id": pid, "version": 3, "field": "title", "text": text, "category": "demo", "content_hash": pid,
                "score": 0.7, "reasons": ["token entropy 0.61", "lowest span confidence 0.42"],
                "predictions": [{**s, "confidence": 0.5} for s in spans], "model": {"name": "tiny", "version": "1"}}

    return [pick("zh-1", ZH_TITLE, [_span(ZH_TITLE, "华为", brand), _span(ZH_TITLE, "手机壳", color)]),
            pick("zh-2", ZH_TITLE_2, [_span(ZH_TITLE_2, "耐克", brand)]),
            pick("emoji-1", EMOJI_TITLE, [_span(EMOJI_TITLE, "Nike", brand), _span(EMOJI_TITLE, "黑色", category)])]


def _corrections(brand: str, category: str, color: str) -> dict[str, list[dict]]:
    """What the annotator submits per product: relabelled, moved and added spans, emoji included."""
    return {"zh-1": [_span(ZH_TITLE, "华为", brand), _span(ZH_TITLE, "HUAWEI", brand),
                     _span(ZH_TITLE, "手机壳", category), _span(ZH_TITLE, "雅川青", color)],
            "zh-2": [_span(ZH_TITLE_2, "耐克", brand), _span(ZH_TITLE_2, "跑步鞋", category),
                     _span(ZH_TITLE_2, "黑色", color)],
            "emoji-1": [_span(EMOJI_TITLE, "Nike", brand), _span(EMOJI_TITLE, "跑步鞋 👟", category),
                        _span(EMOJI_TITLE, "黑色", color)]}


def _annotate(client: Client, task: int, spans: list[dict]) -> dict:
    """As the labelling UI does: code-point offsets, the selected text, one label per region."""
    result = [{"id": f"r{i}", "from_name": "label", "to_name": "text", "type": "labels", "origin": "manual",
               "value": {"start": s["start"], "end": s["end"], "text": s["text"], "labels": [s["label"]]}}
              for i, s in enumerate(spans)]
    return client.request("POST", f"/api/tasks/{task}/annotations/", {"result": result, "was_cancelled": False})


def _records(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def test_push_annotate_pull_round_trips_offsets(label_studio, tiny_bundle, tmp_path):
    client = label_studio
    brand, category, color = _roles(tiny_bundle)
    picks_file = tmp_path / "picks.jsonl"
    picks_file.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n"
                                  for p in _picks(brand, category, color)), encoding="utf-8")
    push = ("push", "--picks", str(picks_file), "--bundle", str(tiny_bundle), "--project", PROJECT)

    first = _review(*push, url=client.url)
    assert first.returncode == 0, first.stderr
    assert "3 tasks imported, 0 skipped" in first.stdout
    again = _review(*push, url=client.url)
    assert again.returncode == 0 and "0 tasks imported, 3 skipped" in again.stdout, again.stdout + again.stderr

    project = find_project(client, PROJECT)
    tasks = {t["data"]["product_id"]: t for t in pull(client, project)}
    assert sorted(tasks) == ["emoji-1", "zh-1", "zh-2"]
    # The pre-annotations arrived with code-point offsets over the emoji title.
    emoji_task = client.request("GET", f"/api/tasks/{tasks['emoji-1']['id']}/")
    shown = [(r["value"]["start"], r["value"]["text"]) for r in emoji_task["predictions"][0]["result"]]
    assert shown == [(EMOJI_TITLE.index("Nike"), "Nike"), (EMOJI_TITLE.index("黑色"), "黑色")], emoji_task

    corrections = _corrections(brand, category, color)
    annotations = {pid: _annotate(client, tasks[pid]["id"], spans)["id"] for pid, spans in corrections.items()
                   if pid != "zh-2"}

    out = tmp_path / "reviewed.jsonl"
    pulled = _review("pull", "--project", PROJECT, "--out", str(out), url=client.url)
    assert pulled.returncode == 0, pulled.stderr
    assert "2 written, 0 tasks with problems (0 problems), 1 not annotated yet" in pulled.stdout
    records = _records(out)
    assert sorted(records) == ["emoji-1", "zh-1"]
    for pid, record in records.items():
        assert record["source"] == "label-studio" and record["annotation"] == annotations[pid]
        assert record["task"] == tasks[pid]["id"] and record["text"] == tasks[pid]["data"]["text"]
        assert [(record["text"][s["start"]:s["end"]], s["label"]) for s in record["spans"]] == \
            [(s["text"], s["label"]) for s in sorted(corrections[pid], key=lambda s: s["start"])]

    # The exported JSON file, read offline, gives the same records.
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps(pull(client, project), ensure_ascii=False), encoding="utf-8")
    offline = tmp_path / "offline.jsonl"
    from_file = _review("pull", "--export", str(export_file), "--bundle", str(tiny_bundle), "--out", str(offline),
                        url="http://127.0.0.1:9")
    assert from_file.returncode == 0, from_file.stderr
    assert offline.read_text(encoding="utf-8") == out.read_text(encoding="utf-8")

    # A later annotation whose text does not match is reported, its task left out, the rest kept.
    bad = dict(_span(ZH_TITLE_2, "耐克", brand), text="阿迪")
    _annotate(client, tasks["zh-2"]["id"], corrections["zh-2"][1:] + [bad])
    mixed = _review("pull", "--project", PROJECT, "--out", str(out), url=client.url)
    assert mixed.returncode == 1
    assert f"task {tasks['zh-2']['id']} " in mixed.stderr and "阿迪" in mixed.stderr
    assert "2 written, 1 tasks with problems (1 problems), 0 not annotated yet" in mixed.stdout
    assert sorted(_records(out)) == ["emoji-1", "zh-1"]
