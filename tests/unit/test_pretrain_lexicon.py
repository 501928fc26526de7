"""The lexicon at the input already during pretraining: the flags pretraining sees are the ones
fine-tuning sees, the projection is saved beside the base model, and fine-tuning starts its own from
it column by column where types and word dictionary agree."""

from __future__ import annotations

import json
import random

import pytest

from model.data import DataError
from stream.tagging.lexicon import Lexicon
from stream.tagging.tokenization import TextEncoder
from stream.tagging.words import WIDTH as WORD_WIDTH, WordDictionary
from tests.conftest import DEMO_TAXONOMY, SAMPLE_TEXTS, write_synth

torch = pytest.importorskip("torch")

from safetensors.torch import load_file, save_file  # noqa: E402

from model import bert_crf  # noqa: E402
from model.config import PretrainConfig, TrainConfig  # noqa: E402
from model.pretrain import Masker, encode_texts, pretrain  # noqa: E402
from model.pretrain_lexicon import LAYOUT, WEIGHTS, start_projection, token_features  # noqa: E402

LEXICON = Lexicon.build(["brand", "color"], {"brand": ["耐克", "Nike", "华为", "UNIQLO"], "color": ["黑色", "white"]})


def test_pretraining_sees_the_flags_fine_tuning_sees(wordpiece):
    features = token_features(wordpiece, LEXICON, SAMPLE_TEXTS, 128)
    encoded = encode_texts(wordpiece, SAMPLE_TEXTS, 128, features=features)
    fine_tuning = TextEncoder(wordpiece, 128, 32, LEXICON)
    for text, enc in zip(SAMPLE_TEXTS, encoded):
        padded = fine_tuning.pad(fine_tuning.windows(fine_tuning.units([text])[0]))
        assert padded.input_ids.shape[0] == 1, "one window each, so the two line up"
        assert enc.features.shape == (len(enc.ids), LEXICON.width)
        assert (padded.lexicon[0, 1:1 + len(enc.ids)] == enc.features).all(), text
    assert sum(float(e.features.sum()) for e in encoded) >= 6, "耐克, Nike, 华为, UNIQLO, 黑色, white are flagged"

    batch = Masker.for_tokenizer(wordpiece, 0.15).batch(encoded, random.Random(0))
    flags = batch["lexicon"]
    assert flags.shape == (*batch["input_ids"].shape, LEXICON.width)
    assert not flags[:, 0].any(), "[CLS] has no flags"
    for row, enc in enumerate(encoded):
        assert (flags[row, 1:1 + len(enc.ids)].numpy() == enc.features).all()
        assert not flags[row, 1 + len(enc.ids):].any(), "[SEP] and padding have none"

    first = SAMPLE_TEXTS[:1]
    cut = encode_texts(wordpiece, first, 16, features=token_features(wordpiece, LEXICON, first, 16))
    assert cut[0].features.shape == (14, LEXICON.width)


@pytest.fixture(scope="module")
def lexicon_base(tmp_path_factory):
    root = tmp_path_factory.mktemp("lexicon-base")
    data = write_synth(root / "titles.jsonl", 120, seed=21)
    config = PretrainConfig(texts=(str(data),), out=str(root / "base"), layers=1, hidden=32, heads=2, vocab_size=1500,
                            batch_size=16, lr=2e-3, max_steps=30, held_out=0.1, threads=1,
                            lexicon=(str(DEMO_TAXONOMY),))
    return pretrain(config, log=lambda _: None).out


def test_the_projection_and_its_layout_are_saved_beside_the_base_model(lexicon_base, tmp_path):
    from safetensors import safe_open

    layout = json.loads((lexicon_base / LAYOUT).read_text(encoding="utf-8"))
    types = sorted(("audience", "brand", "category", "color", "material", "pattern", "season", "size", "style"))
    assert layout["types"] == types and layout["width"] == 4 * len(types) and layout["words"] is None
    assert layout["hidden"] == 32 and layout["sources"] == [str(DEMO_TAXONOMY)]
    assert load_file(str(lexicon_base / WEIGHTS))["weight"].shape == (32, layout["width"])
    assert json.loads((lexicon_base / "pretrain.json").read_text(encoding="utf-8"))["lexicon"] == layout
    with safe_open(str(lexicon_base / "model.safetensors"), "pt") as weights:
        assert not [k for k in weights.keys() if "lexicon" in k], "the encoder's weights stay a plain BERT's"
    bert_crf.pretrained_encoder(lexicon_base)   # still loads as one

    # A later pretraining into the same folder without flags leaves no stale projection behind.
    again = tmp_path / "again"
    again.mkdir()
    for name in (LAYOUT, WEIGHTS):
        (again / name).write_bytes((lexicon_base / name).read_bytes())
    data = write_synth(tmp_path / "titles.jsonl", 40, seed=22)
    pretrain(PretrainConfig(texts=(str(data),), out=str(again), layers=1, hidden=32, heads=2, vocab_size=800,
                            max_steps=3, held_out=0.0, threads=1), log=lambda _: None)
    assert not (again / LAYOUT).exists() and not (again / WEIGHTS).exists()


