"""Untyped word knowledge as unit features: for each unit, the dictionary words that begin,
continue, end or alone form it, weighted by their frequency (in the spirit of SoftLexicon, Ma et
al., ACL 2020, with the word embeddings left out: the model sees where words fall, not which).
A word weighs log(1 + frequency): with raw counts, single characters (tens of thousands each in
jieba's dictionary) would drown every longer word.

A dictionary is ``word -> frequency`` pairs: the `jieba` package's (about 350,000 Chinese words,
read at training time by `model`) or a file of ``word frequency`` lines. It travels inside the
lexicon file of a checkpoint and a bundle, so serving needs neither jieba nor PyTorch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import ahocorasick
import numpy as np

from stream.tagging.jsonfile import read_lines
from stream.tagging.text import fold

# Per flag (begins, continues, ends, alone forms a word): the share of the unit's word weight in
# that position, then whether any word puts the unit there.
WIDTH = 8


def unit_edges(spans: Sequence[tuple[int, int]]) -> tuple[dict[int, int], dict[int, int]]:
    """Character offset -> index of the unit starting there, and of the unit ending there."""
    return {s: i for i, (s, _) in enumerate(spans)}, {e: i for i, (_, e) in enumerate(spans)}


class WordsError(ValueError):
    """A word dictionary that cannot be used; the message says where and what is wrong."""


@dataclass(frozen=True)
class WordDictionary:
    source: str
    frequencies: Mapping[str, int]
    _automaton: object = field(default=None, repr=False, compare=False)

    @classmethod
    def build(cls, source: str, frequencies: Mapping[str, int] | Iterable[tuple[str, int]]) -> "WordDictionary":
        pairs = frequencies.items() if isinstance(frequencies, Mapping) else frequencies
        kept: dict[str, int] = {}
        for word, count in pairs:
            word = word.strip()
            if not word or not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise WordsError(f"{source}: entry {word!r} needs a positive integer frequency, got {count!r}")
            kept[word] = kept.get(word, 0) + count
        if not kept:
            raise WordsError(f"{source}: no words")
        weights: dict[str, float] = {}
        for word, count in kept.items():
            key = fold(word)
            weights[key] = weights.get(key, 0.0) + math.log1p(count)
        automaton = ahocorasick.Automaton()
        for key, weight in weights.items():
            automaton.add_word(key, (len(key), weight))
        automaton.make_automaton()
        return cls(source, kept, automaton)

    def __len__(self) -> int:
        return len(self.frequencies)

    def unit_features(self, text: str, spans: Sequence[tuple[int, int]]) -> np.ndarray:
        """Shape (units, `WIDTH`). A word counts where it starts and ends on unit edges."""
        return self.features_at(fold(text), *unit_edges(spans), len(spans))

    def features_at(self, folded: str, starts: Mapping[int, int], ends: Mapping[int, int],
                    units: int) -> np.ndarray:
        """`unit_features` of a text already folded, its unit edges already mapped (`unit_edges`)."""
        if not units:
            return np.zeros((0, WIDTH), dtype=np.float32)
        # shape: (units, 4): word weight per flag
        mass = np.zeros((units, 4), dtype=np.float64)
        for last, (length, weight) in self._automaton.iter(folded):
            first, final = starts.get(last + 1 - length), ends.get(last + 1)
            if first is None or final is None or final < first:
                continue
            if first == final:
                mass[first, 3] += weight
                continue
            mass[first, 0] += weight
            mass[first + 1:final, 1] += weight
            mass[final, 2] += weight
        total = mass.sum(axis=1, keepdims=True)
        share = np.divide(mass, total, out=np.zeros_like(mass), where=total > 0)
        return np.concatenate([share, mass > 0], axis=1).astype(np.float32)

    def to_json(self) -> dict:
        return {"source": self.source, "entries": sorted(self.frequencies.items())}

    @classmethod
    def from_json(cls, data: object, where: str) -> "WordDictionary":
        if not isinstance(data, dict) or not isinstance(data.get("source"), str):
            raise WordsError(f"{where}: 'words' must be an object with a string 'source'")
        entries = data.get("entries")
        if not isinstance(entries, list) or not all(
                isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) for e in entries):
            raise WordsError(f"{where}: 'words.entries' must be a list of [word, frequency] pairs")
        return cls.build(data["source"], [(w, c) for w, c in entries])


def read_word_frequencies(path: str | Path) -> list[tuple[str, int]]:
    """``word frequency [anything else]`` per line (jieba's dict.txt has a part of speech third);
    a line with a word alone counts 1. Blank lines are skipped; anything else is an error with its line."""
    path = Path(path)
    lines = read_lines(path, WordsError)
    out = []
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 1:
            out.append((parts[0], 1))
            continue
        try:
            count = int(parts[1])
        except ValueError:
            raise WordsError(f"{path}:{number}: expected 'word frequency', got {line.strip()!r}") from None
        if count < 1:
            raise WordsError(f"{path}:{number}: frequency must be positive, got {count}")
        out.append((parts[0], count))
    if not out:
        raise WordsError(f"{path}: no words")
    return out
