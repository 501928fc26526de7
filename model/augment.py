"""Mention replacement (after Dai & Adel, COLING 2020): every training epoch, each entity mention of a
gold title is swapped, with a given probability, for another mention of its type, drawn from the
training set's own mentions (optionally also the given lexicon's entries). The model meets names in
contexts it never saw them in, so it learns what a brand's or a product word's surroundings look
like, not the names themselves. Dev and test titles are never touched; weak (partial) titles are
left as they are. Measured on both real data sets: level at best (README, issue #17's table)."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from model.config import TrainConfig
from model.data import Example
from model.samples import Sample, entity_strings, make_samples
from stream.tagging.lexicon import read_specs
from stream.tagging.tokenization import TextEncoder


@dataclass(frozen=True)
class MentionPool:
    """Per span label, the forms a mention may be swapped for: every training mention (repeated as
    often as it occurs, so frequent names stay frequent) and each lexicon entry of that type once."""

    forms: Mapping[str, tuple[str, ...]]

    @classmethod
    def build(cls, examples: Sequence[Example], lexicon: Mapping[str, Sequence[str]] | None = None) -> MentionPool:
        forms = entity_strings(examples)
        for label, entries in (lexicon or {}).items():
            if label in forms:   # a lexicon type no training span has is not a label to swap
                forms[label].extend(dict.fromkeys(e for e in entries if e.strip()))
        return cls({label: tuple(f) for label, f in forms.items()})

    def __len__(self) -> int:
        return sum(len(f) for f in self.forms.values())


def swap_mentions(example: Example, pool: MentionPool, probability: float, rng: random.Random) -> Example:
    """``example`` with each span's text replaced, with ``probability``, by a form of the same label
    from ``pool``; the other spans' offsets move with the text. Partial examples come back as they are."""
    if example.partial or not example.spans or probability <= 0:
        return example
    text, spans, shift, cursor = [], [], 0, 0
    for span in sorted(example.spans, key=lambda s: s.start):
        form = example.text[span.start:span.end]
        choices = pool.forms.get(span.label)
        if choices and rng.random() < probability:
            form = rng.choice(choices)
        text.append(example.text[cursor:span.start])
        start = span.start + shift
        spans.append(replace(span, start=start, end=start + len(form)))
        text.append(form)
        shift += len(form) - (span.end - span.start)
        cursor = span.end
    text.append(example.text[cursor:])
    return replace(example, text="".join(text), spans=tuple(spans))


class MentionSwapper:
    """A fresh set of training samples each epoch: the gold titles with their mentions swapped
    (`swap_mentions`), the partial titles' samples made once, as training makes them."""

    def __init__(self, encoder: TextEncoder, examples: Sequence[Example], labels: Sequence[str], pool: MentionPool,
                 probability: float, partial: Sequence[Sample] = ()) -> None:
        self.encoder, self.labels, self.pool, self.probability = encoder, labels, pool, probability
        self.gold = [e for e in examples if not e.partial]
        self.partial = list(partial)

    def samples(self, rng: random.Random) -> list[Sample]:
        swapped = [swap_mentions(e, self.pool, self.probability, rng) for e in self.gold]
        fresh, _ = make_samples(self.encoder, swapped, self.labels)
        return fresh + self.partial


def mention_swapper(config: TrainConfig, encoder: TextEncoder, examples: Sequence[Example], labels: Sequence[str],
                    priors: Mapping[str, np.ndarray] | None = None) -> MentionSwapper | None:
    """The swapper ``--augment-mentions`` asks for (None when off): its pool is the training mentions,
    with ``--augment-from lexicon`` also the given lexicon's entries; ``encoder`` carries the lexicon
    the model trains with."""
    if not config.augment_mentions:
        return None
    lexicon = read_specs(config.lexicon) if config.augment_from == "lexicon" else None
    pool = MentionPool.build([e for e in examples if not e.partial], lexicon)
    weak = [e for e in examples if e.partial]
    partial = make_samples(encoder, weak, labels, config.weak_unmatched, priors, config.weak_weight)[0] if weak else []
    return MentionSwapper(encoder, examples, labels, pool, config.augment_mentions, partial)

