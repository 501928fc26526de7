"""Taxonomy drift: tumbling windows of tagged texts compared with the bundle's reference profile,
and new-tag discovery from the spans the taxonomy does not know.

Pure: the worker feeds windows and publishes what ``close()`` returns; the tests feed them too.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Iterable, Mapping, Sequence

import numpy as np

from stream.service.events import iso_time
from stream.service.settings import Settings
from stream.tagging.profile import quantiles
from stream.tagging.spans import Tag
from stream.tagging.text import normalise_value

OTHER = "__other__"
TOP_VALUE_BINS = 20     # the reference's most frequent tag values compared one by one
EPSILON = 1e-4          # floor for empty bins, so PSI stays finite


def _setting(name: str):
    """A field whose default (and meaning) is the worker setting ``name``: set once, in Settings."""
    return field(default=getattr(Settings, name), metadata={"setting": name})


@dataclass(frozen=True)
class DriftConfig:
    """A window's limits and thresholds: the drift_* and candidate_* settings (see their help)."""

    window_events: int = _setting("drift_window_events")
    window_seconds: float = _setting("drift_window_seconds")
    min_texts: int = _setting("drift_min_texts")
    psi_threshold: float = _setting("drift_psi_threshold")
    js_threshold: float = _setting("drift_js_threshold")        # Jensen-Shannon divergence (base 2, 0..1)
    oot_threshold: float = _setting("drift_oot_threshold")
    candidate_min_count: int = _setting("candidate_min_count")
    candidate_min_share: float = _setting("candidate_min_share")

    @classmethod
    def from_settings(cls, settings: Settings) -> "DriftConfig":
        return cls(**{f.name: getattr(settings, f.metadata["setting"]) for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class TextObservation:
    """One tagged text (a title or a description) as a drift window sees it."""

    product_id: str
    field: str
    text: str
    tokens: int
    unknown_tokens: int
    tags: Sequence[Tag]                # the published tags of this field


def distribution(counts: Mapping[str, float], keys: Sequence[str]) -> np.ndarray:
    """Probabilities over ``keys`` (the last bin catches everything else), floored at EPSILON."""
    total = float(sum(counts.values()))
    known = [float(counts.get(k, 0.0)) for k in keys if k != OTHER]
    if OTHER in keys:
        known.append(max(total - sum(known), 0.0))
    p = np.asarray(known, dtype=np.float64)
    p = p / p.sum() if p.sum() > 0 else np.full(len(p), 1.0 / len(p))
    p = np.maximum(p, EPSILON)
    return p / p.sum()


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index: sum of (a - e) * ln(a / e)."""
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    m = 0.5 * (p + q)
    return float(0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m)))


@dataclass
class DriftWindow:
    """One tumbling window; ``due`` says when to ``close`` it, which starts the next."""

    config: DriftConfig
    reference: Mapping
    opened: float = field(default_factory=time.time)
    covered_types: frozenset | None = None   # tag types the taxonomy has nodes for (None: all)
    products: set = field(default_factory=set)
    texts: int = 0
    no_tag_texts: int = 0
    tokens: int = 0
    unknown_tokens: int = 0
    lengths: list = field(default_factory=list)
    confidences: list = field(default_factory=list)
    type_counts: Counter = field(default_factory=Counter)
    value_counts: Counter = field(default_factory=Counter)
    covered_spans: int = 0
    out_of_taxonomy: int = 0
    unknown_values: dict = field(default_factory=dict)   # (type, key) -> {"forms", "products", "examples"}

    def add(self, observations: Iterable[TextObservation]) -> None:
        for obs in observations:
            self.products.add(obs.product_id)
            self.texts += 1
            self.tokens += obs.tokens
            self.unknown_tokens += obs.unknown_tokens
            self.lengths.append(len(obs.text))
            self.no_tag_texts += not obs.tags
            for tag in obs.tags:
                self.type_counts[tag.type] += 1
                self.value_counts[f"{tag.type}:{normalise_value(tag.text)}"] += 1
                self.confidences.append(float(tag.confidence))
                if self.covered_types is not None and tag.type not in self.covered_types:
                    continue            # free-form types (model numbers) have no nodes to be in
                self.covered_spans += 1
                if not tag.in_taxonomy:
                    self.out_of_taxonomy += 1
                    self._remember_unknown(tag, obs)

    def _remember_unknown(self, tag: Tag, obs: TextObservation) -> None:
        entry = self.unknown_values.setdefault((tag.type, normalise_value(tag.text)),
                                               {"forms": Counter(), "products": set(), "examples": []})
        entry["forms"][tag.text] += 1
        entry["products"].add(obs.product_id)
        if len(entry["examples"]) < 3 and obs.text not in entry["examples"]:
            entry["examples"].append(obs.text[:200])

    def due(self, now: float) -> bool:
        c = self.config
        return bool((c.window_events and self.texts >= c.window_events)
                    or (c.window_seconds and self.texts and now - self.opened >= c.window_seconds))

    def spans(self) -> int:
        return sum(self.type_counts.values())

    def report(self, now: float) -> dict:
        """The window's metrics against the reference, with the alerts they raise."""
        ref, c = self.reference, self.config
        spans = self.spans()
        metrics: dict = {}
        if ref.get("type_counts"):
            keys = sorted(set(ref["type_counts"]) | set(self.type_counts))
            e, a = distribution(ref["type_counts"], keys), distribution(self.type_counts, keys)
            metrics["tag_type_psi"], metrics["tag_type_js"] = round(psi(e, a), 4), round(js_divergence(e, a), 4)
        if ref.get("top_values"):
            # The reference's most frequent values (free-form types left out: model numbers are all
            # different), then one bin for the rest. Few bins: PSI over many sparse bins is biased.
            covered = self.covered_types
            top = [(k, v) for k, v in ref["top_values"].items()
                   if covered is None or k.split(":", 1)[0] in covered][:TOP_VALUE_BINS]
            keys = [k for k, _ in top] + [OTHER]
            ref_total = sum(v for t, v in ref.get("type_counts", {}).items() if covered is None or t in covered)
            e = distribution({**dict(top), OTHER: max(ref_total - sum(v for _, v in top), 0)}, keys)
            a = distribution({k: v for k, v in self.value_counts.items()
                              if covered is None or k.split(":", 1)[0] in covered}, keys)
            metrics["top_value_psi"], metrics["top_value_js"] = round(psi(e, a), 4), round(js_divergence(e, a), 4)
        metrics["out_of_taxonomy_rate"] = (round(self.out_of_taxonomy / self.covered_spans, 4)
                                           if self.covered_spans else 0.0)
        metrics["confidence"] = {"mean": round(float(np.mean(self.confidences)), 4) if self.confidences else None,
                                 **quantiles(self.confidences)}
        metrics["unknown_token_rate"] = round(self.unknown_tokens / self.tokens, 6) if self.tokens else 0.0
        metrics["no_tag_share"] = round(self.no_tag_texts / self.texts, 4) if self.texts else 0.0
        mean_length = float(np.mean(self.lengths)) if self.lengths else 0.0
        metrics["text_length_mean"] = round(mean_length, 2)
        ref_length = (ref.get("text_length") or {}).get("mean")
        metrics["text_length_shift"] = round(mean_length / ref_length - 1, 4) if ref_length and self.lengths else 0.0
        alerts = []
        if self.texts >= c.min_texts:
            for name, threshold in (("tag_type_psi", c.psi_threshold), ("top_value_psi", c.psi_threshold),
                                    ("tag_type_js", c.js_threshold), ("top_value_js", c.js_threshold),
                                    ("out_of_taxonomy_rate", c.oot_threshold)):
                if name in metrics and metrics[name] > threshold:
                    alerts.append(name)
        return {
            "window": {"start": iso_time(self.opened), "end": iso_time(now), "seconds": round(now - self.opened, 3),
                       "products": len(self.products), "texts": self.texts, "spans": spans},
            "metrics": metrics,
            "reference": {"texts": ref.get("texts"), "unknown_token_rate": ref.get("unknown_token_rate"),
                          "no_tag_share": ref.get("no_tag_share"), "confidence_mean": (ref.get("confidence") or {}).get("mean"),
                          "text_length_mean": ref_length},
            "thresholds": {"psi": c.psi_threshold, "js": c.js_threshold, "out_of_taxonomy_rate": c.oot_threshold,
                           "min_texts": c.min_texts},
            "alerts": alerts,
            "alert": bool(alerts),
        }

    def candidates(self) -> list[dict]:
        """Out-of-taxonomy values frequent enough in this window to propose as new nodes."""
        c = self.config
        out = []
        for (tag_type, key), entry in self.unknown_values.items():
            count = sum(entry["forms"].values())
            share = len(entry["products"]) / max(len(self.products), 1)
            if count >= c.candidate_min_count and share >= c.candidate_min_share:
                out.append({"type": tag_type, "key": key, "text": entry["forms"].most_common(1)[0][0],
                            "count": count, "products": len(entry["products"]), "share": round(share, 4),
                            "examples": entry["examples"]})
        return sorted(out, key=lambda x: (-x["count"], x["type"], x["key"]))

    def close(self, now: float) -> tuple[dict, list[dict], "DriftWindow"]:
        """This window's report and candidates, and the next (empty) window."""
        return (self.report(now), self.candidates(),
                DriftWindow(self.config, self.reference, opened=now, covered_types=self.covered_types))
