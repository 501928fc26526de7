"""Tag statistics of a set of tagged texts: the bundle's drift reference, and each drift window."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from stream.tagging.spans import TaggedSpan
from stream.tagging.text import normalise_value
from stream.tagging.tokenization import Units

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
TOP_VALUES = 200


def quantiles(values: Sequence[float]) -> dict[str, float]:
    if not len(values):
        return {}
    qs = np.quantile(np.asarray(values, dtype=np.float64), QUANTILES)
    return {f"p{int(q * 100):02d}": round(float(v), 4) for q, v in zip(QUANTILES, qs)}


def profile(units: Sequence[Units], tagged: Sequence[Sequence[TaggedSpan]]) -> dict:
    """Distributions a drift check compares: tag types, top tag values, span confidence,
    text length, unknown-token rate and the share of texts with no tag."""
    types = Counter(s.type for spans in tagged for s in spans)
    values = Counter(f"{s.type}:{normalise_value(s.text)}" for spans in tagged for s in spans)
    confidences = [s.confidence for spans in tagged for s in spans]
    lengths = [len(u.text) for u in units]
    tokens = sum(len(u.token_ids) for u in units)
    hist, _ = np.histogram(confidences, bins=10, range=(0.0, 1.0)) if confidences else (np.zeros(10), None)
    return {
        "texts": len(units),
        "spans": len(confidences),
        "type_counts": dict(sorted(types.items())),
        "top_values": dict(values.most_common(TOP_VALUES)),
        "confidence": {"mean": round(float(np.mean(confidences)), 4) if confidences else None,
                       **quantiles(confidences), "histogram": [int(h) for h in hist]},
        "text_length": {"mean": round(float(np.mean(lengths)), 2) if lengths else None, **quantiles(lengths)},
        "unknown_token_rate": round(sum(u.unknown_tokens for u in units) / tokens, 6) if tokens else 0.0,
        "no_tag_share": round(sum(1 for spans in tagged if not spans) / len(units), 6) if units else 0.0,
    }
