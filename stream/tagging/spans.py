"""Tag spans and the BIOES label scheme, shared by training and serving.

Everything here is pure Python so a serving install (no PyTorch) and the trainer agree
on exactly one definition of how spans become per-unit tags and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

OUTSIDE = "O"
SCHEMES = ("bio", "iob2", "bioes")


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """A labelled character range ``[start, end)`` of one text field."""

    start: int
    end: int
    label: str
    field: str = "text"

    def to_json(self) -> dict:
        out = {"start": self.start, "end": self.end, "label": self.label}
        if self.field != "text":
            out["field"] = self.field
        return out


class SchemeError(ValueError):
    """A tag sequence that breaks the scheme (e.g. I- without B-) when repair was not asked."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index  # position of the offending tag, when there is one


def label_list(entity_types: Iterable[str]) -> list[str]:
    """The BIOES tag list for these entity types: ``O`` first, then B/I/E/S per type, sorted."""
    tags = [OUTSIDE]
    for entity in sorted(set(entity_types)):
        if not entity or "-" in entity[:2]:
            raise ValueError(f"entity type {entity!r} is not a usable label name")
        tags += [f"B-{entity}", f"I-{entity}", f"E-{entity}", f"S-{entity}"]
    return tags


def entity_types(labels: Sequence[str]) -> list[str]:
    return sorted({tag[2:] for tag in labels if tag != OUTSIDE})


def split_tag(tag: str) -> tuple[str, str | None]:
    """``"B-brand"`` -> ``("B", "brand")``; ``"O"`` -> ``("O", None)``."""
    if tag == OUTSIDE:
        return OUTSIDE, None
    prefix, sep, entity = tag.partition("-")
    if not sep or prefix not in {"B", "I", "E", "S", "M"} or not entity:
        raise SchemeError(f"tag {tag!r} is not O or <B|I|E|S|M>-<type>")
    return ("I" if prefix == "M" else prefix), entity


def transition_rules(labels: Sequence[str]) -> tuple[list[bool], list[list[bool]], list[bool]]:
    """BIOES as a chain over ``labels``: which tags may open a sequence, which may follow each tag
    (``follows[a][b]``: b after a), and which may close one. Inside an entity (after B or I) only I
    or E of its type may come; anywhere else O, B or S."""
    parsed = [split_tag(tag) for tag in labels]
    opens = [prefix in {OUTSIDE, "B", "S"} for prefix, _ in parsed]
    closes = [prefix in {OUTSIDE, "E", "S"} for prefix, _ in parsed]
    follows = [[(b_prefix in {"I", "E"} and b_type == a_type) if a_prefix in {"B", "I"} else b_opens
                for (b_prefix, b_type), b_opens in zip(parsed, opens)]
               for a_prefix, a_type in parsed]
    return opens, follows, closes


def unit_tags(units: Sequence[tuple[int, int]], spans: Iterable[Span]) -> tuple[list[str], list[Span]]:
    """BIOES tags for text units (character ranges) covered by ``spans``.

    A unit belongs to a span when the two overlap. Returns the tags and the spans whose
    edges do not fall on unit edges (they are snapped outward; callers count them).
    """
    tags = [OUTSIDE] * len(units)
    snapped: list[Span] = []
    starts = [u[0] for u in units]
    ends = [u[1] for u in units]
    for span in sorted(spans):
        covered = [i for i, (s, e) in enumerate(units) if s < span.end and e > span.start]
        if not covered:
            snapped.append(span)
            continue
        first, last = covered[0], covered[-1]
        if starts[first] != span.start or ends[last] != span.end:
            snapped.append(span)
        if any(tags[i] != OUTSIDE for i in covered):
            continue  # two spans snapped onto one unit: keep the first
        if first == last:
            tags[first] = f"S-{span.label}"
        else:
            tags[first] = f"B-{span.label}"
            for i in range(first + 1, last):
                tags[i] = f"I-{span.label}"
            tags[last] = f"E-{span.label}"
    return tags, snapped


