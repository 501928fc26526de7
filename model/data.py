"""Labelled data: native JSONL spans and CoNLL one-token-per-line files, strictly checked.

Pure Python (no torch), so `tagstream synth` and data checks work on a serving install.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from stream.tagging.spans import SCHEMES, SchemeError, Span, from_bioes, spans_from_tags, split_tag, to_bioes, unit_tags

PRODUCT_FIELDS = ("title", "description")


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled text. Product records become one example per field. A ``partial`` example's
    text outside its spans is unknown, not O (weak labels: dictionary matches)."""

    id: str
    text: str
    spans: tuple[Span, ...] = ()
    field: str = "text"
    partial: bool = False

    def to_json(self) -> dict:
        out = {"id": self.id, "text": self.text, "spans": [s.to_json() for s in self.spans]}
        if self.partial:
            out["partial"] = True
        return out


@dataclass
class ReadReport:
    """What a reader accepted, so callers can print it."""

    examples: list[Example] = field(default_factory=list)
    repaired: int = 0


def _check_spans(text: str, spans: list[Span], labels: set[str] | None, where: str) -> None:
    previous: Span | None = None
    for span in sorted(spans):
        if not (0 <= span.start < span.end <= len(text)):
            raise DataError(f"{where}: span [{span.start}, {span.end}) {span.label!r} is outside the "
                            f"{span.field} text of length {len(text)} (or empty)")
        if labels is not None and span.label not in labels:
            raise DataError(f"{where}: unknown label {span.label!r} (known: {', '.join(sorted(labels))})")
        if previous is not None and span.start < previous.end:
            raise DataError(f"{where}: span [{span.start}, {span.end}) {span.label!r} overlaps "
                            f"[{previous.start}, {previous.end}) {previous.label!r}")
        previous = span


def _parse_span(raw: object, where: str, default_field: str) -> Span:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: a span must be an object, got {type(raw).__name__}")
    try:
        start, end, label = raw["start"], raw["end"], raw["label"]
    except KeyError as missing:
        raise DataError(f"{where}: span lacks {missing}") from None
    if not (isinstance(start, int) and isinstance(end, int)) or isinstance(start, bool) or isinstance(end, bool):
        raise DataError(f"{where}: span start/end must be integers, got {start!r}, {end!r}")
    if not isinstance(label, str) or not label:
        raise DataError(f"{where}: span label must be a non-empty string, got {label!r}")
    return Span(start, end, label, raw.get("field", default_field))


def record_id(record: dict, where: str, line: int | None) -> str:
    """A JSONL record's ``id``; one without (absent or null) is named after its line, ``line-17``.
    The one rule of labelled data and of pretraining texts (`model.texts`)."""
    rid = record.get("id")
    if rid is None and line is not None:
        return f"line-{line}"
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise DataError(f"{where}: 'id' must be a string or an integer, got {type(rid).__name__}")
    return str(rid)


