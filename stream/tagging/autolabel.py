"""Weak labels from a dictionary: the lexicon's forms (taxonomy names and synonyms, word lists) found
in unlabelled texts become spans of a *partial* annotation, where text outside the spans is unknown.

Longest match wins and spans never overlap; a match must not cut a Latin word or number (the model's
units: "HP" never inside "HPX"); a form of several types goes to one of them by a fixed rule.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from stream.tagging.lexicon import Lexicon
from stream.tagging.spans import Span
from stream.tagging.text import fold

# On the ecommerce-ner dev titles (500) with its seven gazetteers: 1,943 single-character matches, 11
# of them right (span precision 0.20, recall 0.54 at 1; 0.36 and 0.53 at 2; 0.55 and 0.24 at 3).
DEFAULT_MIN_CHARS = 2
TIES = ("first", "skip")


@dataclass
class AutolabelReport:
    """What a labelling run found: printed by `tagstream autolabel`, kept by benchmarks."""

    titles: int = 0
    spans: Counter = field(default_factory=Counter)   # per type
    unmatched: int = 0       # titles without a span
    ties: int = 0            # chosen matches whose form belongs to several types
    overlapped: int = 0      # matches dropped for a longer (or, as long, earlier) overlapping one
    short: int = 0           # matches dropped for being under min_chars

    def summary(self) -> str:
        per_type = ", ".join(f"{t} {n}" for t, n in sorted(self.spans.items())) or "none"
        return (f"{self.titles} titles, {sum(self.spans.values())} spans ({per_type}); "
                f"{self.unmatched} titles without a match; {self.ties} type ties, "
                f"{self.overlapped} overlapping and {self.short} short matches dropped")

    def to_json(self) -> dict:
        return {"titles": self.titles, "spans": dict(sorted(self.spans.items())), "unmatched": self.unmatched,
                "ties": self.ties, "overlapped": self.overlapped, "short": self.short}


def _is_cjk(ch: str) -> bool:
    """A CJK ideograph: a unit of its own, as BERT's pre-tokeniser makes it."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2FA1F
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _in_word(ch: str) -> bool:
    """Part of a Latin word or number (a multi-character unit): not a space, punctuation, symbol
    or CJK ideograph."""
    return ch.isalnum() and not _is_cjk(ch)


def _on_edges(text: str, start: int, end: int) -> bool:
    cuts_start = 0 < start and _in_word(text[start - 1]) and _in_word(text[start])
    cuts_end = end < len(text) and _in_word(text[end - 1]) and _in_word(text[end])
    return not (cuts_start or cuts_end)


