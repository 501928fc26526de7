"""Word-dictionary features (SoftLexicon-style, untyped): word positions per character weighted by
frequency, the same after a lexicon file round trip, clear errors for bad dictionaries, and a model
trained with them that passes the export parity gate and tags through the torch-free pipeline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stream.tagging.lexicon import Lexicon, LexiconError
from stream.tagging.words import WIDTH, WordDictionary, WordsError, read_word_frequencies
from tests.conftest import write_synth

B, M, E, S = range(4)
WORDS = {"手机": 100, "手机壳": 20, "机壳": 5, "壳": 50, "华为": 300}


def _chars(text: str) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(len(text))]


def test_each_character_gets_the_weighted_share_of_words_around_it():
    words = WordDictionary.build("tiny", WORDS)
    text = "华为手机壳"
    features = words.unit_features(text, _chars(text))
    assert features.shape == (5, WIDTH)
    w = {word: math.log1p(count) for word, count in WORDS.items()}
    # 手 begins 手机 and 手机壳; 机 ends 手机, continues 手机壳, begins 机壳; 壳 ends two words and is one.
    np.testing.assert_allclose(features[2, :4], [1, 0, 0, 0], atol=1e-6)
    machine = w["手机"] + w["手机壳"] + w["机壳"]
    np.testing.assert_allclose(features[3, :4], [w["机壳"] / machine, w["手机壳"] / machine, w["手机"] / machine, 0],
                               rtol=1e-5)
    shell = w["手机壳"] + w["机壳"] + w["壳"]
    np.testing.assert_allclose(features[4, :4], [0, 0, (w["手机壳"] + w["机壳"]) / shell, w["壳"] / shell], rtol=1e-5)
    assert features[3, 4:].tolist() == [1, 1, 1, 0]      # presence: begins, continues, ends; no 机 alone
    assert features[0, 4:].tolist() == [1, 0, 0, 0] and features[1, 4:].tolist() == [0, 0, 1, 0]


def test_words_count_only_on_unit_edges_and_unknown_text_gives_zeros():
    words = WordDictionary.build("tiny", {"ab": 3})
    assert words.unit_features("abc", [(0, 3)]).sum() == 0          # "ab" ends inside the unit
    assert words.unit_features("xyz", _chars("xyz")).sum() == 0
    assert words.unit_features("", []).shape == (0, WIDTH)


def test_a_lexicon_carries_words_after_its_typed_flags_and_through_its_file(tmp_path):
    words = WordDictionary.build("tiny", WORDS)
    lexicon = Lexicon.build(["brand"], {"brand": ["华为"]}, words)
    assert lexicon.width == 4 + WIDTH
    text = "华为手机壳"
    features = lexicon.unit_features(text, _chars(text))
    assert features[0, :4].tolist() == [1, 0, 0, 0]                  # brand:B
    np.testing.assert_array_equal(features[:, 4:], words.unit_features(text, _chars(text)))
    lexicon.save(tmp_path / "lexicon.json")
    again = Lexicon.load(tmp_path / "lexicon.json")
    assert again.words.frequencies == words.frequencies and again.words.source == "tiny"
    np.testing.assert_array_equal(again.unit_features(text, _chars(text)), features)
    merged = again.with_entries({"brand": ["小米"]})                 # a taxonomy applied at serving
    assert merged.words is again.words and merged.width == lexicon.width
    only_words = Lexicon.build([], {}, words)
    assert only_words.width == WIDTH
    only_words.save(tmp_path / "words-only.json")
    assert Lexicon.load(tmp_path / "words-only.json").width == WIDTH


def test_bad_dictionaries_say_where_and_what(tmp_path):
    path = tmp_path / "dict.txt"
    path.write_text("手机 100 n\n壳\n\n华为 x\n", encoding="utf-8")
    with pytest.raises(WordsError, match=r"dict.txt:4: expected 'word frequency'"):
        read_word_frequencies(path)
    path.write_text("手机 100 n\n壳\n", encoding="utf-8")
    assert read_word_frequencies(path) == [("手机", 100), ("壳", 1)]
    path.write_text("手机 0\n", encoding="utf-8")
    with pytest.raises(WordsError, match="must be positive"):
        read_word_frequencies(path)
    with pytest.raises(WordsError, match="no words"):
        WordDictionary.build("empty", {})
    lexicon = tmp_path / "lexicon.json"
    lexicon.write_text(json.dumps({"format_version": 1, "types": [], "entries": {},
                                   "words": {"source": "x", "entries": [["a", "many"]]}}), encoding="utf-8")
    with pytest.raises(LexiconError, match="positive integer frequency"):
        Lexicon.load(lexicon)


def test_a_words_model_trains_exports_through_the_parity_gate_and_tags(tmp_path):
    pytest.importorskip("torch")
    from export.bundle import export_bundle
    from export.config import ExportConfig
    from model.config import TrainConfig
    from model.train import load_checkpoint, train
    from stream.tagging.pipeline import Pipeline

    train_file = write_synth(tmp_path / "train.jsonl", 150, seed=11, lang="zh")
    dev_file = write_synth(tmp_path / "dev.jsonl", 200, seed=12, lang="zh")
    titles = [json.loads(line)["text"] for line in dev_file.read_text(encoding="utf-8").splitlines()[:20]]
    # A dictionary of every two-character stretch of the training titles: plenty of matches.
    pairs = {}
    for line in train_file.read_text(encoding="utf-8").splitlines():
        text = json.loads(line)["text"]
        for i in range(len(text) - 1):
            pairs[text[i:i + 2]] = pairs.get(text[i:i + 2], 0) + 1
    dictionary = tmp_path / "words.txt"
    dictionary.write_text("".join(f"{w} {c}\n" for w, c in pairs.items() if not w.isspace()), encoding="utf-8")
    train(TrainConfig(train=(str(train_file),), dev=str(dev_file), out=str(tmp_path / "ck"), layers=1, hidden=32,
                      heads=2, epochs=2, batch_size=16, threads=2, vocab_size=1500, words=str(dictionary),
                      lexicon_at="input"), log=lambda _: None)
    meta = json.loads((tmp_path / "ck" / "tagger.json").read_text(encoding="utf-8"))["lexicon"]
    assert meta["types"] == [] and meta["width"] == WIDTH and meta["words"]["source"] == "words.txt"
    checkpoint = load_checkpoint(tmp_path / "ck")
    assert checkpoint.model.lexicon_embed.weight.shape == (32, WIDTH)
    bundle = export_bundle(ExportConfig(checkpoint=str(tmp_path / "ck"), out=str(tmp_path / "bundle"), int8=True,
                                        version="1"), log=lambda _: None)
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["parity"]["passed"] and manifest["parity"]["max_abs_emission_diff"] <= 1e-4
    pipeline = Pipeline.load(bundle, device="cpu")
    assert pipeline.tagger.encoder.lexicon.words is not None
    tagged = pipeline([{"title": t} for t in titles])
    assert len(tagged) == 20
    assert all(titles[i][t.start:t.end] == t.text for i, r in enumerate(tagged) for t in r.tags)
