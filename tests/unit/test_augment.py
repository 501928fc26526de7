"""Mention replacement (`--augment-mentions`): swapped titles keep every span on its new text, and
training draws fresh swaps every epoch."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from model.augment import MentionPool, swap_mentions
from model.config import TrainConfig
from model.data import Example
from stream.tagging.spans import Span

TITLE = Example("t1", "苹果 手机壳 红色 大号", (Span(0, 2, "HP"), Span(3, 6, "HC"), Span(10, 12, "SIZE")))


def test_a_swapped_title_keeps_each_span_on_its_new_text_and_the_rest_of_the_title_as_it_was():
    pool = MentionPool.build([TITLE], {"HP": ["华为技术", "小米"], "HC": ["保温杯"]})
    rng = random.Random(5)
    seen = {"HP": set(), "HC": set()}
    for _ in range(200):
        out = swap_mentions(TITLE, pool, 0.5, rng)
        assert [s.label for s in out.spans] == ["HP", "HC", "SIZE"]
        forms = [out.text[s.start:s.end] for s in out.spans]
        assert forms[0] in pool.forms["HP"] and forms[1] in pool.forms["HC"] and forms[2] == "大号"
        # the text between the spans is untouched
        assert out.text == f"{forms[0]} {forms[1]} 红色 {forms[2]}"
        seen["HP"].add(forms[0])
        seen["HC"].add(forms[1])
    assert seen == {"HP": {"苹果", "华为技术", "小米"}, "HC": {"手机壳", "保温杯"}}


def test_the_pool_repeats_training_mentions_adds_lexicon_entries_once_and_ignores_types_no_span_has():
    other = Example("t2", "苹果充电器", (Span(0, 2, "HP"), Span(2, 5, "HC")))
    pool = MentionPool.build([TITLE, other], {"HP": ["小米", "小米", " "], "COLOUR": ["红色"]})
    assert pool.forms["HP"] == ("苹果", "苹果", "小米")
    assert pool.forms["HC"] == ("手机壳", "充电器") and "COLOUR" not in pool.forms
    assert len(pool) == 3 + 2 + 1


def test_partial_titles_and_probability_zero_are_left_as_they_are():
    pool = MentionPool.build([TITLE], {"HP": ["小米"]})
    rng = random.Random(0)
    partial = Example("w", TITLE.text, TITLE.spans, partial=True)
    assert swap_mentions(partial, pool, 0.9, rng) is partial
    assert swap_mentions(TITLE, pool, 0.0, rng) is TITLE


def test_mention_replacement_and_a_lexicon_of_the_training_mentions_are_refused_together():
    with pytest.raises(ValueError, match="--augment-mentions"):
        TrainConfig(train=("x",), out="y", augment_mentions=0.3, lexicon_from_train=True)
    with pytest.raises(ValueError, match="augment_from"):
        TrainConfig(train=("x",), out="y", augment_from="gazetteers")


def test_the_swapper_draws_from_the_training_mentions_and_only_when_asked_from_the_lexicon_too(tmp_path):
    from model.augment import mention_swapper

    words = tmp_path / "brands.txt"
    words.write_text("小米\n华为\n", encoding="utf-8")
    config = TrainConfig(train=("x",), out="y", lexicon=(f"HP={words}",), augment_mentions=0.3)
    assert mention_swapper(replace(config, augment_mentions=0.0), None, [TITLE], []) is None
    own = mention_swapper(config, None, [TITLE], [])
    assert own.pool.forms == {"HP": ("苹果",), "HC": ("手机壳",), "SIZE": ("大号",)} and own.gold == [TITLE]
    both = mention_swapper(replace(config, augment_from="lexicon"), None, [TITLE], [])
    assert both.pool.forms["HP"] == ("苹果", "小米", "华为")


def test_training_draws_fresh_swaps_every_epoch_whose_tags_follow_the_swapped_text(tmp_path):
    pytest.importorskip("torch")
    from model.augment import mention_swapper
    from model.train import load_checkpoint, train
    from tests.conftest import DEMO_TAXONOMY, write_synth

    train_file = write_synth(tmp_path / "train.jsonl", 120, seed=11)
    dev_file = write_synth(tmp_path / "dev.jsonl", 60, seed=12)
    config = TrainConfig(train=(str(train_file),), dev=str(dev_file), out=str(tmp_path / "ck"), layers=1, hidden=32,
                         heads=2, epochs=2, batch_size=16, threads=2, vocab_size=1500,
                         lexicon=(str(DEMO_TAXONOMY),), lexicon_at="input", augment_mentions=0.5)
    result = train(config, log=lambda _: None)
    assert len(result.epochs) == 2
    meta = json.loads((tmp_path / "ck" / "tagger.json").read_text(encoding="utf-8"))
    assert meta["config"]["augment_mentions"] == 0.5

    checkpoint = load_checkpoint(tmp_path / "ck")
    from model.data import load_examples
    examples = load_examples([str(train_file)])
    swapper = mention_swapper(config, checkpoint.encoder, examples, checkpoint.labels)
    rng = random.Random(3)
    first, second = swapper.samples(rng), swapper.samples(rng)
    assert len(first) >= len(examples)
    assert [s.window.input_ids for s in first] != [s.window.input_ids for s in second]   # a fresh draw each epoch
    # every sample's entity tags sit on units of a swapped title: rebuild the titles the same way
    rng = random.Random(3)
    swapped = [swap_mentions(e, swapper.pool, 0.5, rng) for e in swapper.gold]
    assert sum(s.text != e.text for s, e in zip(swapped, swapper.gold)) > len(swapped) // 4
    units = checkpoint.encoder.units([e.text for e in swapped])
    for ex, unit, sample in zip(swapped, units, first):
        begins = {unit.spans[i][0] for i, t in enumerate(sample.tags) if checkpoint.labels[t][:2] in ("B-", "S-")}
        edges = {a for a, _ in unit.spans}, {b for _, b in unit.spans}
        # a span on unit edges begins where the swapped title has it (one glued to a word is snapped)
        assert {s.start for s in ex.spans if s.start in edges[0] and s.end in edges[1]} <= begins
        assert len(begins) <= len(ex.spans)

    # weak (partial) titles are never swapped: their samples are made once and come back every epoch
    weak = [replace(e, id=f"weak-{e.id}", partial=True) for e in examples[:5]]
    with_weak = mention_swapper(config, checkpoint.encoder, examples + weak, checkpoint.labels)
    drawn = with_weak.samples(random.Random(4))
    assert len(with_weak.gold) == len(examples) and len(with_weak.partial) >= 5
    assert drawn[-len(with_weak.partial):] == with_weak.partial and all(s.known is not None for s in with_weak.partial)


def test_unlabelled_repeats_are_the_unspanned_occurrences_of_strings_labelled_elsewhere_longest_first():
    from model.data import unlabelled_repeats

    labelled = Example("a", "手机壳 手机", (Span(0, 3, "HC"), Span(4, 6, "HC")))
    repeat = Example("b", "新款手机壳送手机膜 手", (Span(5, 6, "HP"),))   # 送 is a (silly) span: left alone
    weak = Example("c", "手机壳", (), partial=True)
    found = unlabelled_repeats([labelled, repeat, weak])
    # 手机壳 (longest) at 2, then 手机 at 6; the single 手 is too short; 送 is spanned; partial titles are skipped
    assert found == {("b", repeat.text): ((2, 5), (6, 8))}
    assert unlabelled_repeats([labelled]) == {}


def test_unlabelled_repeats_train_as_unknown_units_and_the_rest_as_labelled(tmp_path):
    from model.samples import make_samples
    from model.train import load_checkpoint, train
    from tests.conftest import write_synth

    train_file = write_synth(tmp_path / "train.jsonl", 80, seed=11)
    config = TrainConfig(train=(str(train_file),), dev=str(write_synth(tmp_path / "dev.jsonl", 40, seed=12)),
                         out=str(tmp_path / "ck"), layers=1, hidden=32, heads=2, epochs=1, batch_size=16, threads=2,
                         vocab_size=1500, unlabelled_repeats="unknown")
    train(config, log=lambda _: None)
    checkpoint = load_checkpoint(tmp_path / "ck")
    from model.data import load_examples, unlabelled_repeats
    # "zorbs" is a word of its own, not the labelled "zorb" and an s
    examples = [Example("x", "zorb vest zorbs zorb", (Span(0, 4, "color"),)), *load_examples([str(train_file)])]
    repeats = unlabelled_repeats(examples)
    assert repeats[("x", examples[0].text)] == ((16, 20),)
    samples, _ = make_samples(checkpoint.encoder, examples[:1], checkpoint.labels, unknown=repeats)
    units = checkpoint.encoder.units([examples[0].text])[0].spans
    unknown = [examples[0].text[a:b] for (a, b), known in zip(units, samples[0].known) if not known]
    assert unknown == ["zorb"] and checkpoint.labels[samples[0].tags[0]] == "S-color"
    with pytest.raises(ValueError, match="CRF head"):
        replace(config, head="softmax")