def label_text(text: str, lexicon: Lexicon, min_chars: int = DEFAULT_MIN_CHARS, ties: str = "first",
               report: AutolabelReport | None = None) -> list[Span]:
    """One text's weak spans, sorted. ``ties``: ``first`` gives a form of several types to the type
    first in ``lexicon.types``; ``skip`` leaves its text unknown (no span), still blocking overlaps."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    report = report if report is not None else AutolabelReport()
    owners: dict[tuple[int, int], list[int]] = {}
    for start, end, index in lexicon.matches(text):
        if _on_edges(text, start, end):
            owners.setdefault((start, end), []).append(index)
    taken = [False] * len(text)
    spans = []
    # Longest first; among equally long ones, the earliest.
    for (start, end) in sorted(owners, key=lambda se: (se[0] - se[1], se[0])):
        if end - start < min_chars:
            report.short += 1
            continue
        if any(taken[start:end]):
            report.overlapped += 1
            continue
        taken[start:end] = [True] * (end - start)
        types = sorted(set(owners[(start, end)]))
        if len(types) > 1:
            report.ties += 1
            if ties == "skip":
                continue
        spans.append(Span(start, end, lexicon.types[types[0]]))
    report.titles += 1
    report.unmatched += not spans
    report.spans.update(s.label for s in spans)
    return sorted(spans)


def autolabel(texts: Iterable[str], lexicon: Lexicon, min_chars: int = DEFAULT_MIN_CHARS, ties: str = "first",
              report: AutolabelReport | None = None) -> list[list[Span]]:
    """Weak spans for each text (see `label_text`); counts go to ``report`` when one is given."""
    report = report if report is not None else AutolabelReport()
    return [label_text(text, lexicon, min_chars, ties, report) for text in texts]


def lexicon_of(forms: dict[str, Sequence[str]], types: Sequence[str] | None = None) -> Lexicon:
    """A lexicon over ``forms`` (as `read_specs` gives them); ``types`` fixes the tie order
    (default: sorted type names)."""
    return Lexicon.build(list(types) if types is not None else sorted(forms), forms)


def check_forms(forms: dict[str, Sequence[str]], gold: Iterable[tuple[str, Sequence[Span]]],
                min_precision: float = 0.5, min_chars: int = DEFAULT_MIN_CHARS,
                confirmed_only: bool = False) -> tuple[dict[str, list[str]], dict]:
    """The forms without those that the gold titles show to be mostly wrong: a form whose matches
    there were a gold span of its type less than ``min_precision`` of the time is dropped (a generic
    word in a gazetteer: it would label thousands of titles wrongly). Forms gold never met stay,
    unless ``confirmed_only``: then only forms the gold titles met, and found mostly right, are kept
    (fewer spans, more of them right: what the partial-annotation CRF needs). Returns the kept
    forms and a report (forms checked, dropped, unconfirmed, the ten most frequent dropped)."""
    lexicon = lexicon_of(forms)
    matched: Counter = Counter()
    right: Counter = Counter()
    for text, spans in gold:
        truth = {(s.start, s.end, s.label) for s in spans}
        for span in label_text(text, lexicon, min_chars):
            key = (span.label, fold(text[span.start:span.end]))
            matched[key] += 1
            right[key] += (span.start, span.end, span.label) in truth
    wrong = {key for key, n in matched.items() if right[key] < min_precision * n}

    def keep(kind: str, form: str) -> bool:
        key = (kind, fold(form))
        return key not in wrong and (key in matched or not confirmed_only)
    kept = {kind: [f for f in values if keep(kind, f)] for kind, values in forms.items()}
    worst = sorted(wrong, key=lambda key: -matched[key])[:10]
    unconfirmed = sum(1 for kind, values in forms.items() for f in set(map(fold, values)) if (kind, f) not in matched)
    return kept, {"checked": len(matched), "dropped": len(wrong), "unconfirmed": unconfirmed,
                  "most_frequent_dropped": [f"{kind} {text!r} ({right[(kind, text)]}/{matched[(kind, text)]})"
                                            for kind, text in worst]}


def unmatched_o_share(forms: dict[str, Sequence[str]], gold: Sequence[tuple[str, Sequence[Span]]],
                      add_gold_forms: bool = False, min_chars: int = DEFAULT_MIN_CHARS,
                      confirmed_only: bool = False) -> float | None:
    """How often a position the dictionary leaves unmatched is O, estimated on gold titles by 2-fold
    cross-fitting: the forms are checked against one half (and, with ``add_gold_forms``, gain its
    entities) and measured on the other, so the estimate sees the misses a new title will have.
    The value for `train --weak-o-prior`; None with fewer than two gold titles."""
    if len(gold) < 2:
        return None
    outside = total = 0
    for fit, measure in ((gold[0::2], gold[1::2]), (gold[1::2], gold[0::2])):
        own: dict[str, list[str]] = {}
        if add_gold_forms:
            for text, spans in fit:
                for s in spans:
                    own.setdefault(s.label, []).append(text[s.start:s.end])
        merged = {kind: [*forms.get(kind, ()), *own.get(kind, ())] for kind in {*forms, *own}}
        kept, _ = check_forms(merged, fit, min_chars=min_chars, confirmed_only=confirmed_only)
        lexicon = lexicon_of(kept)
        for text, spans in measure:
            covered = {i for s in label_text(text, lexicon, min_chars) for i in range(s.start, s.end)}
            inside = {i for s in spans for i in range(s.start, s.end)}
            for i, ch in enumerate(text):
                if not ch.isspace() and i not in covered:
                    total += 1
                    outside += i not in inside
    return outside / total if total else None
