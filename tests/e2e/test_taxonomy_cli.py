"""The curators' verbs as a user runs them: validate, stats, diff, apply, drift report from a file."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import DEMO_TAXONOMY, ROOT


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_validate_stats_and_diff(tmp_path):
    ok = _run("taxonomy", "validate", str(DEMO_TAXONOMY))
    assert ok.returncode == 0 and ok.stdout.strip().endswith("381 nodes, 10 types)")
    data = json.loads(DEMO_TAXONOMY.read_text(encoding="utf-8"))
    data["nodes"][5]["parent"] = "category.nowhere"
    data["nodes"].append(dict(data["nodes"][0]))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data), encoding="utf-8")
    bad = _run("taxonomy", "validate", str(broken))
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    assert f"duplicate id '{data['nodes'][0]['id']}'" in bad.stderr and "unknown parent 'category.nowhere'" in bad.stderr

    stats = _run("taxonomy", "stats", str(DEMO_TAXONOMY))
    assert stats.returncode == 0 and "brand" in stats.stdout and "381 nodes" in stats.stdout
    newer = json.loads(DEMO_TAXONOMY.read_text(encoding="utf-8"))
    newer["version"] = "next"
    newer["nodes"] = [n for n in newer["nodes"] if n["id"] != "brand.anker"]
    newer["nodes"].append({"id": "brand.velora", "type": "brand", "zh": "", "en": "Velora", "synonyms": [],
                           "parent": None})
    (tmp_path / "newer.json").write_text(json.dumps(newer), encoding="utf-8")
    diff = _run("taxonomy", "diff", str(DEMO_TAXONOMY), str(tmp_path / "newer.json"), "--json")
    assert diff.returncode == 0
    assert {k: json.loads(diff.stdout)[k] for k in ("added", "removed")} == {"added": ["brand.velora"],
                                                                           "removed": ["brand.anker"]}


def test_suggest_and_apply_from_files_and_a_drift_chart(tmp_path):
    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text(json.dumps({"type": "brand", "key": "velora", "text": "Velora", "count": 12,
                                      "products": 12, "examples": ["Velora 连衣裙"]}) + "\n", encoding="utf-8")
    patch, new = tmp_path / "patch.json", tmp_path / "new.json"
    assert _run("taxonomy", "suggest", "--taxonomy", str(DEMO_TAXONOMY), "--file", str(candidates),
                "--out", str(patch)).returncode == 0
    applied = _run("taxonomy", "apply", "--taxonomy", str(DEMO_TAXONOMY), "--patch", str(patch), "--out", str(new))
    assert applied.returncode == 0 and "1 nodes added" in applied.stderr
    assert _run("taxonomy", "validate", str(new)).returncode == 0
    assert _run("taxonomy", "apply", "--taxonomy", str(DEMO_TAXONOMY), "--patch", str(candidates),
                "--out", str(new)).stderr.startswith("tagstream: error: ")

    reports = tmp_path / "drift.jsonl"
    rows = []
    for i, psi in enumerate((0.02, 0.03, 0.41)):
        rows.append({"window": {"start": f"2026-11-30T10:0{i}:00.000Z", "end": f"2026-11-30T10:0{i + 1}:00.000Z",
                                "texts": 200}, "alert": psi > 0.2, "alerts": ["top_value_psi"] if psi > 0.2 else [],
                     "metrics": {"tag_type_psi": psi / 2, "top_value_psi": psi, "tag_type_js": 0.01,
                                 "top_value_js": 0.02, "out_of_taxonomy_rate": 0.1,
                                 "confidence": {"mean": 0.8, "p05": 0.4, "p50": 0.85}, "unknown_token_rate": 0.01,
                                 "no_tag_share": 0.02, "text_length_shift": 0.05},
                     "thresholds": {"psi": 0.2, "js": 0.1, "out_of_taxonomy_rate": 0.5}})
    reports.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    chart = tmp_path / "drift.png"
    drawn = _run("drift", "report", "--file", str(reports), "--out", str(chart))
    assert drawn.returncode == 0 and "3 windows, 1 with an alert" in drawn.stderr
    assert chart.read_bytes()[:4] == b"\x89PNG"


def test_suggest_refuses_records_that_are_not_candidates_in_one_line(tmp_path):
    enriched = tmp_path / "enriched.jsonl"
    enriched.write_text(json.dumps({"product_id": "p1", "version": 1, "tags": []}) + "\n", encoding="utf-8")
    done = _run("taxonomy", "suggest", "--taxonomy", str(DEMO_TAXONOMY), "--file", str(enriched),
                "--out", str(tmp_path / "patch.json"))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "not a taxonomy candidate" in done.stderr
