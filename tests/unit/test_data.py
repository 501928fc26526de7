"""Native JSONL and CoNLL readers: what they accept, and how they refuse bad data."""

from __future__ import annotations

import json

import pytest

from model.data import DataError, Example, read_conll, read_jsonl, write_conll, write_jsonl
from model.texts import read_texts
from stream.tagging.spans import Span
from tests.conftest import real_data_or_skip


def _jsonl(tmp_path, *records):
    path = tmp_path / "data.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records),
                    encoding="utf-8")
    return path


def test_reads_text_and_product_records(tmp_path):
    path = _jsonl(tmp_path,
                  {"id": "a", "text": "耐克跑鞋", "spans": [{"start": 0, "end": 2, "label": "brand"}]},
                  {"id": "b", "title": "Nike shoes", "description": "Black running shoes",
                   "spans": [{"field": "title", "start": 0, "end": 4, "label": "brand"},
                             {"field": "description", "start": 0, "end": 5, "label": "color"}]})
    examples = read_jsonl(path)
    assert examples == [
        Example("a", "耐克跑鞋", (Span(0, 2, "brand"),)),
        Example("b#title", "Nike shoes", (Span(0, 4, "brand", "title"),), "title"),
        Example("b#description", "Black running shoes", (Span(0, 5, "color", "description"),), "description"),
    ]


@pytest.mark.parametrize("line, message", [
    ('{"id": "a", "text": "abc", "spans": [', "malformed JSON"),
    ({"id": "a", "text": "abc", "spans": [{"start": 1, "end": 9, "label": "brand"}]}, "outside the text"),
    ({"id": "a", "text": "abcdef", "spans": [{"start": 0, "end": 3, "label": "brand"},
                                            {"start": 2, "end": 5, "label": "color"}]}, "overlaps"),
    ({"id": "a", "text": "abc", "spans": [{"start": 0, "end": 1, "label": "flavour"}]}, "unknown label 'flavour'"),
    ({"id": ["a"], "text": "abc"}, "'id' must be a string or an integer, got list"),
    ({"id": "a", "title": "abc", "spans": [{"field": "body", "start": 0, "end": 1, "label": "brand"}]}, "field 'body'"),
])
def test_bad_jsonl_is_refused_with_file_and_line(tmp_path, line, message):
    path = _jsonl(tmp_path, {"id": "ok", "text": "fine", "spans": []}, line)
    with pytest.raises(DataError) as err:
        read_jsonl(path, labels={"brand", "color"})
    assert f"{path}:2:" in str(err.value) and message in str(err.value)


def test_one_id_rule_for_training_and_pretraining_a_missing_id_is_the_line(tmp_path):
    path = _jsonl(tmp_path, {"id": 7, "text": "Nike", "spans": [{"start": 0, "end": 4, "label": "brand"}]},
                  "", {"text": "耐克跑鞋", "spans": [{"start": 0, "end": 2, "label": "brand"}]},
                  {"id": None, "title": "Nike shoes", "description": "Black"})
    assert [e.id for e in read_jsonl(path)] == ["7", "line-3", "line-4#title", "line-4#description"]
    assert read_texts([path]) == ["Nike", "耐克跑鞋", "Nike shoes", "Black"]
    bad = _jsonl(tmp_path, {"id": "ok", "text": "fine"}, {"id": {"n": 1}, "title": "Nike"})
    for read in (read_jsonl, lambda p: read_texts([p])):
        with pytest.raises(DataError, match=f"{bad}:2: 'id' must be a string or an integer, got dict"):
            read(bad)


def test_conll_bio_iob2_bioes_and_word_level(tmp_path):
    bio = tmp_path / "bio.txt"
    bio.write_text("Nike B-brand\nAir I-brand\nshoes B-category\n\n黑\tB-color\n色\tI-color\n", encoding="utf-8")
    examples = read_conll(bio, level="word").examples
    assert examples[0].text == "Nike Air shoes"
    assert examples[0].spans == (Span(0, 8, "brand"), Span(9, 14, "category"))
    assert examples[1].text == "黑 色"  # word level joins with spaces, as asked


def test_conll_i_without_b_is_refused_unless_repaired(tmp_path):
    path = tmp_path / "broken.bio"
    path.write_text("a\tO\nb\tO\n\nx\tO\ny\tI-brand\nz\tI-brand\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_conll(path)
    assert f"{path}:5:" in str(err.value) and "I-brand" in str(err.value)
    report = read_conll(path, repair=True)
    assert report.repaired == 1 and report.examples[1].spans == (Span(1, 3, "brand"),)


def test_conll_unknown_tag_names_the_line(tmp_path):
    path = tmp_path / "bad.bio"
    path.write_text("a\tO\nb\tX-brand\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.bio:2:"):
        read_conll(path)


def test_conll_round_trip_char_level(tmp_path):
    examples = [Example("1", "耐克 Nike跑鞋", (Span(0, 2, "brand"), Span(3, 7, "brand"), Span(7, 9, "category"))),
                Example("2", "黑色", (Span(0, 2, "color"),))]
    for scheme in ("bioes", "bio", "iob2"):
        path = tmp_path / f"out.{scheme}"
        assert write_conll(path, examples, scheme=scheme) == 0
        back = read_conll(path).examples
        assert [(e.text, e.spans) for e in back] == [(e.text, e.spans) for e in examples]


def test_jsonl_round_trip(tmp_path):
    examples = [Example("x", "Levi's 501", (Span(0, 6, "brand"), Span(7, 10, "model")))]
    write_jsonl(tmp_path / "o.jsonl", examples)
    assert read_jsonl(tmp_path / "o.jsonl") == examples


def test_real_ecommerce_data_imports():
    root = real_data_or_skip()
    report = read_conll(root / "train.bioes")
    assert len(report.examples) == 3989
    labels = [s.label for e in report.examples for s in e.spans]
    assert labels.count("HP") == 1630 and labels.count("HC") == 10480  # B- plus S- entities
    for ex in report.examples[:500]:
        for span in ex.spans:
            piece = ex.text[span.start:span.end]
            assert piece == piece.strip() and piece
