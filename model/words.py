"""Word dictionaries and word segmentation for Chinese text at training time: the `jieba`
package's dictionary (about 350,000 words with frequencies, read from the installed package) or a
file of ``word frequency`` lines. Serving reads the dictionary from the bundle's lexicon instead."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

from stream.tagging.words import WordDictionary, WordsError, read_word_frequencies

JIEBA = "jieba"


def jieba_module():
    try:
        import jieba
    except ImportError:
        raise WordsError("the jieba package is not installed (pip install jieba, or the 'train' extra)") from None
    jieba.setLogLevel(60)   # its dictionary-loading chatter goes to stderr otherwise
    return jieba


def jieba_dictionary_path() -> Path:
    module = jieba_module()
    return Path(module.__file__).parent / "dict.txt"


@lru_cache(maxsize=4)
def word_dictionary(spec: str) -> WordDictionary:
    """``jieba`` (its dictionary, named with its version) or a path to a word-frequency file."""
    if spec == JIEBA:
        module = jieba_module()
        return WordDictionary.build(f"jieba {module.__version__} dict.txt",
                                    read_word_frequencies(jieba_dictionary_path()))
    return WordDictionary.build(Path(spec).name, read_word_frequencies(spec))


def segment(texts: Sequence[str]) -> list[list[tuple[int, int]]]:
    """Each text's jieba words as character ``(start, end)`` pairs covering the whole text."""
    module = jieba_module()
    out = []
    for text in texts:
        spans, start = [], 0
        for word in module.cut(text):
            spans.append((start, start + len(word)))
            start += len(word)
        out.append(spans)
    return out
