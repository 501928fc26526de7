"""`review select`: scores, reasons, de-duplication, the category quota; CRF token entropy."""

from __future__ import annotations

import numpy as np
import pytest

from stream.service.review import Candidate, drift_keys_from, latest_products, score, select, tags_from_enriched
from stream.tagging.decode import score_units, token_entropy
from stream.tagging.spans import Tag


def tag(text: str, confidence: float, in_taxonomy: bool = True, kind: str = "brand", start: int = 0) -> Tag:
    return Tag(text.lower(), kind, text, "title", start, start + len(text), confidence, in_taxonomy)


def cand(pid: str, text: str, tags=(), entropy=None, category: str = "unknown") -> Candidate:
    return Candidate(pid, text, tuple(tags), version=1, category=category, entropy=entropy)


def test_token_entropy_is_normalised():
    marg = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    assert token_entropy(marg) == pytest.approx([0.0, 1.0, 0.5])


def test_score_adds_its_parts_and_explains_the_largest_first():
    sure = score(cand("a", "Nike shoes", [tag("Nike", 0.99)], entropy=(0.01, 0.02)))
    unsure = score(cand("b", "Zorx shoes", [tag("Zorx", 0.4, in_taxonomy=False)], entropy=(0.5, 0.3)))
    assert unsure.score > sure.score
    assert unsure.parts == pytest.approx({"entropy": 0.8, "confidence": 0.6, "out_of_taxonomy": 0.5})
    assert unsure.score == pytest.approx(1.9)
    assert unsure.reasons[0].startswith("token entropy 0.80")
    assert any("outside the taxonomy: brand 'Zorx'" in r for r in unsure.reasons)
    drifting = score(cand("c", "Zorx shoes", [tag("Zorx", 0.4, in_taxonomy=False)]), frozenset({("brand", "zorx")}))
    assert drifting.parts["drift"] == 1.0 and any(r.startswith("new-tag candidate") for r in drifting.reasons)
    assert score(cand("d", "plain")).reasons == ("no tags found",)


def test_select_skips_duplicate_titles_and_excluded_products():
    pool = [cand("a", "Red Shoes", entropy=(0.9,)), cand("b", "red  shoes", entropy=(0.8,)),
            cand("c", "blue hat", entropy=(0.5,)), cand("d", "green hat", entropy=(0.4,))]
    pool.append(cand("m", "ㄠ\ufffd狈⒕矸", entropy=(1.0, 1.0)))
    picks, report = select(pool, 2, exclude={"c"})
    assert [p.candidate.product_id for p in picks] == ["a", "d"]
    assert report["duplicates"] == 1 and report["excluded"] == 1 and report["unreadable"] == 1
    assert report["picked"] == 2


def test_one_noisy_category_cannot_take_the_whole_budget():
    noisy = [cand(f"n{i}", f"noisy {i}", entropy=(0.9,), category="cables") for i in range(10)]
    calm = [cand(f"c{i}", f"calm {i}", entropy=(0.1,), category=f"cat{i % 3}") for i in range(6)]
    picks, report = select(noisy + calm, 8, max_category_share=0.25)
    per = report["per_category"]
    assert per["cables"] == 2 and sum(per.values()) == 8 and report["quota_relaxed"] == 0
    # Only the noisy category left: the quota gives way rather than leave the budget unspent.
    picks, report = select(noisy + calm[:1], 8, max_category_share=0.25)
    assert len(picks) == 8 and report["quota"] == 4 and report["quota_relaxed"] == 3
    assert "over its quota" in picks[-1].reasons[-1]


def test_picks_carry_the_pre_annotations():
    pick = score(cand("a", "Nike shoes", [tag("Nike", 0.9)], entropy=(0.1, 0.1)))
    out = pick.to_json()
    assert out["predictions"] == [{"start": 0, "end": 4, "label": "brand", "text": "Nike", "confidence": 0.9}]
    assert out["text"] == "Nike shoes" and out["id"] == "a" and out["reasons"]


