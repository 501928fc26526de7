"""The taxonomy: validation that says where, normalisation of spans to nodes, patches."""

from __future__ import annotations

import copy

import pytest

from stream.service.candidates import PATCH_FORMAT, apply, suggest
from stream.tagging.taxonomy import Taxonomy, TaxonomyError, within_one_edit
from tests.conftest import DEMO_TAXONOMY

SMALL = {
    "format_version": 1, "name": "shop", "version": "3",
    "types": [{"name": "category"}, {"name": "brand"}],
    "nodes": [
        {"id": "c.apparel", "type": "category", "zh": "服装", "en": "apparel", "synonyms": [], "parent": None},
        {"id": "c.women", "type": "category", "zh": "女装", "en": "womenswear", "synonyms": [], "parent": "c.apparel"},
        {"id": "c.dress", "type": "category", "zh": "连衣裙", "en": "dress", "synonyms": ["dresses", "裙子"],
         "parent": "c.women"},
        {"id": "b.nike", "type": "brand", "zh": "耐克", "en": "Nike", "synonyms": [], "parent": None},
        {"id": "b.hk", "type": "brand", "zh": "凯蒂猫", "en": "Hello Kitty", "synonyms": [], "parent": None},
        {"id": "b.samsung", "type": "brand", "zh": "三星", "en": "Samsung", "synonyms": [], "parent": None},
        {"id": "b.samsonite", "type": "brand", "zh": "新秀丽", "en": "Samsonite", "synonyms": [], "parent": None},
    ],
}


def _broken(change) -> str:
    data = copy.deepcopy(SMALL)
    change(data)
    with pytest.raises(TaxonomyError) as err:
        Taxonomy.from_dict(data, source="t.json")
    return str(err.value)


def test_the_demo_taxonomy_is_valid():
    taxonomy = Taxonomy.load(DEMO_TAXONOMY)
    assert len(taxonomy.nodes) == 381 and "brand" in taxonomy.types


def test_validation_says_what_is_wrong_and_where():
    assert "nodes[7]: duplicate id 'c.dress' (first at nodes[2])" in _broken(
        lambda d: d["nodes"].append({**d["nodes"][2], "zh": "长裙", "en": "long dress", "synonyms": []}))
    message = _broken(lambda d: d["nodes"][1]["synonyms"].append("Dresses"))  # case-folded, claimed twice
    assert "nodes[2] 'c.dress': 'dresses' is already a name or synonym of 'c.women'" in message
    assert "unknown parent 'c.nowhere'" in _broken(lambda d: d["nodes"][2].update(parent="c.nowhere"))
    message = _broken(lambda d: d["nodes"][0].update(parent="c.dress"))
    assert "parent cycle c.apparel > c.dress > c.women > c.apparel" in message
    assert "unknown type 'colour'" in _broken(lambda d: d["nodes"][0].update(type="colour"))
    assert "format_version 9" in _broken(lambda d: d.update(format_version=9))
    assert _broken(lambda d: d["nodes"][3].update(zh="", en="")).startswith("t.json: nodes[3] 'b.nike': needs")


def test_a_synonym_may_repeat_across_types():
    data = copy.deepcopy(SMALL)
    data["nodes"].append({"id": "b.dress", "type": "brand", "zh": "", "en": "Dress", "synonyms": [], "parent": None})
    assert Taxonomy.from_dict(data).lookup("brand", "dress").id == "b.dress"


def test_spans_are_normalised_to_nodes():
    t = Taxonomy.from_dict(SMALL)
    assert t.lookup("category", "ＤＲＥＳＳＥＳ").id == "c.dress"          # full-width, case
    assert t.lookup("category", "裙子").id == "c.dress"                    # synonym
    assert t.path(t.lookup("category", "连衣裙")) == ["c.apparel", "c.women", "c.dress"]
    assert t.lookup("brand", "NIKE").id == "b.nike"
    assert t.lookup("brand", "hello-kitty").id == "b.hk"                   # spaces and punctuation
    assert t.lookup("brand", "HelloKity").id == "b.hk"                     # one edit, long enough
    assert t.lookup("brand", "Samsnug").id == "b.samsung"                  # swapped neighbours
    assert t.lookup("brand", "Nkie") is None                               # too short to guess
    assert t.lookup("brand", "Samsonit").id == "b.samsonite"
    assert t.lookup("category", "dreses") is None                          # fuzzy only for brands
    assert t.lookup("brand", "三星手机") is None                            # never fuzzy outside Latin script


