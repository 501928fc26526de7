"""Text rules in one place: how span text, lexicon entries and taxonomy names are compared.

``fold`` keeps offsets (one character for one) for matching inside a text; ``normalise_value``
and ``compact_key`` make keys, where offsets no longer matter. The lexicon, the taxonomy, drift
and the enriched tags all use these, so the same span text always lands on the same key.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_PUNCT = re.compile(r"[ .&'+-]")


@lru_cache(maxsize=65536)
def _fold_char(ch: str) -> str:
    folded = unicodedata.normalize("NFKC", ch).casefold()
    if len(folded) == 1:
        return folded
    lower = ch.casefold()
    return lower if len(lower) == 1 else ch


def fold(text: str) -> str:
    """NFKC and case folding, one character for one, so offsets into the result are offsets
    into ``text`` (full-width ＸＬ matches xl; a character that would expand is kept as it is)."""
    return "".join(map(_fold_char, text))


def normalise_value(text: str) -> str:
    """The key a tag value is counted and looked up under: NFKC, case-folded, inner whitespace
    collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def compact_key(text: str) -> str:
    """A Latin-script form without spaces and punctuation ("Hello-Kitty" -> "hellokitty")."""
    return _PUNCT.sub("", normalise_value(text))
