"""Lexicon features: taxonomy names, synonyms and gazetteer entries found in a text, as BMES
flags per unit and tag type. Training and serving compute them the same way, through `TextEncoder`.

One Aho-Corasick automaton (pyahocorasick) per lexicon finds every match, overlapping ones too;
a match counts only where it starts and ends on unit edges, so "HP" never fires inside "HPX".
A lexicon may also carry an untyped word dictionary (`stream.tagging.words`), whose frequency-
weighted word-position features follow the typed flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import ahocorasick
import numpy as np
import orjson

from stream.tagging.taxonomy import Taxonomy, TaxonomyError
from stream.tagging.jsonfile import read_json, read_lines
from stream.tagging.text import fold
from stream.tagging.words import WIDTH as WORD_WIDTH, WordDictionary, WordsError, unit_edges

LEXICON_FILE = "lexicon.json"
FORMAT_VERSION = 1
FLAGS = ("B", "M", "E", "S")   # begins, continues, ends, alone forms a match


class LexiconError(ValueError):
    """A lexicon that cannot be used; the message says which file and what is wrong."""


@dataclass(frozen=True)
class Lexicon:
    """Surface forms per tag type. ``types`` fixes the feature layout a model was trained with:
    feature ``4 * t + f`` is flag ``FLAGS[f]`` of ``types[t]``; with ``words``, its `WORD_WIDTH`
    features come after them."""

    types: tuple[str, ...]
    entries: Mapping[str, frozenset[str]]
    words: WordDictionary | None = None
    _automaton: object = field(default=None, repr=False, compare=False)

    @classmethod
    def build(cls, types: Sequence[str], entries: Mapping[str, Iterable[str]],
              words: WordDictionary | None = None) -> "Lexicon":
        """Entries of a type outside ``types`` are ignored: a model has no features for them."""
        types = tuple(types)
        if len(set(types)) != len(types):
            raise LexiconError(f"lexicon types repeat: {list(types)}")
        kept = {t: frozenset(f.strip() for f in entries.get(t, ()) if f and f.strip()) for t in types}
        automaton = ahocorasick.Automaton()
        for index, tag_type in enumerate(types):
            for form in kept[tag_type]:
                key = fold(form)
                length, owners = automaton.get(key, (len(key), 0))
                automaton.add_word(key, (length, owners | 1 << index))
        if len(automaton):
            automaton.make_automaton()
        return cls(types, kept, words, automaton)

    def with_entries(self, more: Mapping[str, Iterable[str]]) -> "Lexicon":
        """The same feature layout with more forms (a taxonomy applied after training)."""
        return Lexicon.build(self.types, {t: [*self.entries[t], *more.get(t, ())] for t in self.types}, self.words)

    @property
    def typed_width(self) -> int:
        return len(FLAGS) * len(self.types)

    @property
    def width(self) -> int:
        return self.typed_width + (WORD_WIDTH if self.words is not None else 0)

    def __len__(self) -> int:
        return sum(len(forms) for forms in self.entries.values())

    def matches(self, text: str) -> list[tuple[int, int, int]]:
        """Every ``(start, end, type index)`` whose form occurs in ``text``, overlaps included."""
        return self._matches_folded(fold(text))

    def _matches_folded(self, folded: str) -> list[tuple[int, int, int]]:
        if not len(self._automaton):
            return []
        out = []
        for last, (length, owners) in self._automaton.iter(folded):
            for index in range(len(self.types)):
                if owners >> index & 1:
                    out.append((last + 1 - length, last + 1, index))
        return out

    def unit_features(self, text: str, spans: Sequence[tuple[int, int]]) -> np.ndarray:
        """BMES flags per unit, shape (units, width); a match must cover whole units."""
        # shape: (units, types * 4)
        features = np.zeros((len(spans), self.width), dtype=np.float32)
        if not spans:
            return features
        # Folded once and edges mapped once per text, for the typed flags and the words alike.
        folded = fold(text)
        starts, ends = unit_edges(spans)
        if self.words is not None:
            features[:, self.typed_width:] = self.words.features_at(folded, starts, ends, len(spans))
        for start, end, index in self._matches_folded(folded):
            first, last = starts.get(start), ends.get(end)
            if first is None or last is None or last < first:
                continue
            base = len(FLAGS) * index
            if first == last:
                features[first, base + 3] = 1.0
                continue
            features[first, base] = 1.0
            features[first + 1:last, base + 1] = 1.0
            features[last, base + 2] = 1.0
        return features

    # -- files --------------------------------------------------------------------------------
    def to_json(self) -> dict:
        out = {"format_version": FORMAT_VERSION, "types": list(self.types),
               "entries": {t: sorted(self.entries[t]) for t in self.types}}
        if self.words is not None:
            out["words"] = self.words.to_json()
        return out

    def save(self, path: str | Path) -> None:
        # A word dictionary is hundreds of thousands of pairs: one line each would triple the file.
        option = orjson.OPT_INDENT_2 if self.words is None else 0
        Path(path).write_bytes(orjson.dumps(self.to_json(), option=option))

    @classmethod
    def load(cls, path: str | Path) -> "Lexicon":
        path = Path(path)
        data = read_json(path, LexiconError)
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            raise LexiconError(f"{path}: not a lexicon of format version {FORMAT_VERSION}")
        types, entries = data.get("types"), data.get("entries")
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise LexiconError(f"{path}: 'types' must be a list of tag types")
        if not isinstance(entries, dict) or not all(
                isinstance(v, list) and all(isinstance(f, str) for f in v) for v in entries.values()):
            raise LexiconError(f"{path}: 'entries' must map each tag type to a list of strings")
        try:
            words = WordDictionary.from_json(data["words"], str(path)) if "words" in data else None
        except WordsError as err:
            raise LexiconError(str(err)) from None
        if not types and words is None:
            raise LexiconError(f"{path}: 'types' must be a non-empty list of tag types (or 'words' given)")
        return cls.build(types, entries, words)


def taxonomy_forms(taxonomy) -> dict[str, list[str]]:
    """Every name and synonym of a `stream.tagging.taxonomy.Taxonomy`, by tag type."""
    out: dict[str, list[str]] = {}
    for node in taxonomy.nodes.values():
        out.setdefault(node.type, []).extend(node.forms())
    return out


def read_word_list(path: str | Path) -> list[str]:
    """A gazetteer: one entry per line; blank lines and surrounding spaces ignored."""
    path = Path(path)
    lines = read_lines(path, LexiconError)
    words = [line.strip() for line in lines if line.strip()]
    if not words:
        raise LexiconError(f"{path}: no entries")
    return words


def read_specs(specs: Iterable[str]) -> dict[str, list[str]]:
    """Lexicon sources as given on the command line: a taxonomy JSON file (every name and synonym
    under its node's type) or ``TYPE=FILE`` (a word list of one tag type)."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        tag_type, sep, path = spec.partition("=")
        if sep:
            if not tag_type.strip():
                raise LexiconError(f"{spec!r}: expected TYPE=FILE with a tag type before '='")
            out.setdefault(tag_type.strip(), []).extend(read_word_list(path))
            continue
        try:
            forms = taxonomy_forms(Taxonomy.load(spec))
        except TaxonomyError as err:
            raise LexiconError(f"{err} (a lexicon source is a taxonomy JSON file or TYPE=FILE)") from None
        for tag_type, words in forms.items():
            out.setdefault(tag_type, []).extend(words)
    return out
