"""Text to model inputs with character offsets, through a `tokenizers` fast tokenizer.

A *unit* is what a tag sits on: by default one pre-tokenised word (a CJK character, a Latin
word, a number, a punctuation mark), predicted from its first sub-token; with ``units="tokens"``
every sub-token, so a value can end inside a word ("men" in "men ##s"). Long texts are cut into
overlapping windows at unit boundaries. Used unchanged by training and serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

from stream.tagging.lexicon import Lexicon

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
UNITS = ("words", "tokens")


@dataclass(frozen=True, slots=True)
class Units:
    """One text's sub-tokens grouped into units, with each unit's character range."""

    text: str
    token_ids: list[int]          # no special tokens
    spans: list[tuple[int, int]]  # per unit: [start, end) into text
    first_token: list[int]        # per unit: index of its first sub-token in token_ids
    unknown_tokens: int           # how many sub-tokens are [UNK] (a drift signal)
    features: np.ndarray | None = None  # shape: (units, lexicon width), with a lexicon

    def __len__(self) -> int:
        return len(self.spans)


@dataclass(frozen=True, slots=True)
class Window:
    """A model input covering units ``[unit_start, unit_end)`` of one text."""

    input_ids: list[int]        # [CLS] ... [SEP]
    unit_positions: list[int]   # per covered unit: position of its first sub-token in input_ids
    unit_start: int
    unit_end: int
    own_start: int              # units this window answers for when windows are merged
    own_end: int
    features: np.ndarray | None = None  # shape: (covered units, lexicon width), with a lexicon


@dataclass(frozen=True, slots=True)
class PaddedBatch:
    """Windows padded to one length; row i is windows[i]."""

    input_ids: np.ndarray       # shape: (batch, seq) int64
    attention_mask: np.ndarray  # shape: (batch, seq) int64
    unit_positions: np.ndarray  # shape: (batch, units) int64, 0 where padded
    unit_mask: np.ndarray       # shape: (batch, units) bool
    lexicon: np.ndarray | None = None  # shape: (batch, seq, lexicon width) float32; each sub-token has its unit's flags


class TextEncoder:
    """Tokenises texts into units and windows of at most ``max_length`` sub-tokens."""

    def __init__(self, tokenizer: Tokenizer, max_length: int = 128, stride: int = 32,
                 lexicon: Lexicon | None = None, units: str = "words") -> None:
        if units not in UNITS:
            raise ValueError(f"units must be one of {', '.join(UNITS)}, got {units!r}")
        if max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {max_length}")
        if not 0 <= stride < max_length - 2:
            raise ValueError(f"stride must be in [0, {max_length - 2}), got {stride}")
        tokenizer.no_truncation()
        tokenizer.no_padding()
        ids = {tok: tokenizer.token_to_id(tok) for tok in ("[PAD]", "[UNK]", "[CLS]", "[SEP]")}
        missing = [tok for tok, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer vocabulary lacks the BERT special tokens {missing}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.stride = stride
        self.lexicon = lexicon
        self.unit_mode = units
        self.pad_id, self.unk_id, self.cls_id, self.sep_id = (ids[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]"))

    @classmethod
    def from_file(cls, path: str | Path, max_length: int = 128, stride: int = 32,
                  lexicon: Lexicon | None = None, units: str = "words") -> "TextEncoder":
        return cls(Tokenizer.from_file(str(path)), max_length=max_length, stride=stride, lexicon=lexicon, units=units)

    def with_lexicon(self, lexicon: Lexicon | None) -> "TextEncoder":
        return TextEncoder(self.tokenizer, self.max_length, self.stride, lexicon, self.unit_mode)

    def units(self, texts: Sequence[str], *, features: bool = True) -> list[Units]:
        """``features=False`` skips lexicon matching, for callers that only count tokens (drift)."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [self._group(text, enc, features) for text, enc in zip(texts, encodings)]

    def _group(self, text: str, enc, with_features: bool = True) -> Units:
        spans: list[tuple[int, int]] = []
        first: list[int] = []
        last_word = None
        by_token = self.unit_mode == "tokens"
        for i, (word, (start, end)) in enumerate(zip(enc.word_ids, enc.offsets)):
            # A sub-token that shares characters with the one before (one character made into
            # several tokens) stays in its unit, so unit ranges never overlap.
            new = start >= spans[-1][1] if by_token and spans else word != last_word
            if new or not spans:
                spans.append((start, end))
                first.append(i)
                last_word = word
            else:
                spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        unknown = sum(1 for t in enc.ids if t == self.unk_id)
        features = self.lexicon.unit_features(text, spans) if self.lexicon is not None and with_features else None
        return Units(text, list(enc.ids), spans, first, unknown, features)

    def windows(self, units: Units) -> list[Window]:
        """Overlapping windows over the units; each unit is owned by exactly one window."""
        n = len(units)
        if n == 0:
            return []
        budget = self.max_length - 2
        bounds = units.first_token + [len(units.token_ids)]
        ranges: list[tuple[int, int]] = []
        start = 0
        while True:
            end, used = start, 0
            while end < n and used + bounds[end + 1] - bounds[end] <= budget:
                used += bounds[end + 1] - bounds[end]
                end += 1
            end = max(end, start + 1)  # one unit longer than a window is cut, not dropped
            ranges.append((start, end))
            if end >= n:
                break
            nxt = end
            while nxt - 1 > start and bounds[end] - bounds[nxt - 1] <= self.stride:
                nxt -= 1
            start = nxt
        out = []
        for k, (start, end) in enumerate(ranges):
            # Ownership switches halfway through each overlap, so every unit is decoded
            # by the window in which it has the most context on both sides.
            own_start = 0 if k == 0 else (start + ranges[k - 1][1]) // 2
            own_end = n if k == len(ranges) - 1 else (ranges[k + 1][0] + end) // 2
            body = units.token_ids[bounds[start]:bounds[end]][:budget]
            positions = [min(1 + bounds[j] - bounds[start], budget) for j in range(start, end)]
            features = None if units.features is None else units.features[start:end]
            out.append(Window([self.cls_id, *body, self.sep_id], positions, start, end, own_start, own_end, features))
        return out

    def pad(self, windows: Sequence[Window]) -> PaddedBatch:
        seq = max(len(w.input_ids) for w in windows)
        width = max(len(w.unit_positions) for w in windows)
        ids = np.full((len(windows), seq), self.pad_id, dtype=np.int64)
        attention = np.zeros((len(windows), seq), dtype=np.int64)
        positions = np.zeros((len(windows), width), dtype=np.int64)
        unit_mask = np.zeros((len(windows), width), dtype=bool)
        for row, w in enumerate(windows):
            ids[row, :len(w.input_ids)] = w.input_ids
            attention[row, :len(w.input_ids)] = 1
            positions[row, :len(w.unit_positions)] = w.unit_positions
            unit_mask[row, :len(w.unit_positions)] = True
        return PaddedBatch(ids, attention, positions, unit_mask, self._pad_features(windows, seq))

    def _pad_features(self, windows: Sequence[Window], seq: int) -> np.ndarray | None:
        if self.lexicon is None:
            return None
        # shape: (batch, seq, width); [CLS], [SEP] and padding get no flags
        out = np.zeros((len(windows), seq, self.lexicon.width), dtype=np.float32)
        for row, w in enumerate(windows):
            if w.features is None or not w.unit_positions:
                continue
            bounds = np.asarray([*w.unit_positions, len(w.input_ids) - 1])
            owner = np.repeat(np.arange(len(w.unit_positions)), np.diff(bounds))
            out[row, bounds[0]:bounds[0] + len(owner)] = w.features[owner]
        return out


def gather_units(token_values: np.ndarray, unit_positions: np.ndarray) -> np.ndarray:
    """Per-token values (batch, seq, k) -> per-unit values (batch, units, k)."""
    # shape: (batch, units, k)
    return np.take_along_axis(token_values, unit_positions[:, :, None], axis=1)
