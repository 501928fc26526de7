"""Drift windows: divergences, alerts, window closing and new-tag candidates, without a broker."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from stream.tagging.spans import Tag
from stream.service.drift import DriftConfig, DriftWindow, TextObservation, distribution, js_divergence, psi

CATEGORIES = {"dress": 40, "phone": 30, "sofa": 20, "lipstick": 10}


def _observations(n: int, mix: dict[str, int], seed: int, extra_brand: str | None = None, every: int = 20):
    rng = random.Random(seed)
    names, weights = zip(*mix.items())
    out = []
    for i in range(n):
        category = rng.choices(names, weights)[0]
        model = f"X{rng.randint(1, 999)}"
        tags = [Tag(category, "category", category, "title", 0, 1, 0.9, True),
                Tag(model.casefold(), "model", model, "title", 2, 3, 0.8, False)]
        if extra_brand and i % every == 0:
            tags.append(Tag(extra_brand.casefold(), "brand", extra_brand, "title", 4, 5, 0.7, False))
        title = f"{extra_brand or ''} {category} title {i}"
        out.append(TextObservation(f"p{seed}-{i}", "title", title, 8, 1 if i % 10 == 0 else 0, tags))
    return out


def _reference(observations) -> dict:
    types = Counter(t.type for o in observations for t in o.tags)
    values = Counter(f"{t.type}:{t.text.casefold()}" for o in observations for t in o.tags)
    return {"texts": len(observations), "spans": sum(types.values()), "type_counts": dict(types),
            "top_values": dict(values.most_common(200)),
            "text_length": {"mean": float(np.mean([len(o.text) for o in observations]))},
            "unknown_token_rate": 0.0125, "no_tag_share": 0.0, "confidence": {"mean": 0.85}}


REFERENCE = _reference(_observations(2000, CATEGORIES, seed=1))
COVERED = frozenset({"category", "brand"})


def _window(**config) -> DriftWindow:
    return DriftWindow(DriftConfig(**config), REFERENCE, opened=1000.0, covered_types=COVERED)


def test_divergences_are_zero_for_equal_distributions_and_grow_with_the_shift():
    p = distribution({"a": 50, "b": 50}, ["a", "b"])
    assert psi(p, p) == pytest.approx(0.0) and js_divergence(p, p) == pytest.approx(0.0)
    q = distribution({"a": 90, "b": 10}, ["a", "b"])
    r = distribution({"a": 99, "b": 1}, ["a", "b"])
    assert 0 < psi(p, q) < psi(p, r) and 0 < js_divergence(p, q) < js_divergence(p, r) <= 1
    assert np.isfinite(psi(p, distribution({"a": 10}, ["a", "b"])))  # an empty bin stays finite


def test_a_window_like_the_reference_raises_no_alert():
    window = _window()
    window.add(_observations(500, CATEGORIES, seed=2))
    report = window.report(now=1060.0)
    assert report["alert"] is False and report["alerts"] == []
    m = report["metrics"]
    assert m["tag_type_psi"] < 0.02 and m["top_value_psi"] < 0.2
    assert m["out_of_taxonomy_rate"] == 0.0   # model numbers are free-form: never out of taxonomy
    assert m["unknown_token_rate"] == pytest.approx(50 / 4000) and m["no_tag_share"] == 0.0
    assert report["window"] == {"start": "1970-01-01T00:16:40.000Z", "end": "1970-01-01T00:17:40.000Z",
                                "seconds": 60.0, "products": 500, "texts": 500, "spans": 1000}


def test_a_shifted_category_mix_raises_the_psi_alert():
    window = _window()
    window.add(_observations(500, {"dress": 5, "phone": 5, "sofa": 10, "lipstick": 80}, seed=3))
    report = window.report(now=1060.0)
    assert report["metrics"]["top_value_psi"] > 0.2
    assert report["alert"] and "top_value_psi" in report["alerts"]


def test_a_small_window_never_alerts():
    window = _window(min_texts=50)
    window.add(_observations(20, {"lipstick": 1}, seed=4))
    assert window.report(now=1001.0)["alert"] is False


def test_windows_close_by_count_or_by_time():
    by_count = _window(window_events=100, window_seconds=0)
    by_count.add(_observations(99, CATEGORIES, seed=5))
    assert not by_count.due(now=10_000.0)
    by_count.add(_observations(1, CATEGORIES, seed=6))
    assert by_count.due(now=1000.0)
    by_time = _window(window_events=0, window_seconds=30)
    assert not by_time.due(now=2000.0)            # an empty window waits for traffic
    by_time.add(_observations(5, CATEGORIES, seed=7))
    assert not by_time.due(now=1029.0) and by_time.due(now=1030.0)
    report, candidates, following = by_time.close(now=1030.0)
    assert report["window"]["texts"] == 5 and following.texts == 0 and following.opened == 1030.0
    assert following.covered_types == COVERED


def test_a_frequent_unknown_brand_becomes_a_candidate():
    window = _window(candidate_min_count=5, candidate_min_share=0.04)
    window.add(_observations(400, CATEGORIES, seed=8, extra_brand="Velora", every=20))   # 5% of products
    window.add(_observations(100, CATEGORIES, seed=9, extra_brand="Rarebrand", every=50))  # 2 products
    candidates = window.candidates()
    assert [(c["type"], c["key"], c["text"], c["count"], c["products"]) for c in candidates] == [
        ("brand", "velora", "Velora", 20, 20)]
    assert len(candidates[0]["examples"]) == 3 and "Velora" in candidates[0]["examples"][0]
    assert window.report(now=1060.0)["metrics"]["out_of_taxonomy_rate"] == pytest.approx(22 / 522, abs=1e-4)
