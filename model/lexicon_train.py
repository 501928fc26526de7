"""Which lexicon entries each fold of the training titles is flagged with: the given sources, the
training set's own mentions (`--lexicon-from-train`), and the label ratios that prune both.

A lexicon made from the training set's own entities would mark every gold span, and the model would
learn to trust it blindly; so each of ``--lexicon-folds`` folds of the training titles is flagged
with the other folds' mentions, and serving gets them all. ``--lexicon-min-ratio R`` keeps an
entry only where the training titles label it in at least R of the places it occurs (the zh brand
gazetteers hold "1", "s" and "装": their matches in the training titles are 98% unlabelled text,
so the model learns to ignore the brand flags); its ratios, too, come from the other folds.
``--lexicon-train-types own`` flags the training mentions under types of their own (``HP@train``).
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

from model.data import Example
from stream.tagging.lexicon import Lexicon
from stream.tagging.text import fold

TRAIN_TYPE = "{}@train"

Forms = dict[str, list[str]]
FormPair = tuple[Forms, Forms]   # (given sources, training mentions)


def _labelled(examples: Sequence[Example], spellings: dict[tuple[str, str], set[str]]) -> Counter:
    """Per (type, folded form): how many spans of ``examples`` label it; ``spellings`` gathers the
    mentions as the titles spell them (what the bundle ships)."""
    counts: Counter = Counter()
    for ex in examples:
        for span in ex.spans:
            text = ex.text[span.start:span.end]
            key = (span.label, fold(text))
            counts[key] += 1
            spellings.setdefault(key, set()).add(text)
    return counts


def _occurrences(examples: Sequence[Example], finder: Lexicon) -> Counter:
    """Per folded form of ``finder``: how often it occurs in ``examples``' texts."""
    counts: Counter = Counter()
    for ex in examples:
        folded = fold(ex.text)
        counts.update(folded[start:end] for start, end, _ in finder.matches(ex.text))
    return counts


class _Ratios:
    """Label ratios counted on some of the folds: an entry passes if those titles label it as its
    type in at least ``min_ratio`` of the places it occurs, or never contain it."""

    def __init__(self, labelled: Counter, occurrences: Counter, min_ratio: float,
                 spellings: Mapping[tuple[str, str], set[str]]):
        self.labelled, self.occurrences, self.min_ratio = labelled, occurrences, min_ratio
        self.spellings = spellings

    def passes(self, tag_type: str, form: str) -> bool:
        seen = self.occurrences[form]
        return not seen or self.labelled[(tag_type, form)] >= self.min_ratio * seen

    def given(self, given: Mapping[str, Sequence[tuple[str, str]]]) -> Forms:
        """``given``: per type, (form, folded form) pairs."""
        return {t: [form for form, key in pairs if not self.min_ratio or self.passes(t, key)]
                for t, pairs in given.items()}

    def mentions(self, own_types: bool) -> Forms:
        out: Forms = {}
        for (label, form), count in self.labelled.items():
            if count > 0 and self.passes(label, form):
                out.setdefault(TRAIN_TYPE.format(label) if own_types else label, []).extend(
                    sorted(self.spellings[(label, form)]))
        return out


def fold_forms(folds: Sequence[Sequence[Example]], given: Mapping[str, Sequence[str]], *, from_train: bool,
               min_ratio: float = 0.0, own_types: bool = False) -> tuple[list[FormPair], FormPair]:
    """Per fold, the (given, training) forms its titles are flagged with, counted on the other folds;
    and the pair serving gets, counted on every fold; per lexicon type."""
    spellings: dict[tuple[str, str], set[str]] = {}
    labelled = [_labelled(part, spellings) for part in folds]
    everything = sum(labelled, Counter())
    if min_ratio:
        keyed = {t: [(form, fold(form.strip())) for form in forms] for t, forms in given.items()}
        finder = Lexicon.build(("entry",), {"entry": [form for _, form in everything]
                                            + [key for pairs in keyed.values() for _, key in pairs]})
        occurrences = [_occurrences(part, finder) for part in folds]
    else:   # nothing is counted, so no key is looked up
        keyed = {t: [(form, form) for form in forms] for t, forms in given.items()}
        occurrences = [Counter() for _ in folds]
    seen = sum(occurrences, Counter())

    def pair(ratios: _Ratios) -> FormPair:
        return ratios.given(keyed), ratios.mentions(own_types) if from_train else {}

    per_fold = [pair(_Ratios(everything - own, seen - count, min_ratio, spellings))
                for own, count in zip(labelled, occurrences)]
    return per_fold, pair(_Ratios(everything, seen, min_ratio, spellings))
