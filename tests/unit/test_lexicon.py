"""Lexicon features: every match found, BMES flags per unit and type, the same flags for every
sub-token of a unit, and clear errors for bad sources."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream.tagging.lexicon import FLAGS, Lexicon, LexiconError, read_specs
from stream.tagging.text import fold
from stream.tagging.tokenization import TextEncoder
from tests.conftest import DEMO_TAXONOMY

B, M, E, S = range(4)


def flags(features: np.ndarray, types: tuple[str, ...]) -> list[set[str]]:
    """Per unit, the active flags as 'type:flag' strings (readable assertions)."""
    return [{f"{types[i // 4]}:{FLAGS[i % 4]}" for i in np.flatnonzero(row)} for row in features]


def test_fold_keeps_one_character_for_one():
    assert fold("ＮＩＫＥ Air") == "nike air"
    assert len(fold("Straße İ")) == len("Straße İ")


def test_every_match_is_kept_overlaps_and_nesting_included():
    lexicon = Lexicon.build(["brand", "category"], {"brand": ["华为", "华为荣耀"], "category": ["荣耀", "手机"]})
    text = "华为荣耀手机"
    spans = [(i, i + 1) for i in range(len(text))]
    got = flags(lexicon.unit_features(text, spans), lexicon.types)
    assert got == [{"brand:B"}, {"brand:E", "brand:M"}, {"brand:M", "category:B"}, {"brand:E", "category:E"},
                   {"category:B"}, {"category:E"}]
    assert sorted(lexicon.matches(text)) == [(0, 2, 0), (0, 4, 0), (2, 4, 1), (4, 6, 1)]


def test_a_match_must_start_and_end_on_unit_edges():
    lexicon = Lexicon.build(["brand"], {"brand": ["HP", "hello kitty"]})
    text = "HPX printer by HP, Hello  Kitty and hello kitty"
    spans = [(0, 3), (4, 11), (12, 14), (15, 17), (17, 18), (19, 24), (26, 31), (32, 35), (36, 41), (42, 47)]
    got = flags(lexicon.unit_features(text, spans), lexicon.types)
    assert got[0] == set()                       # HP inside HPX is not a match
    assert got[3] == {"brand:S"}                 # HP alone
    assert got[5] == got[6] == set()             # two spaces: not the form
    assert got[8:] == [{"brand:B"}, {"brand:E"}]


def test_full_width_and_case_variants_match():
    lexicon = Lexicon.build(["size"], {"size": ["XL"]})
    assert lexicon.unit_features("ＸＬ码", [(0, 2), (2, 3)]).tolist()[0][S] == 1.0
    assert lexicon.unit_features("xl", [(0, 2)])[0, S] == 1.0


def test_an_empty_lexicon_and_an_empty_text_give_zeros():
    empty = Lexicon.build(["brand"], {})
    assert empty.matches("anything") == []
    assert empty.unit_features("ab", [(0, 1), (1, 2)]).shape == (2, 4)
    assert Lexicon.build(["brand"], {"brand": ["a"]}).unit_features("", []).shape == (0, 4)


def test_entries_of_unknown_types_are_ignored_and_with_entries_keeps_the_layout():
    lexicon = Lexicon.build(["brand"], {"brand": ["Nike"], "color": ["red"]})
    assert lexicon.types == ("brand",) and len(lexicon) == 1
    grown = lexicon.with_entries({"brand": ["Zewos"], "color": ["blue"]})
    assert grown.types == ("brand",) and grown.width == 4 and sorted(grown.entries["brand"]) == ["Nike", "Zewos"]


def test_every_sub_token_carries_its_units_flags_and_specials_carry_none(wordpiece):
    lexicon = Lexicon.build(["brand"], {"brand": ["UNIQLO", "耐克"]})
    encoder = TextEncoder(wordpiece, max_length=64, stride=8, lexicon=lexicon)
    text = "UNIQLO 耐克 shirt"
    units = encoder.units([text])[0]
    batch = encoder.pad(encoder.windows(units))
    assert batch.lexicon.shape == (*batch.input_ids.shape, 4)
    row = batch.lexicon[0]
    first = units.first_token + [len(units.token_ids)]
    for unit, (start, end) in enumerate(zip(first, first[1:])):
        expected = units.features[unit]
        assert (row[1 + start:1 + end] == expected).all()
    assert not row[0].any() and not row[len(units.token_ids) + 1:].any()   # [CLS], [SEP]
    assert units.features[0, S] == 1 and units.features[1, B] == 1 and units.features[2, E] == 1


def test_windows_slice_the_features_of_the_units_they_cover(wordpiece):
    lexicon = Lexicon.build(["brand"], {"brand": ["nike"]})
    encoder = TextEncoder(wordpiece, max_length=10, stride=3, lexicon=lexicon)
    units = encoder.units(["nike " * 12])[0]
    windows = encoder.windows(units)
    assert len(windows) > 1
    for w in windows:
        assert (w.features == units.features[w.unit_start:w.unit_end]).all()


def test_files_round_trip_and_bad_files_say_what_is_wrong(tmp_path):
    lexicon = Lexicon.build(["brand", "color"], {"brand": ["Nike", "耐克"], "color": ["red"]})
    path = tmp_path / "lexicon.json"
    lexicon.save(path)
    again = Lexicon.load(path)
    assert again.types == lexicon.types and again.entries == lexicon.entries
    path.write_text("{not json")
    with pytest.raises(LexiconError, match="not JSON"):
        Lexicon.load(path)
    path.write_text(json.dumps({"format_version": 1, "types": [], "entries": {}}))
    with pytest.raises(LexiconError, match="non-empty list"):
        Lexicon.load(path)
    path.write_text(json.dumps({"format_version": 1, "types": ["brand"], "entries": {"brand": "Nike"}}))
    with pytest.raises(LexiconError, match="list of strings"):
        Lexicon.load(path)


def test_sources_are_a_taxonomy_or_type_equals_word_list(tmp_path):
    words = tmp_path / "brands.txt"
    words.write_text("Velora\n\n  Zewos \n", encoding="utf-8")
    forms = read_specs([str(DEMO_TAXONOMY), f"brand={words}"])
    assert "Velora" in forms["brand"] and "Zewos" in forms["brand"] and "Nike" in forms["brand"]
    assert {"color", "category", "size"} <= set(forms)
    with pytest.raises(LexiconError, match="no such file|cannot read"):
        read_specs([f"brand={tmp_path / 'missing.txt'}"])
    with pytest.raises(LexiconError, match="TYPE=FILE"):
        read_specs([f"={words}"])
    with pytest.raises(LexiconError, match="taxonomy JSON file or TYPE=FILE"):
        read_specs([str(words)])
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(LexiconError, match="no entries"):
        read_specs([f"brand={tmp_path / 'empty.txt'}"])


def test_each_fold_of_the_training_titles_is_flagged_only_by_the_other_folds_mentions(wordpiece):
    pytest.importorskip("torch")
    from model.config import TrainConfig
    from model.data import Example
    from model.samples import training_samples
    from stream.tagging.spans import Span, label_list

    # Title i names brand i; title 2 also starts with title 0's brand, unlabelled there.
    brands = ["耐克", "华为", "雅川", "纯棉"]   # characters the small vocabulary knows
    texts = [f"{brand}跑步鞋" for brand in brands]
    texts[2] = "耐克" + texts[2]
    examples = [Example(str(i), text, (Span(text.index(brand), text.index(brand) + 2, "brand"),))
                for i, (text, brand) in enumerate(zip(texts, brands))]
    encoder = TextEncoder(wordpiece, max_length=32, stride=8)
    ids = {tuple(encoder.units([text])[0].token_ids): i for i, text in enumerate(texts)}

    def flagged(folds: int, **dealt) -> dict[int, list[set[str]]]:
        config = TrainConfig(train=("x",), out="y", lexicon_from_train=True, lexicon_folds=folds, **dealt)
        samples, _, lexicon = training_samples(config, encoder, examples, label_list(["brand"]))
        assert all(brand in lexicon.entries["brand"] for brand in brands)   # serving gets every mention
        return {ids[tuple(s.window.input_ids[1:-1])]: flags(s.window.features, lexicon.types) for s in samples}

    for folds in (2, 4):
        by_title = flagged(folds)
        assert sorted(by_title) == [0, 1, 2, 3]
        own = [by_title[i][texts[i].index(brand)] for i, brand in enumerate(brands)]
        assert own == [set()] * 4, folds   # a title's own mention is never flagged for it
    # Titles 0 and 2 share a fold of two (0::2) but not of four: only then does title 0's brand flag title 2.
    assert flagged(2)[2][:2] == [set(), set()]
    assert flagged(4)[2][:2] == [{"brand:B"}, {"brand:E"}]
    # Dealt by seed, the folds differ from run to run; a title's own mention is still never flagged.
    by_seed = [flagged(2, lexicon_fold_seed=True, seed=seed) for seed in range(6)]
    assert all(by_title[i][texts[i].index(brand)] == set() for by_title in by_seed for i, brand in enumerate(brands))
    assert len({str(by_title) for by_title in by_seed}) > 1
    with pytest.raises(ValueError, match="--lexicon-fold-seed is for --lexicon-from-train"):
        TrainConfig(train=("x",), out="y", lexicon_fold_seed=True)
    with pytest.raises(ValueError, match="--lexicon-folds is for --lexicon-from-train"):
        TrainConfig(train=("x",), out="y", lexicon_folds=4)


def test_lexicon_entries_are_kept_by_their_label_ratio_out_of_fold_and_mentions_can_have_their_own_types():
    from model.config import TrainConfig
    from model.data import Example
    from model.lexicon_train import fold_forms
    from stream.tagging.spans import Span

    def titled(i: int, text: str, *spans: tuple[str, str]) -> Example:
        return Example(str(i), text, tuple(Span(text.index(s), text.index(s) + len(s), label) for s, label in spans))

    # 佳能 is a brand once and left unlabelled twice (1 of 3); 华为 is labelled both times it occurs.
    fold_a = [titled(0, "佳能相机", ("佳能", "brand")), titled(1, "佳能打印机"), titled(2, "佳能墨盒")]
    fold_b = [titled(3, "华为手机", ("华为", "brand")), titled(4, "华为平板", ("华为", "brand")),
              titled(5, "ＡＢＣ鞋", ("ＡＢＣ", "brand"))]
    folds = [fold_a, fold_b]
    per_fold, serving = fold_forms(folds, {}, from_train=True)
    assert [mentions for _, mentions in per_fold] == [{"brand": ["华为", "ＡＢＣ"]}, {"brand": ["佳能"]}]
    assert sorted(serving[1]["brand"]) == ["佳能", "华为", "ＡＢＣ"]   # as the titles spell them
    per_fold, serving = fold_forms(folds, {}, from_train=True, min_ratio=0.5)
    assert per_fold[1][1] == {} and sorted(serving[1]["brand"]) == ["华为", "ＡＢＣ"]   # 佳能: 1 of 3 places
    assert fold_forms(folds, {}, from_train=True, min_ratio=0.3)[0][1][1]["brand"] == ["佳能"]
    per_fold, serving = fold_forms(folds, {}, from_train=True, own_types=True)
    assert set(serving[1]) == {"brand@train"} and per_fold[1][1] == {"brand@train": ["佳能"]}
    # Given entries: 机 (in both folds, never a brand) goes everywhere; 相机 (only in fold a, unlabelled)
    # is pruned for fold b and serving, but fold a's own titles do not count against it for fold a;
    # 索尼, which no training title holds, stays.
    given = {"brand": ["机", "相机", "索尼", "华为"]}
    per_fold, serving = fold_forms(folds, given, from_train=False, min_ratio=0.5)
    assert per_fold == [({"brand": ["相机", "索尼", "华为"]}, {}), ({"brand": ["索尼", "华为"]}, {})]
    assert serving == ({"brand": ["索尼", "华为"]}, {})
    assert fold_forms(folds, given, from_train=False)[1] == (given, {})   # no ratio: the given sources as they are
    with pytest.raises(ValueError, match="give --lexicon or --lexicon-from-train"):
        TrainConfig(train=("x",), out="y", lexicon_min_ratio=0.5)
    with pytest.raises(ValueError, match="--lexicon-train-types is for --lexicon-from-train"):
        TrainConfig(train=("x",), out="y", lexicon_train_types="own")
    with pytest.raises(ValueError, match="from 0 to 1, got 1.5"):
        TrainConfig(train=("x",), out="y", lexicon_from_train=True, lexicon_min_ratio=1.5)
    assert TrainConfig(train=("x",), out="y", lexicon=("brand=b.txt",), lexicon_min_ratio=0.5,
                       lexicon_folds=8).lexicon_folds == 8