def tag_runs(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Entity runs ``(first_unit, end_unit_exclusive, type)`` from BIOES (or BIO) tags.

    Decoding is lenient, as a decoder's output must be: an I/E that does not continue a
    run of its type opens a new one, and a run left open at O or a new B is closed.
    """
    runs: list[tuple[int, int, str]] = []
    open_start: int | None = None
    open_type: str | None = None

    def close(end: int) -> None:
        nonlocal open_start, open_type
        if open_start is not None:
            runs.append((open_start, end, open_type))
        open_start, open_type = None, None

    for i, tag in enumerate(tags):
        prefix, entity = split_tag(tag)
        if prefix == OUTSIDE:
            close(i)
        elif prefix == "S":
            close(i)
            runs.append((i, i + 1, entity))
        elif prefix == "B" or entity != open_type:
            close(i)
            open_start, open_type = i, entity
            if prefix == "E":
                close(i + 1)
        elif prefix == "E":
            close(i + 1)
    close(len(tags))
    return runs


def spans_from_tags(units: Sequence[tuple[int, int]], tags: Sequence[str], field: str = "text") -> list[Span]:
    return [Span(units[a][0], units[b - 1][1], entity, field) for a, b, entity in tag_runs(tags)]


def to_bioes(tags: Sequence[str], *, repair: bool = False) -> list[str]:
    """Convert BIO / IOB2 / BIOES tags to BIOES.

    ``I-x`` that does not continue an ``x`` run is a scheme error unless ``repair`` is set,
    in which case it starts a new run (the usual IOB1 reading).
    """
    out: list[str] = []
    parsed = [split_tag(t) for t in tags]
    for i, (prefix, entity) in enumerate(parsed):
        if prefix == OUTSIDE:
            out.append(OUTSIDE)
            continue
        prev_prefix, prev_entity = parsed[i - 1] if i else (OUTSIDE, None)
        continues = prev_entity == entity and prev_prefix in {"B", "I"}
        if prefix in {"I", "E"} and not continues:
            if not repair:
                raise SchemeError(f"{tags[i]} does not continue a {entity} entity (previous tag "
                                  f"{tags[i - 1] if i else 'none'}); use --repair to start one there", i)
            prefix = "B" if prefix == "I" else "S"
        nxt_prefix, nxt_entity = parsed[i + 1] if i + 1 < len(parsed) else (OUTSIDE, None)
        continued = nxt_entity == entity and nxt_prefix in {"I", "E"}
        if prefix in {"B", "S"}:
            out.append(f"B-{entity}" if continued else f"S-{entity}")
        else:
            out.append(f"I-{entity}" if continued else f"E-{entity}")
    return out


def from_bioes(tags: Sequence[str], scheme: str) -> list[str]:
    """Write BIOES tags out in ``scheme`` (``bio``/``iob2`` collapse E to I and S to B)."""
    if scheme == "bioes":
        return list(tags)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    out = []
    for tag in tags:
        prefix, entity = split_tag(tag)
        out.append(tag if prefix == OUTSIDE else f"{'B' if prefix in 'BS' else 'I'}-{entity}")
    return out


@dataclass(frozen=True, slots=True)
class TaggedSpan:
    """One tag found in a text: where, what, and how sure the CRF is."""

    field: str
    start: int
    end: int
    text: str
    type: str
    confidence: float

    def to_json(self) -> dict:
        return {"field": self.field, "start": self.start, "end": self.end, "text": self.text,
                "type": self.type, "confidence": round(self.confidence, 4)}


@dataclass(frozen=True, slots=True)
class Tag:
    """A span as the service publishes it: tied to its taxonomy node (``tag`` is the node id, else
    the normalised text; ``path`` the node's ids from the root down) and to its evidence."""

    tag: str
    type: str
    text: str
    field: str
    start: int
    end: int
    confidence: float
    in_taxonomy: bool
    path: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """The enriched record's tag object (key order fixed: replays give the same bytes)."""
        return {"tag": self.tag, "type": self.type, "path": list(self.path), "text": self.text, "field": self.field,
                "start": self.start, "end": self.end, "confidence": self.confidence, "in_taxonomy": self.in_taxonomy}
