"""Which products people should label next: the stream's least certain titles, explained.

A title scores by how unsure the model was about it: the summed CRF token entropy (the expected
number of units it may have wrong, when a bundle re-scored it), one minus each tag's confidence,
and a bonus for tags outside the taxonomy and for tags that are current new-tag (drift)
candidates. Identical titles count once (content hash), and no category takes more than its
quota of the budget while others still have candidates. Pure functions; the CLI reads the topics.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from stream.tagging.spans import Tag
from stream.tagging.text import compact_key, fold

PICKS_FORMAT = 1
UNKNOWN_CATEGORY = "unknown"
UNREADABLE = "\ufffd"   # the replacement character: text decoded with the wrong encoding somewhere upstream


@dataclass(frozen=True)
class Weights:
    """How the parts of a title's score add up (per unit of entropy, per tag, per title)."""

    entropy: float = 1.0          # per unit of normalised token entropy, summed over the title
    confidence: float = 1.0       # per tag: 1 - its confidence
    out_of_taxonomy: float = 0.5  # per tag the taxonomy does not know
    drift: float = 1.0            # per tag that is a current new-tag candidate


@dataclass(frozen=True)
class Candidate:
    """One product's title as the live service (or a bundle) saw it."""

    product_id: str
    text: str
    tags: tuple[Tag, ...] = ()
    version: int | None = None
    category: str = UNKNOWN_CATEGORY
    entropy: tuple[float, ...] | None = None   # per unit, normalised; None when nothing re-scored it
    field: str = "title"
    model: Mapping | None = None

    @property
    def content_hash(self) -> str:
        return title_hash(self.text)


