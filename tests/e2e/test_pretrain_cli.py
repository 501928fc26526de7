"""`tagstream pretrain` as a user runs it, and the base model it writes fine-tuned by `tagstream train`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")


def _one_line_error(run, status: int, *needles: str) -> None:
    assert run.returncode == status, run.stderr
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tagstream"), run.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_pretrain_then_fine_tune_on_the_base_model(cli, tmp_path):
    products = tmp_path / "products.jsonl"
    cli("synth", "--n", "150", "--seed", "7", "--products", "--out", str(products))
    titles = tmp_path / "titles.txt"
    titles.write_text("耐克 Nike Air Max 270 男士跑步鞋 黑色 42码\nLevi's 501 Original Fit Jeans Blue 32x34\n",
                      encoding="utf-8")
    base = tmp_path / "base"
    run = cli("pretrain", "--texts", str(products), "--texts", str(titles), "--out", str(base), "--layers", "1",
              "--hidden", "32", "--heads", "2", "--vocab-size", "2000", "--max-steps", "40", "--threads", "1")
    assert "40 steps (max steps)" in run.stdout and f"base model {base}" in run.stdout
    assert "products.jsonl: 300 texts (jsonl)" in run.stderr and "titles.txt: 2 texts (plain)" in run.stderr
    for name in ("config.json", "model.safetensors", "tokenizer.json", "pretrain.json"):
        assert (base / name).is_file(), name
    meta = json.loads((base / "pretrain.json").read_text(encoding="utf-8"))
    assert meta["steps"] == 40 and meta["held_out_after"]["tokens"] > 0

    labelled = tmp_path / "train.jsonl"
    cli("synth", "--n", "120", "--seed", "8", "--out", str(labelled))
    trained = cli("train", "--train", str(labelled), "--out", str(tmp_path / "ck"), "--base-model", str(base),
                  "--epochs", "1", "--lr", "1e-3", "--threads", "1")
    assert "dev micro-F1" in trained.stdout
    tagger = json.loads((tmp_path / "ck" / "tagger.json").read_text(encoding="utf-8"))
    assert tagger["base_model"] == str(base)
    # The checkpoint's vocabulary is the pretrained one.
    assert (tmp_path / "ck" / "tokenizer.json").read_text(encoding="utf-8") == \
        (base / "tokenizer.json").read_text(encoding="utf-8")


def test_bad_arguments_and_bad_texts_are_one_line(cli, tmp_path):
    titles = tmp_path / "titles.txt"
    titles.write_text("耐克跑步鞋\n", encoding="utf-8")
    out = str(tmp_path / "base")
    _one_line_error(cli("pretrain", "--texts", str(titles), "--out", out, "--max-steps", "0", check=False), 2,
                    "--max-steps", "positive integer")
    _one_line_error(cli("pretrain", "--out", out, check=False), 2, "--texts")
    bad = tmp_path / "events.jsonl"
    bad.write_text('{"product_id": "p1", "op": "upsert", "version": 1, "title": "耐克"}\nnot json\n', encoding="utf-8")
    _one_line_error(cli("pretrain", "--texts", str(titles), "--texts", str(bad), "--out", out, check=False), 1,
                    "events.jsonl:2: malformed JSON")
    _one_line_error(cli("pretrain", "--texts", str(tmp_path / "nope.txt"), "--out", out, check=False), 1,
                    "nope.txt: no such file")
    assert not Path(out).exists()


def test_pretrain_with_the_lexicon_at_the_input_then_fine_tune_from_its_projection(cli, tmp_path):
    from tests.conftest import DEMO_TAXONOMY

    titles = tmp_path / "titles.jsonl"
    cli("synth", "--n", "150", "--seed", "7", "--out", str(titles))
    base = tmp_path / "base"
    run = cli("pretrain", "--texts", str(titles), "--out", str(base), "--layers", "1", "--hidden", "32", "--heads", "2",
              "--vocab-size", "1500", "--max-steps", "20", "--threads", "1", "--lexicon", str(DEMO_TAXONOMY))
    assert "lexicon flags at the input: types ['audience', 'brand'," in run.stderr
    assert "--lexicon-at input, with the same --lexicon/--words" in run.stdout
    assert (base / "lexicon_input.json").is_file() and (base / "lexicon_input.safetensors").is_file()

    trained = cli("train", "--train", str(titles), "--out", str(tmp_path / "ck"), "--base-model", str(base),
                  "--epochs", "1", "--lr", "1e-3", "--threads", "1", "--lexicon", str(DEMO_TAXONOMY),
                  "--lexicon-at", "input")
    # The labels bring a tenth type the taxonomy lacks: its 4 columns start afresh.
    assert f"lexicon projection: 36 of 40 feature columns started from {base}" in trained.stderr
    tagger = json.loads((tmp_path / "ck" / "tagger.json").read_text(encoding="utf-8"))
    assert tagger["lexicon"]["from_base"] == ["audience", "brand", "category", "color", "material", "pattern",
                                              "season", "size", "style"]

    _one_line_error(cli("pretrain", "--texts", str(titles), "--out", str(tmp_path / "b2"), "--lexicon",
                        f"brand={tmp_path / 'nope.txt'}", check=False), 1, "--lexicon", "nope.txt")
    _one_line_error(cli("pretrain", "--texts", str(titles), "--out", str(tmp_path / "b2"), "--words",
                        str(tmp_path / "words.txt"), check=False), 1, "--words", "words.txt: cannot read")
    assert not (tmp_path / "b2").exists()
