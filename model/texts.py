"""Unlabelled product texts for pretraining, from plain text, JSONL (events, topic dumps, labelled) or CoNLL.

Pure Python (no torch), so the CLI checks `--texts` files before importing PyTorch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator, Sequence

from model.data import PRODUCT_FIELDS, DataError, read_conll, record_id
from stream.tagging.spans import SchemeError, split_tag

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
CONLL_SUFFIXES = (".conll", ".bio", ".bioes", ".iob", ".iob2", ".bmes")
PLAIN_SUFFIXES = (".txt",)
_SNIFF_LINES = 20


def _looks_like_conll(lines: Sequence[str]) -> bool:
    """Every one of the first non-blank lines is `<token><tab or space><tag>` with a valid tag."""
    sample = [line for line in lines if line.strip()][:_SNIFF_LINES]
    if not sample:
        return False
    for line in sample:
        body = line.rstrip("\r")
        token, _, tag = body.rpartition("\t") if "\t" in body else body.rstrip().rpartition(" ")
        if not token:
            return False
        try:
            split_tag(tag.strip())
        except SchemeError:
            return False
    return True


def file_format(path: Path, lines: Sequence[str]) -> str:
    """``jsonl``, ``conll`` or ``plain``: by suffix when it says, else by the first lines."""
    suffix = path.suffix.lower()
    if suffix in JSON_SUFFIXES:
        return "jsonl"
    if suffix in CONLL_SUFFIXES:
        return "conll"
    if suffix in PLAIN_SUFFIXES:
        return "plain"
    first = next((line for line in lines if line.strip()), "")
    if first.lstrip().startswith("{"):
        return "jsonl"
    return "conll" if _looks_like_conll(lines) else "plain"


def _json_values(text: str, path: Path) -> Iterator[tuple[int, object]]:
    """JSON values one after another, each with its first line: JSON lines, and also the
    indented records of `tagstream tail --pretty`."""
    decoder = json.JSONDecoder()
    pos, line = 0, 1
    while True:
        start = pos
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        line += text.count("\n", start, pos)
        if pos >= len(text):
            return
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
        yield line, value
        line += text.count("\n", pos, end)
        pos = end


def _product_texts(record: dict, where: str) -> list[str]:
    out = []
    for name in PRODUCT_FIELDS:
        value = record.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise DataError(f"{where}: {name!r} must be a string, got {type(value).__name__}")
        if value.strip():
            out.append(value)
    return out


def _record_texts(record: object, where: str, line: int) -> tuple[list[str], bool]:
    """Texts of one JSON record, and whether it was a topic record with no product text
    (a tombstone, a delete, bytes that are not an event): a topic holds what producers sent.
    A labelled or product record meets `train`'s id rule (none: its line names it), so a file
    one verb takes the other takes too."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "value" in record and ("offset" in record or "partition" in record):
        value = record["value"]
        if not isinstance(value, dict):
            return [], True
        try:
            texts = _product_texts(value, where)
        except DataError:
            return [], True   # the worker dead-letters such an event; it has no text to learn from
        return texts, not texts
    if "text" in record or "title" in record or "description" in record:
        record_id(record, where, line)
    if "text" in record:
        if not isinstance(record["text"], str):
            raise DataError(f"{where}: 'text' must be a string, got {type(record['text']).__name__}")
        return ([record["text"]] if record["text"].strip() else []), False
    if "title" in record or "description" in record:
        return _product_texts(record, where), False
    if record.get("op") == "delete":
        return [], False
    raise DataError(f"{where}: expected a product event ('title', 'description'), a labelled record ('text') "
                    f"or a topic record ('value'); got keys {', '.join(sorted(record)) or 'none'}")


def read_texts(paths: Sequence[str | Path], log: Callable[[str], None] | None = None) -> list[str]:
    """Every non-empty text in ``paths``, in file order; duplicates are kept.

    Plain text has one text per line; JSONL holds product events (`tagstream produce` input or
    synthetic catalogue records: title and description), `tagstream tail` records of the input
    topic (the event under `value`), or labelled records (`text`); CoNLL files give their texts
    without the labels.
    """
    out: list[str] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        try:
            # Only \n ends a line: titles contain U+2028 and U+0085, which splitlines() would break on.
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise DataError(f"{path}: cannot read ({err.strerror})") from None
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
        lines = text.split("\n")
        kind = file_format(path, lines)
        skipped = 0
        if kind == "conll":
            # Labels are not used, so a broken tag sequence is repaired rather than refused.
            found = [e.text for e in read_conll(path, repair=True).examples if e.text.strip()]
        elif kind == "jsonl":
            found = []
            for line, record in _json_values(text, path):
                texts, empty_topic_record = _record_texts(record, f"{path}:{line}", line)
                found += texts
                skipped += empty_topic_record
        else:
            found = [line.strip() for line in lines if line.strip()]
        if not found:
            raise DataError(f"{path}: no texts in this {kind} file")
        if log:
            log(f"{path}: {len(found)} texts ({kind})"
                + (f"; {skipped} topic records without product text skipped" if skipped else ""))
        out += found
    return out


__all__ = ["read_texts", "file_format"]
