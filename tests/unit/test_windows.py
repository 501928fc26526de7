"""Long texts: overlapping windows at unit edges, merged back into whole-text spans."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from stream.tagging.decode import plan_batches, tag_units
from stream.tagging.spans import Span, label_list, unit_tags
from stream.tagging.tokenization import SPECIAL_TOKENS, UNITS, TextEncoder, Window

LABELS = label_list(["brand", "color"])


def oracle_scorer(gold_tags_per_window):
    """Scores a batch by looking up the gold tags of each window (identified by its ids)."""
    def score(batch):
        paths = []
        for row in range(batch.input_ids.shape[0]):
            key = tuple(int(i) for i in batch.input_ids[row][batch.attention_mask[row] == 1])
            paths.append(gold_tags_per_window[key])
        return paths, None
    return score


def test_windows_cover_every_unit_once_and_respect_max_length(wordpiece):
    encoder = TextEncoder(wordpiece, max_length=12, stride=4)
    units = encoder.units(["耐克黑色 Nike air max 270 " * 6])[0]
    windows = encoder.windows(units)
    assert len(windows) > 2
    assert all(len(w.input_ids) <= 12 for w in windows)
    owned = [i for w in windows for i in range(w.own_start, w.own_end)]
    assert owned == list(range(len(units)))
    for a, b in zip(windows, windows[1:]):
        assert b.unit_start < a.unit_end, "consecutive windows overlap"


@pytest.mark.parametrize("unit_mode", UNITS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(["耐", "克", "黑", "色", "nike", "air", "max", "270", "/", "T"]),
                      min_size=1, max_size=60),
       marks=st.lists(st.integers(0, 2), min_size=60, max_size=60))
def test_merged_windows_give_back_whole_text_spans(wordpiece, unit_mode, words, marks):
    encoder = TextEncoder(wordpiece, max_length=10, stride=3, units=unit_mode)
    text = " ".join(words)
    units = encoder.units([text])[0]
    assert all(a[1] <= b[0] for a, b in zip(units.spans, units.spans[1:])), "units never overlap"
    # Spans of one or two units, separated by at least one unit.
    spans, i = [], 0
    while i < len(units):
        width = marks[i % 60]
        if width and i + width <= len(units):
            spans.append(Span(units.spans[i][0], units.spans[i + width - 1][1], "brand" if width == 1 else "color"))
            i += width + 1
        else:
            i += 1
    tags, _ = unit_tags(units.spans, spans)
    ids = {tuple(w.input_ids): [LABELS.index(t) for t in tags[w.unit_start:w.unit_end]]
           for w in encoder.windows(units)}
    got = tag_units(encoder, [units], oracle_scorer(ids), LABELS, batch_size=3)[0]
    assert [(s.start, s.end, s.type) for s in got] == [(s.start, s.end, s.label) for s in spans]
    assert all(s.text == text[s.start:s.end] for s in got)


def test_pad_keeps_unit_positions_on_first_subtokens(wordpiece):
    encoder = TextEncoder(wordpiece, max_length=32, stride=8)
    units = encoder.units(["Nike 耐克", "ＸＬ"])
    batch = encoder.pad([encoder.windows(u)[0] for u in units])
    assert batch.input_ids.shape[0] == 2
    assert batch.unit_mask.sum(axis=1).tolist() == [len(units[0]), len(units[1])]
    assert np.all(batch.attention_mask[np.arange(2)[:, None], batch.unit_positions] == 1)


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=80), rows=st.integers(1, 16),
       budget=st.sampled_from([None, 1, 32, 100]))
def test_calls_hold_every_window_once_within_rows_and_padded_token_budget(lengths, rows, budget):
    windows = [Window(list(range(n)), [], 0, n, 0, n) for n in lengths]
    calls = plan_batches(windows, rows, budget)
    assert sorted(i for call in calls for i in call) == list(range(len(lengths)))
    for call in calls:
        longest = max(lengths[i] for i in call)
        assert len(call) <= rows
        assert budget is None or len(call) == 1 or len(call) * longest <= budget
        # sorted by length, so a call is a contiguous run of the length order
        assert [lengths[i] for i in call] == sorted(lengths[i] for i in call)


def _explicit_wordpiece() -> Tokenizer:
    vocab = [*SPECIAL_TOKENS, "men", "##s", "t", "-", "shirt", "cotton"]
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer


def test_sub_token_units_let_a_value_end_inside_a_word():
    text, gold = "Mens T-Shirt cotton", [Span(0, 3, "brand")]     # "Men" located in "Mens", as ae-110k has it
    words = TextEncoder(_explicit_wordpiece(), max_length=16, stride=4).units([text])[0]
    assert words.spans[0] == (0, 4)
    assert unit_tags(words.spans, gold)[1] == gold, "a word unit can only snap it out to the whole word"

    encoder = TextEncoder(_explicit_wordpiece(), max_length=16, stride=4, units="tokens")
    units = encoder.units([text])[0]
    assert units.spans == [(0, 3), (3, 4), (5, 6), (6, 7), (7, 12), (13, 19)]
    tags, snapped = unit_tags(units.spans, gold)
    assert not snapped and tags[:2] == ["S-brand", "O"]
    ids = {tuple(w.input_ids): [LABELS.index(t) for t in tags[w.unit_start:w.unit_end]] for w in encoder.windows(units)}
    got = tag_units(encoder, [units], oracle_scorer(ids), LABELS, batch_size=2)[0]
    assert [(s.start, s.end, s.type) for s in got] == [(0, 3, "brand")]
    assert encoder.with_lexicon(None).unit_mode == "tokens"
    with pytest.raises(ValueError, match="units must be one of words, tokens"):
        TextEncoder(_explicit_wordpiece(), units="letters")