def test_products_enriched_records_and_candidates_from_dumps():
    dump = [{"partition": 0, "offset": 0, "key": "p1", "value": {"product_id": "p1", "version": 1, "title": "old"}},
            {"partition": 0, "offset": 1, "key": "p1", "value": {"product_id": "p1", "version": 2, "title": "new"}},
            {"product_id": "p2", "op": "delete", "version": 3},
            {"id": "t9", "text": "a labelled text"}]
    products = latest_products(dump)
    assert [(p["product_id"], p["title"]) for p in products] == [("p1", "new"), ("t9", "a labelled text")]
    enriched = [{"value": {"product_id": "p1", "version": 2, "tags": [
        {"tag": "nike", "type": "brand", "path": [], "text": "Nike", "field": "title", "start": 0, "end": 4,
         "confidence": 0.7, "in_taxonomy": False},
        {"tag": "x", "type": "brand", "path": [], "text": "x", "field": "description", "start": 0, "end": 1,
         "confidence": 0.7, "in_taxonomy": False}]}}]
    tags = tags_from_enriched(enriched)
    assert [t.text for t in tags[("p1", 2)]] == ["Nike"]
    assert drift_keys_from([{"type": "brand", "key": "nike", "text": "Nike", "count": 3}]) == {("brand", "nike")}


def test_score_units_entropy_follows_the_window_that_owns_each_unit(wordpiece):
    from stream.tagging.tokenization import TextEncoder

    encoder = TextEncoder(wordpiece, max_length=8, stride=2)
    text = "耐克 Nike Air Max 270 男士跑步鞋 黑色 42码"
    units = encoder.units([text])
    labels = ["O", "B-x", "E-x"]

    def uniform(batch):
        rows, width = batch.unit_mask.shape
        marg = np.where(batch.unit_mask[:, :, None], 1 / 3, 0.0) * np.ones((rows, width, 3))
        return [[0] * int(m.sum()) for m in batch.unit_mask], marg

    scored = score_units(encoder, units, uniform, labels, entropy=True)
    assert score_units(encoder, units, uniform, labels)[0].entropy is None   # serving does not pay for it
    assert len(encoder.windows(units[0])) > 1
    assert scored[0].entropy.shape == (len(units[0]),)
    assert scored[0].entropy == pytest.approx(np.ones(len(units[0])))
    assert scored[0].spans == []


def test_redundancy_spreads_the_budget_over_different_doubts():
    same = [cand(f"s{i}", f"Zorx thing {i}", [tag("Zorx", 0.3)], entropy=(0.9,)) for i in range(4)]
    other = [cand("o1", "Blip widget", [tag("Blip", 0.5)], entropy=(0.6,)),
             cand("o2", "Quux gizmo", [tag("Quux", 0.5)], entropy=(0.5,))]
    plain, _ = select(same + other, 3)
    assert [p.candidate.product_id for p in plain] == ["s0", "s1", "s2"]
    picks, report = select(same + other, 3, redundancy=0.5)
    assert [p.candidate.product_id for p in picks] == ["s0", "o1", "o2"]
    assert report["redundancy_discounted"] == 0
    picks, report = select(same + other, 4, redundancy=0.5)
    assert picks[-1].candidate.product_id == "s1" and "shares brand 'zorx' with 1 earlier pick" in picks[-1].reasons[-1]
    with pytest.raises(ValueError, match="redundancy"):
        select(same, 1, redundancy=0)


def test_density_ranks_outliers_below_typical_titles():
    from stream.service.review import typicality

    typical = [cand(f"t{i}", f"红色 跑步鞋 男款 {i}", entropy=(0.5, 0.5)) for i in range(5)]
    outlier = cand("x", "ㄠ狈⒕矸⒛信 ⒜⒝", entropy=(0.6, 0.6))
    values = typicality([c.text for c in typical + [outlier]])
    assert all(0 <= v <= 1 for v in values) and values[-1] < min(values[:-1])
    assert select(typical + [outlier], 1)[0][0].candidate.product_id == "x"
    picks, _ = select(typical + [outlier], 1, density=1.0)
    assert picks[0].candidate.product_id != "x" and "typicality" in picks[0].reasons[-1]
