"""Weak labels as a user makes them: `tagstream autolabel` on unlabelled titles with the taxonomy,
then `tagstream train --weak` on a few gold titles plus the weak ones."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DEMO_TAXONOMY, write_synth
from tests.e2e.conftest import one_line_error


def _titles(path, n: int, seed: int):
    """Plain text, one unlabelled title per line (synthetic titles with their labels dropped)."""
    records = [json.loads(line) for line in write_synth(path.with_suffix(".jsonl"), n, seed).read_text().splitlines()]
    path.write_text("".join(r["text"] + "\n" for r in records), encoding="utf-8")
    return path, records


def test_autolabel_writes_partial_jsonl_and_counts(cli, tmp_path):
    titles, records = _titles(tmp_path / "titles.txt", 40, seed=21)
    out = tmp_path / "weak.jsonl"
    run = cli("autolabel", "--in", str(titles), "--out", str(out), "--lexicon", str(DEMO_TAXONOMY))
    weak = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(weak) == 40 and all(w["partial"] is True and set(w) == {"id", "text", "spans", "partial"} for w in weak)
    assert [w["text"] for w in weak] == [r["text"].strip() for r in records]
    assert weak[0]["id"] == "titles-1"
    assert "40 titles" in run.stdout and "titles without a match" in run.stdout
    # Dictionary spans of the taxonomy the titles come from are mostly the gold ones.
    gold = {(r["text"].strip(), s["start"], s["end"], s["label"]) for r in records for s in r["spans"]}
    found = [(w["text"], s["start"], s["end"], s["label"]) for w in weak for s in w["spans"]]
    assert found and sum(f in gold for f in found) >= 0.6 * len(found)
    bad = cli("autolabel", "--in", str(titles), "--out", str(out), "--lexicon", str(titles), check=False)
    one_line_error(bad, "--lexicon")


def test_train_with_weak_titles_records_them_in_the_checkpoint(cli, tmp_path):
    pytest.importorskip("torch")
    gold = write_synth(tmp_path / "gold.jsonl", 40, seed=22)
    dev = write_synth(tmp_path / "dev.jsonl", 30, seed=23)
    titles, _ = _titles(tmp_path / "titles.txt", 80, seed=24)
    weak = tmp_path / "weak.jsonl"
    cli("autolabel", "--in", str(titles), "--out", str(weak), "--lexicon", str(DEMO_TAXONOMY))
    small = ["--layers", "1", "--hidden", "32", "--heads", "2", "--vocab-size", "1000", "--epochs", "2",
             "--threads", "2"]
    run = cli("train", "--train", str(gold), "--dev", str(dev), "--weak", str(weak), "--out", str(tmp_path / "ck"),
              *small)
    assert "unmatched: prior, P(O) 0." in run.stderr and "dev micro-F1" in run.stdout
    meta = json.loads((tmp_path / "ck" / "tagger.json").read_text())
    o_prior = meta["weak"].pop("o_prior")
    assert meta["weak"] == {"files": [str(weak)], "titles": 80, "unmatched": "prior"} and 0 < o_prior < 1
    assert meta["config"]["weak"] == [str(weak)]
    naive = cli("train", "--train", str(gold), "--dev", str(dev), "--weak", str(weak), "--weak-unmatched", "o",
                "--out", str(tmp_path / "ck-o"), *small)
    assert "unmatched: o" in naive.stderr
    assert json.loads((tmp_path / "ck-o" / "tagger.json").read_text())["weak"]["unmatched"] == "o"
