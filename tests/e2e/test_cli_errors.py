"""Bad input to the CLI ends in one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import json

import pytest
from tests.e2e.conftest import one_line_error




def test_unknown_verb(cli):
    one_line_error(cli("frobnicate", check=False), "invalid choice")


def test_bad_number(cli, tmp_path):
    one_line_error(cli("synth", "--n", "-3", check=False), "positive integer")


def test_missing_training_file(cli, tmp_path):
    one_line_error(cli("train", "--train", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"), check=False),
                    "nope.jsonl: no such file")


def test_malformed_jsonl_names_the_line(cli, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"id": "1", "text": "ok", "spans": []}\n{"id": 2, "text": "x", "spans": [{"start": 0, "end": 5, '
                    '"label": "brand"}]}\n', encoding="utf-8")
    one_line_error(cli("train", "--train", str(data), "--out", str(tmp_path / "o"), check=False),
                    "bad.jsonl:2:", "outside the text")
    one_line_error(cli("check-data", str(data), check=False), "bad.jsonl:2:")


def test_conll_scheme_error_and_repair(cli, tmp_path):
    data = tmp_path / "x.bio"
    data.write_text("a\tO\nb\tI-brand\n", encoding="utf-8")
    one_line_error(cli("convert", str(data), str(tmp_path / "x.jsonl"), check=False), "x.bio:2:", "--repair")
    ok = cli("convert", str(data), str(tmp_path / "x.jsonl"), "--repair")
    assert "1 sentences repaired" in ok.stdout
    assert json.loads((tmp_path / "x.jsonl").read_text())["spans"] == [{"start": 1, "end": 2, "label": "brand"}]


def test_base_model_that_is_not_a_folder(cli, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "1", "text": "ok", "spans": []}\n', encoding="utf-8")
    one_line_error(cli("train", "--train", str(data), "--out", str(tmp_path / "o"), "--base-model",
                        str(tmp_path / "missing"), check=False), "not a directory")


@pytest.mark.parametrize("setup, needle", [
    (lambda p: None, "not a bundle directory"),
    (lambda p: p.mkdir(), "missing file manifest.json"),
])
def test_tag_with_a_bad_bundle(cli, tmp_path, setup, needle):
    bundle = tmp_path / "bundle"
    setup(bundle)
    one_line_error(cli("tag", "--bundle", str(bundle), "hello", check=False), needle)


def test_evaluate_a_folder_that_is_not_a_checkpoint(cli, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "1", "text": "ok", "spans": []}\n', encoding="utf-8")
    one_line_error(cli("evaluate", "--checkpoint", str(tmp_path), "--data", str(data), check=False),
                    "not a checkpoint")