def parse_record(record: object, where: str, labels: set[str] | None = None, line: int | None = None) -> list[Example]:
    """One JSONL record (text or product form) -> examples, or a DataError naming ``where``.
    ``line`` names a record without an id (`record_id`)."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    rid = record_id(record, where, line)
    raw_spans = record.get("spans", [])
    if not isinstance(raw_spans, list):
        raise DataError(f"{where}: 'spans' must be a list")
    partial = record.get("partial", False)
    if not isinstance(partial, bool):
        raise DataError(f"{where}: 'partial' must be true or false, got {partial!r}")
    if "text" in record:
        if not isinstance(record["text"], str):
            raise DataError(f"{where}: 'text' must be a string")
        spans = [_parse_span(s, where, "text") for s in raw_spans]
        _check_spans(record["text"], spans, labels, where)
        return [Example(rid, record["text"], tuple(sorted(spans)), partial=partial)]
    if "title" not in record:
        raise DataError(f"{where}: a record needs 'text', or 'title' (and optional 'description')")
    spans = [_parse_span(s, where, "title") for s in raw_spans]
    unknown = {s.field for s in spans} - set(PRODUCT_FIELDS)
    if unknown:
        raise DataError(f"{where}: span field {sorted(unknown)[0]!r} is not one of {', '.join(PRODUCT_FIELDS)}")
    out = []
    for name in PRODUCT_FIELDS:
        value = record.get(name)
        if value is None:
            if any(s.field == name for s in spans):
                raise DataError(f"{where}: spans refer to {name!r} but the record has none")
            continue
        if not isinstance(value, str):
            raise DataError(f"{where}: {name!r} must be a string")
        own = [s for s in spans if s.field == name]
        _check_spans(value, own, labels, where)
        out.append(Example(f"{rid}#{name}", value, tuple(sorted(own)), name, partial))
    return out


def read_jsonl(path: str | Path, labels: Iterable[str] | None = None) -> list[Example]:
    path = Path(path)
    known = set(labels) if labels is not None else None
    out: list[Example] = []
    try:
        handle = path.open(encoding="utf-8")
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: malformed JSON ({err.msg} at column {err.colno})") from None
            out.extend(parse_record(record, where, known, number))
    return out


def write_jsonl(path: str | Path, examples: Iterable[Example]) -> None:
    with Path(path).open("w", encoding="utf-8") as out:
        for ex in examples:
            out.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")


def _split_conll_line(line: str) -> tuple[str, str] | None:
    body = line.rstrip("\r\n")
    if "\t" in body:
        token, _, tag = body.rpartition("\t")
    else:
        token, _, tag = body.rstrip().rpartition(" ")
    if not token or not tag.strip():
        return None
    return token, tag.strip()


def read_conll(path: str | Path, *, repair: bool = False, labels: Iterable[str] | None = None,
               level: str = "auto") -> ReadReport:
    """Read a CoNLL file of BIO / IOB2 / BIOES tags into examples.

    ``level`` says how tokens join into text: ``char`` (concatenate: one character per line,
    spaces included, as in Chinese data), ``word`` (join with spaces), or ``auto`` (char when
    nearly every token is a single character).
    """
    path = Path(path)
    try:
        # Only \n ends a line: splitlines() would also break on U+0085 and U+2028, which real titles contain.
        lines = path.read_text(encoding="utf-8").split("\n")
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    sentences: list[tuple[int, list[tuple[str, str]]]] = []
    current: list[tuple[str, str]] = []
    first_line = 1
    for number, line in enumerate(lines, 1):
        pair = _split_conll_line(line)
        if pair is None and not line.strip():
            if current:
                sentences.append((first_line, current))
            current = []
            continue
        if pair is None:
            raise DataError(f"{path}:{number}: expected '<token><tab or space><tag>', got {line!r}")
        try:
            split_tag(pair[1])
        except SchemeError as err:
            raise DataError(f"{path}:{number}: {err}") from None
        if not current:
            first_line = number
        current.append(pair)
    if current:
        sentences.append((first_line, current))
    if level == "auto":
        tokens = [tok for _, sent in sentences for tok, _ in sent]
        level = "char" if tokens and sum(len(t) == 1 for t in tokens) >= 0.95 * len(tokens) else "word"
    if level not in {"char", "word"}:
        raise ValueError(f"level must be auto, char or word, got {level!r}")
    known = set(labels) if labels is not None else None
    report = ReadReport()
    for index, (line_no, sent) in enumerate(sentences):
        where = f"{path}:{line_no}"
        tokens = [tok for tok, _ in sent]
        try:
            bioes = to_bioes([tag for _, tag in sent])
        except SchemeError as err:
            if not repair:
                raise DataError(f"{path}:{line_no + err.index}: {err}") from None
            bioes = to_bioes([tag for _, tag in sent], repair=True)
            report.repaired += 1
        units, pieces, offset = [], [], 0
        for i, tok in enumerate(tokens):
            if level == "word" and i:
                pieces.append(" ")
                offset += 1
            units.append((offset, offset + len(tok)))
            pieces.append(tok)
            offset += len(tok)
        text = "".join(pieces)
        spans = []
        for span in spans_from_tags(units, bioes):
            # Entities that begin or end on a space token (seen in real data) are trimmed to their words.
            chunk = text[span.start:span.end]
            start = span.start + len(chunk) - len(chunk.lstrip())
            end = span.end - (len(chunk) - len(chunk.rstrip()))
            if start < end:
                spans.append(Span(start, end, span.label))
        if known is not None:
            for span in spans:
                if span.label not in known:
                    raise DataError(f"{where}: unknown label {span.label!r}")
        report.examples.append(Example(f"{path.stem}-{index + 1}", text, tuple(spans)))
    return report


def conll_units(text: str, level: str) -> list[tuple[int, int]]:
    """Token ranges for writing CoNLL: every character, or whitespace-separated words."""
    if level == "char":
        return [(i, i + 1) for i in range(len(text))]
    units, start = [], None
    for i, ch in enumerate(text + " "):
        if ch.isspace():
            if start is not None:
                units.append((start, i))
            start = None
        elif start is None:
            start = i
    return units


def write_conll(path: str | Path, examples: Iterable[Example], *, scheme: str = "bioes", level: str = "char") -> int:
    """Write examples as CoNLL; returns how many spans did not fall on token edges (snapped)."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    snapped = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for ex in examples:
            units = conll_units(ex.text, level)
            tags, bad = unit_tags(units, ex.spans)
            snapped += len(bad)
            for (s, e), tag in zip(units, from_bioes(tags, scheme)):
                out.write(f"{ex.text[s:e]}\t{tag}\n")
            out.write("\n")
    return snapped