def test_fuzzy_matching_refuses_to_choose_between_two_brands():
    data = copy.deepcopy(SMALL)
    data["nodes"].append({"id": "b.samsunk", "type": "brand", "zh": "", "en": "Samsunk", "synonyms": [],
                          "parent": None})
    t = Taxonomy.from_dict(data)
    assert t.lookup("brand", "Samsunh") is None   # one edit from both Samsung and Samsunk


def test_within_one_edit():
    assert within_one_edit("abcdef", "abcdef")
    assert within_one_edit("abcdef", "abxdef") and within_one_edit("abcdef", "abdcef")
    assert within_one_edit("abcdef", "abcde") and within_one_edit("abcdef", "abcdefg")
    assert not within_one_edit("abcdef", "badcfe") and not within_one_edit("abcdef", "abc")


def test_stats_and_diff():
    old = Taxonomy.from_dict(SMALL)
    data = copy.deepcopy(SMALL)
    data["version"] = "4"
    data["nodes"][3]["synonyms"] = ["NIKE官方"]
    del data["nodes"][4]
    data["nodes"].append({"id": "b.anta", "type": "brand", "zh": "安踏", "en": "ANTA", "synonyms": [], "parent": None})
    diff = old.diff(Taxonomy.from_dict(data))
    assert diff["added"] == ["b.anta"] and diff["removed"] == ["b.hk"]
    assert diff["changed"] == {"b.nike": {"synonyms": [[], ["NIKE官方"]]}}
    stats = old.stats()
    assert stats["types"]["category"] == {"nodes": 3, "synonyms": 2, "roots": 1, "max_depth": 3}


def test_suggest_merges_windows_and_apply_makes_a_new_valid_taxonomy():
    t = Taxonomy.from_dict(SMALL)
    records = [
        {"type": "brand", "key": "zorvex", "text": "Zorvex", "count": 6, "products": 6, "examples": ["Zorvex 连衣裙"]},
        {"type": "brand", "key": "zorvex", "text": "ZORVEX", "count": 4, "products": 4, "examples": ["ZORVEX dress"]},
        {"type": "brand", "key": "nike", "text": "Nike", "count": 9, "products": 9, "examples": []},  # known now
        {"type": "category", "key": "旗袍", "text": "旗袍", "count": 2, "products": 2, "examples": ["红色旗袍"]},
    ]
    patch = suggest(records, t)
    assert patch["format"] == PATCH_FORMAT
    assert [(e["id"], e["en"], e["zh"], e["evidence"]["count"], e["evidence"]["windows"]) for e in patch["add"]] == [
        ("brand.zorvex", "Zorvex", "", 10, 2), ("category.旗袍", "", "旗袍", 2, 1)]
    assert [e["id"] for e in suggest(records, t, min_count=5)["add"]] == ["brand.zorvex"]

    patch["add"][1]["accept"] = False
    patch["add"].append({"accept": True, "synonym_of": "b.nike", "en": "Niké"})
    new, done = apply(t, patch)
    assert done == {"added": ["brand.zorvex"], "synonyms": ["b.nike += Niké"], "skipped": ["category.旗袍"]}
    assert new.version == "4" and new.lookup("brand", "zorvex").id == "brand.zorvex"
    assert new.lookup("brand", "NIKÉ").id == "b.nike" and Taxonomy.from_dict(new.to_dict()).nodes == new.nodes


def test_apply_refuses_what_would_break_the_taxonomy():
    t = Taxonomy.from_dict(SMALL)
    patch = {"format": PATCH_FORMAT, "add": [{"id": "b.nike2", "type": "brand", "en": "nike"}]}
    with pytest.raises(TaxonomyError, match="'nike' is already a name or synonym of 'b.nike'"):
        apply(t, patch)
    with pytest.raises(TaxonomyError, match="not a taxonomy patch"):
        apply(t, {"add": []})
    with pytest.raises(TaxonomyError, match="synonym_of 'b.adidas' is not a node"):
        apply(t, {"format": PATCH_FORMAT, "add": [{"synonym_of": "b.adidas", "en": "Adidas"}]})
