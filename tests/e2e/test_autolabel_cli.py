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
    assert meta["weak"] == {"files": [str(weak)], "titles": 80, "unmatched": "prior", "teacher": None,
                            "weight": 1.0} and 0 < o_prior < 1
    assert meta["config"]["weak"] == [str(weak)]
    naive = cli("train", "--train", str(gold), "--dev", str(dev), "--weak", str(weak), "--weak-unmatched", "o",
                "--out", str(tmp_path / "ck-o"), *small)
    assert "unmatched: o" in naive.stderr
    assert json.loads((tmp_path / "ck-o" / "tagger.json").read_text())["weak"]["unmatched"] == "o"



def test_weak_titles_with_confirmed_forms_and_a_teacher(cli, tmp_path):
    """The recipe that beat reading unmatched positions as O on real data: a dictionary cut to the
    forms gold titles confirm, a teacher trained on the gold titles, the partial CRF weighed by it."""
    pytest.importorskip("torch")
    gold = write_synth(tmp_path / "gold.jsonl", 40, seed=22)
    dev = write_synth(tmp_path / "dev.jsonl", 30, seed=23)
    titles, _ = _titles(tmp_path / "titles.txt", 60, seed=24)
    weak = tmp_path / "weak.jsonl"
    run = cli("autolabel", "--in", str(titles), "--out", str(weak), "--lexicon", str(DEMO_TAXONOMY),
              "--check-against", str(gold), "--confirmed-only")
    assert "never met dropped (--confirmed-only)" in run.stderr
    one_line_error(cli("autolabel", "--in", str(titles), "--out", str(weak), "--lexicon", str(DEMO_TAXONOMY),
                       "--confirmed-only", check=False), "--confirmed-only needs --check-against")
    small = ["--layers", "1", "--hidden", "32", "--heads", "2", "--vocab-size", "1000", "--epochs", "2",
             "--threads", "2"]
    cli("train", "--train", str(gold), "--dev", str(dev), "--out", str(tmp_path / "teacher"), *small)
    run = cli("train", "--train", str(gold), "--dev", str(dev), "--weak", str(weak), "--weak-unmatched", "teacher",
              "--weak-teacher", str(tmp_path / "teacher"), "--weak-weight", "0.5", "--out", str(tmp_path / "ck"),
              *small)
    assert "unmatched: teacher" in run.stderr
    meta = json.loads((tmp_path / "ck" / "tagger.json").read_text())["weak"]
    assert (meta["unmatched"], meta["teacher"], meta["weight"]) == ("teacher", str(tmp_path / "teacher"), 0.5)
    one_line_error(cli("train", "--train", str(gold), "--weak", str(weak), "--weak-teacher", str(tmp_path / "teacher"),
                       "--out", str(tmp_path / "x"), *small, check=False), "--weak-teacher is for --weak-unmatched teacher")
    # Without --weak-teacher, one is trained first on the gold titles, with the same settings.
    run = cli("train", "--train", str(gold), "--dev", str(dev), "--weak", str(weak), "--weak-unmatched", "teacher",
              "--out", str(tmp_path / "ck2"), *small)
    assert "teacher: training on the gold titles alone" in run.stdout + run.stderr
    assert json.loads((tmp_path / "ck2" / "tagger.json").read_text())["weak"]["teacher"] == str(tmp_path / "ck2" / "teacher")
    assert json.loads((tmp_path / "ck2" / "teacher" / "tagger.json").read_text())["weak"] is None
    one_line_error(cli("train", "--train", str(gold), "--weak", str(weak), "--weak-unmatched", "teacher",
                       "--weak-teacher", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"), *small, check=False),
                   "not a checkpoint")