def data_hash(paths: Sequence[str | Path]) -> str:
    """sha256 over the bytes of the training files, recorded in checkpoints and bundles."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def labels_in(examples: Iterable[Example]) -> list[str]:
    return sorted({s.label for ex in examples for s in ex.spans})


def load_examples(paths: Sequence[str | Path], *, repair: bool = False) -> list[Example]:
    """JSONL by suffix (.jsonl/.json), otherwise a CoNLL file (BIO, IOB2 or BIOES)."""
    out: list[Example] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: no such file")
        if path.suffix in {".jsonl", ".json"}:
            out.extend(read_jsonl(path))
        else:
            out.extend(read_conll(path, repair=repair).examples)
    return out



def _cuts_word(text: str, i: int) -> bool:
    """Whether a boundary at ``i`` falls inside a run of Latin letters or digits ("men" in "women")."""
    return 0 < i < len(text) and text[i - 1].isascii() and text[i - 1].isalnum() and text[i].isascii() \
        and text[i].isalnum()


def unlabelled_repeats(examples: Sequence[Example], min_length: int = 2,
                       max_length: int = 24) -> dict[tuple[str, str], tuple[tuple[int, int], ...]]:
    """Per gold title (keyed by id and text), the character ranges where a string that is an entity
    somewhere in ``examples`` occurs with no span on or across it: an annotator's miss as often as
    not (on ecommerce-ner's training split, 24% of the occurrences of product-type strings). Longest
    match first, left to right, never cutting through a Latin word; strings shorter than
    ``min_length`` are left out (one character is too often part of another word)."""
    known = {ex.text[s.start:s.end] for ex in examples if not ex.partial for s in ex.spans}
    known = {k for k in known if min_length <= len(k) <= max_length}
    longest = max((len(k) for k in known), default=0)
    out: dict[tuple[str, str], tuple[tuple[int, int], ...]] = {}
    for ex in examples:
        if ex.partial:
            continue
        covered = bytearray(len(ex.text))
        for s in ex.spans:
            covered[s.start:s.end] = b"\x01" * (s.end - s.start)
        found, i = [], 0
        while i < len(ex.text):
            end = next((i + n for n in range(min(longest, len(ex.text) - i), min_length - 1, -1)
                        if ex.text[i:i + n] in known and not any(covered[i:i + n])
                        and not _cuts_word(ex.text, i) and not _cuts_word(ex.text, i + n)), None)
            if end is None:
                i += 1
                continue
            found.append((i, end))
            i = end
        if found:
            out[(ex.id, ex.text)] = tuple(found)
    return out


def split_dev(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, dev): a ``fraction`` of the examples, drawn by ``seed``, held out as dev."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_dev = max(1, int(len(examples) * fraction))
    dev = set(order[:n_dev])
    return [e for i, e in enumerate(examples) if i not in dev], [examples[i] for i in sorted(dev)]


__all__ = ["DataError", "Example", "ReadReport", "read_jsonl", "write_jsonl", "read_conll", "write_conll",
           "parse_record", "record_id", "data_hash", "labels_in", "load_examples", "conll_units",
           "unlabelled_repeats", "split_dev"]
