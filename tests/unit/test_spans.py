"""The label scheme and the spans -> unit tags -> spans round trip."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.tagging.spans import (SchemeError, Span, from_bioes, label_list, spans_from_tags, tag_runs, to_bioes,
                          unit_tags)
from stream.tagging.tokenization import TextEncoder


def test_label_list_is_o_then_bioes_per_sorted_type():
    assert label_list(["color", "brand"]) == ["O", "B-brand", "I-brand", "E-brand", "S-brand",
                                              "B-color", "I-color", "E-color", "S-color"]


@pytest.mark.parametrize("tags, expected", [
    (["B-x", "I-x", "O", "B-x"], ["B-x", "E-x", "O", "S-x"]),            # IOB2/BIO
    (["B-x", "I-x", "E-x", "S-y"], ["B-x", "I-x", "E-x", "S-y"]),         # BIOES unchanged
    (["B-x", "B-x", "I-y"], None),                                        # I-y without B-y
])
def test_to_bioes(tags, expected):
    if expected is None:
        with pytest.raises(SchemeError) as err:
            to_bioes(tags)
        assert err.value.index == 2 and "I-y" in str(err.value)
        assert to_bioes(tags, repair=True) == ["S-x", "S-x", "S-y"]
    else:
        assert to_bioes(tags) == expected


def test_from_bioes_collapses_to_bio():
    assert from_bioes(["B-x", "I-x", "E-x", "S-y", "O"], "bio") == ["B-x", "I-x", "I-x", "B-y", "O"]


def test_decoder_is_lenient_with_broken_sequences():
    # A decoder may emit an E without B, or a run that switches type mid-way.
    assert tag_runs(["E-x", "I-x", "E-x", "O", "I-y", "B-z", "E-y"]) == [(0, 1, "x"), (1, 3, "x"), (4, 5, "y"),
                                                                        (5, 6, "z"), (6, 7, "y")]


def test_unit_tags_reports_spans_off_unit_edges():
    units = [(0, 4), (5, 8), (9, 12)]
    tags, snapped = unit_tags(units, [Span(0, 4, "brand"), Span(6, 12, "model")])
    assert tags == ["S-brand", "B-model", "E-model"]
    assert snapped == [Span(6, 12, "model")]


PIECES = ["耐", "克", "黑", "色", "Nike", "air", "max", "270", "-", "/", "【", "】", " ", "  ", "ＸＬ", "码",
          "T", "shirt", "!", "😀", "é", "Ünï", "2026"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.sampled_from(PIECES), min_size=1, max_size=30), data=st.data())
def test_spans_tags_spans_round_trip(wordpiece, pieces, data):
    encoder = TextEncoder(wordpiece, max_length=16, stride=4)
    text = "".join(pieces)
    units = encoder.units([text])[0]
    for start, end in units.spans:
        assert 0 <= start < end <= len(text) and text[start:end].strip() == text[start:end]
    # Random non-overlapping spans whose edges are unit edges.
    n = len(units)
    cuts = sorted(data.draw(st.sets(st.integers(0, n), max_size=8))) if n else []
    spans = []
    for a, b in zip(cuts[::2], cuts[1::2]):
        if a < b:
            spans.append(Span(units.spans[a][0], units.spans[b - 1][1], data.draw(st.sampled_from(["brand", "color"]))))
    tags, snapped = unit_tags(units.spans, spans)
    assert snapped == []
    assert spans_from_tags(units.spans, tags) == spans