def title_hash(text: str) -> str:
    """Of the folded text: the same title with other casing or spacing is the same work."""
    return hashlib.sha256(" ".join(fold(text).split()).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Pick:
    candidate: Candidate
    score: float
    reasons: tuple[str, ...]
    parts: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        c = self.candidate
        return {"format": PICKS_FORMAT, "id": c.product_id, "version": c.version, "field": c.field, "text": c.text,
                "category": c.category, "content_hash": c.content_hash, "score": round(self.score, 4),
                "parts": {k: round(v, 4) for k, v in self.parts.items()}, "reasons": list(self.reasons),
                "predictions": [{"start": t.start, "end": t.end, "label": t.type, "text": t.text,
                                 "confidence": t.confidence} for t in c.tags],
                "model": dict(c.model) if c.model else None}


def score(candidate: Candidate, drift_keys: frozenset[tuple[str, str]] = frozenset(),
          weights: Weights = Weights()) -> Pick:
    """A candidate's score and the reasons behind it, largest part first."""
    parts: dict[str, float] = {}
    reasons: list[tuple[float, str]] = []
    if candidate.entropy:
        total = float(sum(candidate.entropy))
        parts["entropy"] = weights.entropy * total
        worst = max(range(len(candidate.entropy)), key=candidate.entropy.__getitem__)
        reasons.append((parts["entropy"], f"token entropy {total:.2f} summed over {len(candidate.entropy)} units "
                                          f"(highest {candidate.entropy[worst]:.2f}, unit {worst})"))
    if candidate.tags:
        doubt = sum(1.0 - t.confidence for t in candidate.tags)
        parts["confidence"] = weights.confidence * doubt
        low = min(candidate.tags, key=lambda t: t.confidence)
        reasons.append((parts["confidence"], f"lowest tag confidence {low.confidence:.2f} ({low.type} {low.text!r})"))
    outside = [t for t in candidate.tags if not t.in_taxonomy]
    if outside:
        parts["out_of_taxonomy"] = weights.out_of_taxonomy * len(outside)
        reasons.append((parts["out_of_taxonomy"], "outside the taxonomy: "
                        + ", ".join(f"{t.type} {t.text!r}" for t in outside[:3])))
    drifting = [t for t in outside if (t.type, compact_key(t.text)) in drift_keys]
    if drifting:
        parts["drift"] = weights.drift * len(drifting)
        reasons.append((parts["drift"], "new-tag candidate: " + ", ".join(f"{t.type} {t.text!r}" for t in drifting[:3])))
    if not candidate.tags:
        reasons.append((0.0, "no tags found"))
    ordered = tuple(text for _, text in sorted(reasons, key=lambda r: -r[0]))
    return Pick(candidate, sum(parts.values()), ordered, parts)


def _bigrams(text: str) -> dict[str, float]:
    folded = " ".join(fold(text).split())
    grams: dict[str, float] = {}
    for i in range(len(folded) - 1):
        grams[folded[i:i + 2]] = grams.get(folded[i:i + 2], 0.0) + 1.0
    norm = math.sqrt(sum(v * v for v in grams.values())) or 1.0
    return {g: v / norm for g, v in grams.items()}


def typicality(texts: Sequence[str]) -> list[float]:
    """How typical each text is of the whole pool: the cosine of its character-bigram profile with
    the pool's mean profile (information density, Settles & Craven 2008), in [0, 1]. Uncertainty
    alone favours outliers (garbled or one-off titles) whose labels teach little about the rest."""
    profiles = [_bigrams(t) for t in texts]
    centre: dict[str, float] = {}
    for profile in profiles:
        for g, v in profile.items():
            centre[g] = centre.get(g, 0.0) + v
    norm = math.sqrt(sum(v * v for v in centre.values())) or 1.0
    return [sum(v * centre.get(g, 0.0) for g, v in profile.items()) / norm for profile in profiles]


def _keys(candidate: Candidate) -> frozenset[tuple[str, str]]:
    """What a title teaches: its tags' (type, compact text)."""
    return frozenset((t.type, compact_key(t.text)) for t in candidate.tags)


def _greedy(scored: list[Pick], n: int, quota: int,
            redundancy: float) -> tuple[list[Pick], list[Pick], dict[str, int], int]:
    """Best first, a title's score shrunk by ``redundancy`` for each earlier pick that shares a tag
    with it (lazy greedy: a shrunk score is pushed back and compared again). Returns the picks,
    the titles a full category turned away (best first), picks per category and how many picks
    were discounted."""
    heap = [(-p.score, i, 0) for i, p in enumerate(scored)]
    heapq.heapify(heap)
    used: dict[tuple[str, str], int] = {}
    taken: dict[str, int] = {}
    picks, overflow, discounted = [], [], 0
    while heap and len(picks) < n:
        _, i, seen = heapq.heappop(heap)
        pick = scored[i]
        keys = _keys(pick.candidate)
        shared = max((used.get(k, 0) for k in keys), default=0)
        if shared > seen:
            heapq.heappush(heap, (-pick.score * redundancy ** shared, i, shared))
            continue
        category = pick.candidate.category
        if taken.get(category, 0) >= quota:
            overflow.append(pick)
            continue
        taken[category] = taken.get(category, 0) + 1
        if shared:
            discounted += 1
            common = max(keys, key=lambda k: used.get(k, 0))
            pick = Pick(pick.candidate, pick.score, pick.reasons + (
                f"shares {common[0]} {common[1]!r} with {shared} earlier pick(s): ranked at "
                f"{pick.score * redundancy ** shared:.3f}",), pick.parts)
        for k in keys:
            used[k] = used.get(k, 0) + 1
        picks.append(pick)
    return picks, overflow, taken, discounted


def select(candidates: Iterable[Candidate], n: int, *, max_category_share: float = 0.25,
           drift_keys: frozenset[tuple[str, str]] = frozenset(), exclude: Iterable[str] = (),
           weights: Weights = Weights(), redundancy: float = 1.0, density: float = 0.0) -> tuple[list[Pick], dict]:
    """The ``n`` best picks and a report of what was skipped and why.

    A category may take ``ceil(n * max_category_share)`` picks, or its even share of the budget
    when there are few categories; slots the quota leaves empty go to the best remaining titles
    (their reasons say so), so a small pool still fills the budget. With ``redundancy`` below 1,
    a title that shares a tag with titles already picked ranks as if its score were that much
    smaller per such pick, so one doubtful brand does not fill the batch. With ``density`` above 0,
    a score is multiplied by the title's `typicality` to that power.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0 < max_category_share <= 1:
        raise ValueError(f"max_category_share must be in (0, 1], got {max_category_share}")
    if not 0 < redundancy <= 1:
        raise ValueError(f"redundancy must be in (0, 1], got {redundancy}")
    if density < 0:
        raise ValueError(f"density must be at least 0, got {density}")
    excluded = set(exclude)
    report = {"candidates": 0, "duplicates": 0, "excluded": 0, "unreadable": 0, "quota_relaxed": 0}
    seen: set[str] = set()
    scored: list[Pick] = []
    for candidate in candidates:
        report["candidates"] += 1
        digest = candidate.content_hash
        if digest in excluded or candidate.product_id in excluded:
            report["excluded"] += 1
            continue
        if digest in seen:
            report["duplicates"] += 1
            continue
        if UNREADABLE in candidate.text:
            # Mis-decoded text: the model is unsure of it, but a label on it teaches nothing.
            report["unreadable"] += 1
            continue
        seen.add(digest)
        scored.append(score(candidate, drift_keys, weights))
    if density and scored:
        typical = typicality([p.candidate.text for p in scored])
        scored = [Pick(p.candidate, p.score * t ** density, p.reasons + (f"typicality {t:.2f} of the pool "
                       f"(score x {t ** density:.2f})",), {**p.parts, "typicality": t}) for p, t in zip(scored, typical)]
    scored.sort(key=lambda p: (-p.score, p.candidate.product_id))
    categories = {p.candidate.category for p in scored}
    quota = max(math.ceil(n * max_category_share), math.ceil(n / max(1, len(categories))))
    picks, overflow, taken, discounted = _greedy(scored, n, quota, redundancy)
    for pick in overflow[:n - len(picks)]:
        report["quota_relaxed"] += 1
        picks.append(Pick(pick.candidate, pick.score, pick.reasons + (
            f"category {pick.candidate.category!r} is over its quota of {quota}, but no other category had "
            "candidates left",), pick.parts))
    report.update(picked=len(picks), quota=quota, per_category=dict(sorted(taken.items())),
                  redundancy_discounted=discounted)
    return picks, report


# --- building candidates from what the service publishes -----------------------------------------

def product_of(record: Mapping) -> Mapping | None:
    """A product event from a line of a `tagstream tail` dump ({..., "value": event}), a bare
    event, or a labelled text record ({"id", "text"}); None for deletes and records without text."""
    value = record.get("value") if isinstance(record.get("value"), Mapping) else record
    if value.get("op") == "delete":
        return None
    text = value.get("title") if isinstance(value.get("title"), str) else value.get("text")
    pid = value.get("product_id", value.get("id"))
    if not isinstance(text, str) or not text.strip() or pid is None:
        return None
    return {**value, "product_id": str(pid), "title": text}


def latest_products(records: Iterable[Mapping]) -> list[Mapping]:
    """The latest version of each product, in first-seen order."""
    latest: dict[str, Mapping] = {}
    for record in records:
        product = product_of(record)
        if product is None:
            continue
        old = latest.get(product["product_id"])
        if old is None or (product.get("version") or 0) >= (old.get("version") or 0):
            latest[product["product_id"]] = product
    return list(latest.values())


def tags_from_enriched(records: Iterable[Mapping]) -> dict[tuple[str, int | None], tuple[Tag, ...]]:
    """(product id, version) -> the title tags of its enriched record."""
    out: dict[tuple[str, int | None], tuple[Tag, ...]] = {}
    for record in records:
        value = record.get("value") if isinstance(record.get("value"), Mapping) else record
        if "tags" not in value or "product_id" not in value:
            continue
        tags = tuple(Tag(tag=t["tag"], type=t["type"], text=t["text"], field=t["field"], start=t["start"],
                         end=t["end"], confidence=float(t["confidence"]), in_taxonomy=bool(t["in_taxonomy"]),
                         path=tuple(t.get("path", ()))) for t in value["tags"] if t.get("field") == "title")
        out[(str(value["product_id"]), value.get("version"))] = tags
    return out


def drift_keys_from(records: Iterable[Mapping]) -> frozenset[tuple[str, str]]:
    """(type, compact key) of every new-tag candidate record (tagstream.taxonomy-candidates)."""
    keys = set()
    for record in records:
        value = record.get("value") if isinstance(record.get("value"), Mapping) else record
        if isinstance(value.get("type"), str) and isinstance(value.get("text"), str):
            keys.add((value["type"], value.get("key") or compact_key(value["text"])))
    return frozenset(keys)


def candidate(product: Mapping, tags: Sequence[Tag], entropy: Sequence[float] | None,
              model: Mapping | None = None) -> Candidate:
    category = product.get("category_hint")
    return Candidate(product_id=product["product_id"], text=product["title"], version=product.get("version"),
                     tags=tuple(t for t in tags if t.field in ("title", "text")),
                     category=category if isinstance(category, str) and category else UNKNOWN_CATEGORY,
                     entropy=tuple(float(e) for e in entropy) if entropy is not None else None, model=model)


def rescore(pipeline, products: Sequence[Mapping], tags: Mapping | None = None) -> list[Candidate]:
    """Candidates with per-unit entropy from a loaded `Pipeline`; their tags are the live service's
    (``tags`` from `tags_from_enriched`) where it tagged that version, else the pipeline's."""
    titles = [p["title"] for p in products]
    scored = pipeline.tagger.score_units(pipeline.tagger.encoder.units(titles), ["title"] * len(titles))
    out = []
    for product, result in zip(products, scored):
        live = (tags or {}).get((product["product_id"], product.get("version")))
        own = live if live is not None else [pipeline.tag(s) for s in result.spans]
        out.append(candidate(product, own, result.entropy, pipeline.model))
    return out
