"""Pretraining: every text source, whole-word masking, and a few steps that lower the MLM loss."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from model.data import DataError
from model.texts import read_texts
from tests.conftest import SAMPLE_TEXTS, write_synth

torch = pytest.importorskip("torch")

from model.pretrain import (IGNORE, Encoded, Masker, PretrainConfig, encode_texts, evaluate_mlm,  # noqa: E402
                            fixed_batches, mask_words, masked_lm, pretrain, word_groups)

EVENT = {"product_id": "p1", "op": "upsert", "version": 3, "title": "耐克 跑步鞋", "description": "轻便透气",
         "locale": "zh-CN"}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _lines(*records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


# ----------------------------------------------------------------------------- reading texts

def test_plain_text_one_text_per_line(tmp_path):
    assert read_texts([_write(tmp_path / "t.txt", "Nike Air Max\n\n  耐克跑步鞋 \n")]) == ["Nike Air Max", "耐克跑步鞋"]
    # No suffix: sniffed as plain text, even when a line ends in a word that looks like a tag.
    assert read_texts([_write(tmp_path / "titles", "Levi's 501\nhot sale O\n")]) == ["Levi's 501", "hot sale O"]


def test_produce_input_events_and_synthetic_products(tmp_path):
    events = _write(tmp_path / "events.jsonl", _lines(
        EVENT,
        {**EVENT, "product_id": "p2", "description": None, "title": "Levi's 501 jeans"},
        {"product_id": "p3", "op": "delete", "version": 4},
        {**EVENT, "product_id": "p4", "description": "  "}))
    assert read_texts([events]) == ["耐克 跑步鞋", "轻便透气", "Levi's 501 jeans", "耐克 跑步鞋"]
    synth = tmp_path / "synth.jsonl"
    from model.synth import generate, load_taxonomy_json
    from tests.conftest import DEMO_TAXONOMY

    records = generate(load_taxonomy_json(DEMO_TAXONOMY), 5, seed=1, products=True)
    _write(synth, _lines(*records))
    assert read_texts([synth]) == [t for r in records for t in (r["title"], r["description"])]


def test_topic_dump_as_tail_prints_it(tmp_path):
    records = [{"partition": 0, "offset": 0, "key": "p1", "value": EVENT},
               {"partition": 0, "offset": 1, "key": "p1", "value": None},           # tombstone
               {"partition": 1, "offset": 0, "key": None, "value": "not json"},     # what tail prints for bad bytes
               {"partition": 1, "offset": 1, "key": "p9", "value": {**EVENT, "title": 7}}]  # the worker's DLQ case
    dump = _write(tmp_path / "dump", _lines(*records))
    assert read_texts([dump]) == ["耐克 跑步鞋", "轻便透气"]
    # `tail --pretty` writes indented records over several lines.
    pretty = _write(tmp_path / "pretty.jsonl", "\n".join(json.dumps(r, indent=2, ensure_ascii=False) for r in records))
    assert read_texts([pretty]) == ["耐克 跑步鞋", "轻便透气"]
    logged: list[str] = []
    read_texts([dump], log=logged.append)
    assert "3 topic records without product text skipped" in logged[0]


def test_labelled_jsonl_and_conll_give_their_texts(tmp_path):
    labelled = write_synth(tmp_path / "l.jsonl", 4, seed=2)
    expected = [json.loads(line)["text"] for line in labelled.read_text(encoding="utf-8").splitlines()]
    assert read_texts([labelled]) == expected
    conll = "耐\tB-HP\n克\tE-HP\n鞋\tS-HC\n\nN\tO\ni\tO\n"
    assert read_texts([_write(tmp_path / "a.bioes", conll)]) == ["耐克鞋", "Ni"]
    # No suffix: sniffed; a broken tag sequence is fine, labels are not used.
    assert read_texts([_write(tmp_path / "b", "a\tI-x\nb\tO\n")]) == ["ab"]
    assert read_texts([labelled, tmp_path / "a.bioes"]) == expected + ["耐克鞋", "Ni"]


@pytest.mark.parametrize("name, content, needle", [
    ("empty.txt", "\n \n", "empty.txt: no texts"),
    ("bad.jsonl", _lines(EVENT) + "Nike shoes\n", "bad.jsonl:2: malformed JSON"),
    ("list.jsonl", _lines(EVENT) + "[1, 2]\n", "list.jsonl:2: expected a JSON object"),
    ("other.jsonl", _lines(EVENT, {"product_id": "p", "price": 3}), "other.jsonl:2: expected a product event"),
    ("typed.jsonl", _lines({"id": "1", "text": 5}), "typed.jsonl:1: 'text' must be a string"),
    ("title.jsonl", "\n" + _lines({**EVENT, "title": ["x"]}), "title.jsonl:2: 'title' must be a string"),
    ("bad.bioes", "a\tO\nno-tag-here\n", "bad.bioes:2:"),
])
def test_bad_sources_name_file_and_line(tmp_path, name, content, needle):
    with pytest.raises(DataError, match=needle.replace("[", r"\[")):
        read_texts([_write(tmp_path / name, content)])


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(DataError, match="nope.txt: no such file"):
        read_texts([tmp_path / "nope.txt"])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt: not valid UTF-8"):
        read_texts([tmp_path / "latin1.txt"])


# ----------------------------------------------------------------------------- masking

def _masker(tokenizer, mask_prob: float = 0.15) -> Masker:
    return Masker.for_tokenizer(tokenizer, mask_prob)


def test_english_words_are_masked_whole(wordpiece):
    masker = _masker(wordpiece, mask_prob=0.5)
    encoded = encode_texts(wordpiece, ["Adidas waterproof sneakers, cotton socks"], 128)[0]
    groups = word_groups(encoded.words)
    assert any(len(g) > 1 for g in groups), "the test needs a word that splits into several pieces"
    rng = random.Random(0)
    split_words_masked = 0
    for _ in range(300):
        inputs, labels = mask_words(encoded, rng, mask_prob=0.5, mask_id=masker.mask_id,
                                    random_ids=masker.random_ids, never=masker.never)
        for group in groups:
            predicted = [labels[p] != IGNORE for p in group]
            assert all(predicted) or not any(predicted), "a word was predicted in part"
            masked = [inputs[p] == masker.mask_id for p in group]
            assert all(masked) or not any(masked), "a word was [MASK]ed in part"
            if all(predicted):
                assert [labels[p] for p in group] == [encoded.ids[p] for p in group]
                split_words_masked += len(group) > 1
    assert split_words_masked > 50


def test_chinese_characters_are_masked_one_by_one(wordpiece):
    masker = _masker(wordpiece, mask_prob=0.3)
    text = "耐克运动裤纯棉秋冬款"
    encoded = encode_texts(wordpiece, [text], 128)[0]
    assert [len(g) for g in word_groups(encoded.words)] == [1] * len(text)
    rng = random.Random(1)
    patterns = set()
    for _ in range(200):
        _, labels = mask_words(encoded, rng, mask_prob=0.3, mask_id=masker.mask_id, random_ids=masker.random_ids)
        patterns.add(tuple(i for i, label in enumerate(labels) if label != IGNORE))
    # Characters are chosen on their own: many different sets, and single characters among them.
    assert len(patterns) > 50
    assert any(len(p) == 3 and p != tuple(range(p[0], p[0] + 3)) for p in patterns)


def test_jieba_words_are_masked_whole(wordpiece):
    pytest.importorskip("jieba")
    from model.words import segment

    text = "华为手机壳硅胶防摔男女款"
    segments = segment([text])[0]
    assert segments[0] == (0, 2) and segments[-1][1] == len(text)      # 华为 is one word; all of it covered
    encoded = encode_texts(wordpiece, [text], 128, [segments])[0]
    assert [len(g) for g in word_groups(encoded.words)] == [end - start for start, end in segments]
    masker = _masker(wordpiece, mask_prob=0.3)
    rng = random.Random(2)
    for _ in range(100):
        _, labels = mask_words(encoded, rng, mask_prob=0.3, mask_id=masker.mask_id, random_ids=masker.random_ids)
        for start, end in segments:
            predicted = {labels[p] != IGNORE for p in range(start, end)}
            assert len(predicted) == 1, f"{text[start:end]} was predicted in part"


def test_rate_and_80_10_10_split_on_a_big_sample(wordpiece):
    masker = _masker(wordpiece)
    encoded = encode_texts(wordpiece, SAMPLE_TEXTS, 128)
    rng = random.Random(2)
    words = chosen = masked = kept = 0
    for _ in range(2000):
        for text in encoded:
            inputs, labels = mask_words(text, rng, mask_prob=0.15, mask_id=masker.mask_id,
                                        random_ids=masker.random_ids, never=masker.never)
            for group in word_groups(text.words):
                words += 1
                if labels[group[0]] != IGNORE:
                    chosen += 1
                    masked += inputs[group[0]] == masker.mask_id
                    kept += all(inputs[p] == text.ids[p] for p in group)
    assert abs(chosen / words - 0.15) < 0.005
    assert abs(masked / chosen - 0.8) < 0.02
    # A random replacement can draw the original token, so "kept" is a little over 10%.
    assert 0.09 < kept / chosen < 0.13


def test_special_tokens_and_padding_are_never_predicted(wordpiece):
    masker = _masker(wordpiece, mask_prob=0.9)
    unk = wordpiece.token_to_id("[UNK]")
    texts = encode_texts(wordpiece, ["耐克 跑步鞋", "Levi's 501 Original Fit Jeans Blue 32x34 denim"], 128)
    texts.append(Encoded([unk, texts[0].ids[0]], [0, 1]))   # a word the vocabulary lacks
    batch = masker.batch(texts, random.Random(3))
    ids, labels = batch["input_ids"], batch["labels"]
    lengths = batch["attention_mask"].sum(1)
    for row, length in enumerate(lengths.tolist()):
        assert ids[row, 0] == masker.cls_id and ids[row, length - 1] == masker.sep_id
        assert labels[row, 0] == IGNORE and labels[row, length - 1] == IGNORE
        assert (labels[row, length:] == IGNORE).all() and (ids[row, length:] == masker.pad_id).all()
    assert labels[2, 1] == IGNORE and ids[2, 1] == unk
    assert (labels[0, 1:lengths[0] - 1] != IGNORE).any()
    specials = {masker.cls_id, masker.sep_id, masker.pad_id, masker.mask_id, unk}
    assert not specials & set(masker.random_ids)


def test_texts_are_cut_to_max_length(wordpiece):
    long_text = " ".join(["Nike Air Max"] * 40)
    encoded = encode_texts(wordpiece, [long_text, ""], 16)
    assert len(encoded) == 1 and len(encoded[0].ids) == 14
    assert _masker(wordpiece).batch(encoded, random.Random(0))["input_ids"].shape == (1, 16)


# ----------------------------------------------------------------------------- a tiny run

def test_a_few_steps_lower_the_loss_and_give_a_base_model(tmp_path):
    from model import bert_crf
    from model.vocab import base_model_tokenizer

    data = write_synth(tmp_path / "titles.jsonl", 50, seed=5)
    # One thread: two OpenMP threads spinning on shared CI cores make a run this small ten times slower.
    config = PretrainConfig(texts=(str(data),), out=str(tmp_path / "base"), layers=1, hidden=32, heads=2,
                            batch_size=16, lr=2e-3, max_steps=60, held_out=0.0, threads=1)
    result = pretrain(config, log=lambda _: None)
    assert result.steps == 60 and result.stopped == "max steps"

    # The same masks over the training texts, scored by the untrained and the trained model.
    tokenizer = base_model_tokenizer(result.out)
    texts = encode_texts(tokenizer, read_texts([data]), config.max_length)
    batches = fixed_batches(texts, Masker.for_tokenizer(tokenizer, 0.15), 16, seed=0)
    torch.manual_seed(config.seed)
    untrained = masked_lm(tokenizer.get_vocab_size(), config)
    from transformers import BertForMaskedLM

    trained = BertForMaskedLM.from_pretrained(str(result.out))
    before, after = evaluate_mlm(untrained, batches), evaluate_mlm(trained, batches)
    assert after.loss < before.loss - 0.5, (before, after)

    meta = json.loads((result.out / "pretrain.json").read_text(encoding="utf-8"))
    assert meta["steps"] == 60 and meta["config"]["max_steps"] == 60 and meta["first_loss"] > meta["final_loss"]
    encoder = bert_crf.pretrained_encoder(result.out)
    assert torch.equal(encoder.embeddings.word_embeddings.weight, trained.bert.embeddings.word_embeddings.weight)
    assert encoder.config.max_position_embeddings == 512


def test_cpu_budget_stops_the_run_and_held_out_is_scored(tmp_path):
    data = write_synth(tmp_path / "titles.jsonl", 100, seed=6)
    result = pretrain(PretrainConfig(texts=(str(data),), out=str(tmp_path / "base"), layers=1, hidden=32, heads=2,
                                     batch_size=8, max_cpu_seconds=3.0, held_out=0.1, threads=1),
                      log=lambda _: None)
    assert result.stopped == "CPU budget" and result.cpu_seconds >= 3.0
    assert result.held_out_after is not None and result.held_out_after.tokens > 0


def test_config_refuses_impossible_shapes():
    with pytest.raises(ValueError, match="multiple of heads"):
        PretrainConfig(hidden=100, heads=3)
    with pytest.raises(ValueError, match="mask_prob"):
        PretrainConfig(mask_prob=0.0)
    assert PretrainConfig().epoch_limit == 10 and PretrainConfig(max_cpu_seconds=5).epoch_limit is None
