"""Weak labels by dictionary matching: longest match, no overlaps, type ties, word edges, case folding."""

from __future__ import annotations

import pytest

from stream.tagging.autolabel import AutolabelReport, autolabel, label_text, lexicon_of
from stream.tagging.spans import Span

FORMS = {
    "brand": ["耐克", "Nike", "HP", "Apple"],
    "category": ["鞋", "跑步鞋", "running shoes", "shoes", "运动鞋"],
    "color": ["黑色", "黑", "Apple"],          # "Apple" also a brand: a type tie
    "material": ["运动"],                       # inside 运动鞋: the longer match wins
}


@pytest.fixture
def lexicon():
    return lexicon_of(FORMS)


def _labelled(text, spans):
    return [(text[s.start:s.end], s.label) for s in spans]


def test_longest_match_wins_and_spans_never_overlap(lexicon):
    report = AutolabelReport()
    spans = label_text("耐克运动鞋跑步鞋黑色", lexicon, report=report)
    assert _labelled("耐克运动鞋跑步鞋黑色", spans) == [("耐克", "brand"), ("运动鞋", "category"),
                                                        ("跑步鞋", "category"), ("黑色", "color")]
    assert spans == sorted(spans) and all(a.end <= b.start for a, b in zip(spans, spans[1:]))
    assert report.overlapped == 1     # 运动 inside 运动鞋 (鞋 and 黑 are too short anyway)
    assert report.short == 3


def test_as_long_overlapping_matches_keep_the_earliest():
    lexicon = lexicon_of({"a": ["运动"], "b": ["动鞋"]})
    assert label_text("运动鞋", lexicon) == [Span(0, 2, "a")]
    assert label_text("a-b c", lexicon_of({"a": ["a-b"], "b": ["b c"]})) == [Span(0, 3, "a")]


def test_min_chars_drops_single_characters_unless_asked(lexicon):
    assert _labelled("黑鞋", label_text("黑鞋", lexicon)) == []
    assert _labelled("黑鞋", label_text("黑鞋", lexicon, min_chars=1)) == [("黑", "color"), ("鞋", "category")]


def test_latin_case_folding_and_full_width_forms_match(lexicon):
    text = "ＮＩＫＥ Running Shoes black"
    assert _labelled(text, label_text(text, lexicon)) == [("ＮＩＫＥ", "brand"), ("Running Shoes", "category")]


def test_a_match_never_cuts_a_latin_word_or_number(lexicon):
    assert label_text("HPX laptop", lexicon) == []
    assert label_text("NikeAir shoes", lexicon) == [Span(8, 13, "category")]
    assert _labelled("HP/惠普 笔记本", label_text("HP/惠普 笔记本", lexicon)) == [("HP", "brand")]
    # Next to CJK characters a Latin form is a unit of its own.
    assert _labelled("耐克Nike跑步鞋", label_text("耐克Nike跑步鞋", lexicon)) == [
        ("耐克", "brand"), ("Nike", "brand"), ("跑步鞋", "category")]


def test_type_ties_go_to_the_first_type_or_are_skipped_and_are_counted():
    report = AutolabelReport()
    by_name = lexicon_of(FORMS)
    assert label_text("Apple iPhone", by_name, report=report) == [Span(0, 5, "brand")]
    assert report.ties == 1
    color_first = lexicon_of(FORMS, types=["color", "brand", "category", "material"])
    assert label_text("Apple iPhone", color_first) == [Span(0, 5, "color")]
    skipped = AutolabelReport()
    assert label_text("Apple shoes", by_name, ties="skip", report=skipped) == [Span(6, 11, "category")]
    assert skipped.ties == 1
    with pytest.raises(ValueError, match="ties must be one of first, skip"):
        label_text("x", by_name, ties="random")


def test_autolabel_counts_titles_spans_per_type_and_titles_without_a_match(lexicon):
    report = AutolabelReport()
    out = autolabel(["耐克跑步鞋", "Nike shoes", "包邮 正品"], lexicon, report=report)
    assert [len(spans) for spans in out] == [2, 2, 0]
    assert (report.titles, report.unmatched, dict(report.spans)) == (3, 1, {"brand": 2, "category": 2})
    assert report.to_json()["spans"] == {"brand": 2, "category": 2}
    assert "3 titles, 4 spans (brand 2, category 2); 1 titles without a match" in report.summary()


def test_forms_that_gold_titles_show_wrong_are_dropped():
    from stream.tagging.autolabel import check_forms

    forms = {"brand": ["Nike", "包邮", "Puma"], "product": ["跑鞋"]}
    gold = [("Nike 跑鞋 包邮", [Span(0, 4, "brand"), Span(5, 7, "product")]),
            ("NIKE 包邮 黑色", [Span(0, 4, "brand")]),
            ("包邮 跑鞋", [Span(3, 5, "product")])]
    kept, report = check_forms(forms, gold)
    assert kept == {"brand": ["Nike", "Puma"], "product": ["跑鞋"]}   # Puma: never met, stays
    assert report["checked"] == 3 and report["dropped"] == 1
    assert report["most_frequent_dropped"] == ["brand '包邮' (0/3)"]
    confirmed, report = check_forms(forms, gold, confirmed_only=True)
    assert confirmed == {"brand": ["Nike"], "product": ["跑鞋"]}          # Puma: never met, gone
    assert report["unconfirmed"] == 1


def test_how_often_an_unmatched_position_is_o_is_cross_fitted():
    from stream.tagging.autolabel import unmatched_o_share

    forms = {"brand": ["Nike"]}
    gold = [("Nike 跑鞋", [Span(0, 4, "brand")]), ("Nike 黑色", [Span(0, 4, "brand")]),
            ("Puma 跑鞋", [Span(0, 4, "brand")]), ("Puma 红色", [Span(0, 4, "brand")])]
    # Each half has a Nike and a Puma title. "Puma" is never matched: 4 of a Puma title's 6
    # unmatched characters are entity; a Nike title's 2 unmatched characters are O.
    assert unmatched_o_share(forms, gold) == pytest.approx(8 / 16)
    # With the fitting half's entities added, the other half's Puma is found too.
    assert unmatched_o_share(forms, gold, add_gold_forms=True) == pytest.approx(1.0)
    assert unmatched_o_share(forms, gold[:1]) is None