def _fake_base(folder, types, words, hidden=32, width=None):
    """A base model folder holding only a projection: column c of row r is 1000 * c + r, so each moved
    column can be recognised."""
    folder.mkdir(parents=True, exist_ok=True)
    width = width if width is not None else 4 * len(types) + (WORD_WIDTH if words else 0)
    weight = torch.arange(width, dtype=torch.float32)[None, :] * 1000 + torch.arange(hidden)[:, None]
    save_file({"weight": weight}, str(folder / WEIGHTS))
    (folder / LAYOUT).write_text(json.dumps({"types": types, "width": 4 * len(types) + (WORD_WIDTH if words else 0),
                                             "words": words}), encoding="utf-8")
    return weight


def _tagger(lexicon, hidden=32):
    encoder = bert_crf.scratch_encoder(100, 1, hidden, 2, 64)
    return bert_crf.BertCrf(encoder, 5, 0.1, lexicon.width, 32, "input")


def test_fine_tuning_starts_its_projection_from_the_columns_both_layouts_have(tmp_path):
    weight = _fake_base(tmp_path / "base", ["brand", "color"], "w.txt")
    lexicon = Lexicon.build(["brand", "new", "color"], {"brand": ["耐克"]}, WordDictionary.build("w.txt", {"耐克": 5}))
    model = _tagger(lexicon)
    fresh = model.lexicon_embed.weight.detach().clone()
    logged = []
    config = TrainConfig(train=("x",), out="y", base_model=str(tmp_path / "base"), lexicon_at="input")
    assert start_projection(model, config, lexicon, logged.append) == ["brand", "color", "words"]
    started = model.lexicon_embed.weight.detach()
    assert torch.equal(started[:, 0:4], weight[:, 0:4])            # brand: first in both
    assert torch.equal(started[:, 8:12], weight[:, 4:8])           # color: third here, second in the base
    assert torch.equal(started[:, 4:8], fresh[:, 4:8])             # new: the base never saw it
    assert torch.equal(started[:, 12:], weight[:, 8:])             # the same word dictionary
    assert logged == [f"lexicon projection: {8 + WORD_WIDTH} of {12 + WORD_WIDTH} feature columns started from "
                      f"{tmp_path / 'base'} (brand, color, words)"]

    other_words = Lexicon.build(["color"], {}, WordDictionary.build("other.txt", {"耐克": 5}))
    model = _tagger(other_words)
    assert start_projection(model, config, other_words, logged.append) == ["color"]


def test_a_projection_that_cannot_be_used_is_a_warning_and_a_fresh_start(tmp_path):
    _fake_base(tmp_path / "base", ["brand"], None)
    config = TrainConfig(train=("x",), out="y", base_model=str(tmp_path / "base"), lexicon_at="input")
    unrelated = Lexicon.build(["size"], {"size": ["XL"]})
    model = _tagger(unrelated)
    fresh = model.lexicon_embed.weight.detach().clone()
    logged = []
    assert start_projection(model, config, unrelated, logged.append) is None
    assert torch.equal(model.lexicon_embed.weight, fresh)
    assert "shares no feature with this lexicon (types ['size'], words None)" in logged[-1]
    at_output = TrainConfig(train=("x",), out="y", base_model=str(tmp_path / "base"), lexicon_at="output")
    assert start_projection(model, at_output, unrelated, logged.append) is None
    assert "--lexicon-at output" in logged[-1] and logged[-1].startswith("warning:")
    assert start_projection(model, config, None, logged.append) is None and "has no lexicon" in logged[-1]
    plain = TrainConfig(train=("x",), out="y", base_model=str(tmp_path), lexicon_at="input")
    assert start_projection(model, plain, unrelated, logged.append) is None and len(logged) == 3


def test_a_corrupt_projection_is_refused_with_what_is_wrong(tmp_path):
    lexicon = Lexicon.build(["brand"], {"brand": ["耐克"]})
    config = TrainConfig(train=("x",), out="y", base_model=str(tmp_path / "base"), lexicon_at="input")
    _fake_base(tmp_path / "base", ["brand"], None)
    (tmp_path / "base" / LAYOUT).write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="unreadable lexicon projection"):
        start_projection(_tagger(lexicon), config, lexicon, print)
    _fake_base(tmp_path / "base", ["brand"], None, width=5)
    with pytest.raises(DataError, match=r"shape \(32, 5\) does not fit its layout \(types \['brand'\]: width 4\)"):
        start_projection(_tagger(lexicon), config, lexicon, print)
    _fake_base(tmp_path / "base", ["brand"], None, hidden=16)
    with pytest.raises(DataError, match="hidden size 16, the model's is 32"):
        start_projection(_tagger(lexicon), config, lexicon, print)
