"""model.synth and the demo taxonomy: determinism, span validity, realism knobs, taxonomy constraints."""
import json
import re
import unicodedata

import pytest

from model.catalogue import PROMO_EN, PROMO_ZH, is_cjk, is_latin_word_char, load_taxonomy_json
from model.synth import _BRAND_CHARS, DEMO_TAXONOMY, generate, main_stats

MODEL_RE = re.compile(r"[A-Z]{1,3}-?\d{2,4}[A-Z]?( (PRO|MAX|PLUS|ULTRA|LITE|SE))?")


def norm(s: str) -> str:
    return unicodedata.normalize("NFKC", s).casefold()


@pytest.fixture(scope="module")
def taxonomy() -> dict:
    return load_taxonomy_json(DEMO_TAXONOMY)


@pytest.fixture(scope="module")
def forms(taxonomy) -> dict[str, str]:
    """Normalised surface form -> node type."""
    out = {}
    for node in taxonomy["nodes"]:
        for f in (node["zh"], node["en"], *node["synonyms"]):
            out[norm(f)] = node["type"]
    return out


@pytest.fixture(scope="module")
def mixed(taxonomy) -> list[dict]:
    return generate(taxonomy, 500, seed=7)


@pytest.fixture(scope="module")
def products(taxonomy) -> list[dict]:
    return generate(taxonomy, 300, seed=11, products=True)


LONG_TAIL_RE = re.compile(f"[a-z]+|[{_BRAND_CHARS}]+")


def check_spans(text: str, spans: list[dict], forms: dict[str, str]) -> None:
    prev_end = 0
    for sp in spans:
        s, e, label = sp["start"], sp["end"], sp["label"]
        assert prev_end <= s < e <= len(text), (text, spans)
        prev_end = e
        surface = text[s:e]
        assert surface == surface.strip() and surface, (text, sp)
        if label == "model":
            assert MODEL_RE.fullmatch(norm(surface).upper()), surface
        elif label == "brand" and norm(surface) not in forms:  # the invented long tail
            assert LONG_TAIL_RE.fullmatch(norm(surface)), (surface, text)
        else:
            assert forms.get(norm(surface)) == label, (surface, label, text)
        # A whitespace/punctuation tokenizer must see the span as whole words.
        if is_latin_word_char(text[s]):
            assert s == 0 or not is_latin_word_char(text[s - 1]), (text, surface)
        if is_latin_word_char(text[e - 1]):
            assert e == len(text) or not is_latin_word_char(text[e]), (text, surface)


def gaps(text: str, spans: list[dict]) -> list[str]:
    out, pos = [], 0
    for sp in spans:
        out.append(text[pos:sp["start"]])
        pos = sp["end"]
    out.append(text[pos:])
    return out


# -- determinism -------------------------------------------------------------------------------

@pytest.mark.parametrize("products_flag", [False, True])
def test_same_seed_same_output(taxonomy, products_flag):
    a = generate(taxonomy, 200, seed=3, products=products_flag)
    b = generate(taxonomy, 200, seed=3, products=products_flag)
    assert json.dumps(a, ensure_ascii=False) == json.dumps(b, ensure_ascii=False)


def test_different_seed_different_output(taxonomy):
    assert generate(taxonomy, 50, seed=1) != generate(taxonomy, 50, seed=2)


def test_node_order_does_not_matter(taxonomy):
    shuffled = dict(taxonomy, nodes=list(reversed(taxonomy["nodes"])))
    assert generate(shuffled, 50, seed=5) == generate(taxonomy, 50, seed=5)


def test_bad_lang_rejected(taxonomy):
    with pytest.raises(ValueError, match="lang"):
        generate(taxonomy, 1, lang="fr")


# -- records -----------------------------------------------------------------------------------

def test_record_shape_and_ids(mixed):
    assert len(mixed) == 500
    assert [r["id"] for r in mixed[:2]] == ["synth-000001", "synth-000002"]
    for r in mixed:
        assert set(r) == {"id", "text", "spans"}
        assert all(set(sp) == {"start", "end", "label"} for sp in r["spans"])


def test_spans_valid_and_in_taxonomy(mixed, forms):
    for r in mixed:
        check_spans(r["text"], r["spans"], forms)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_single_language_titles(taxonomy, forms, lang):
    recs = generate(taxonomy, 300, seed=2, lang=lang)
    in_range = 0
    for r in recs:
        check_spans(r["text"], r["spans"], forms)
        n = len(r["text"]) if lang == "zh" else len(r["text"].split())
        in_range += (15 <= n <= 45) if lang == "zh" else (6 <= n <= 16)
        if lang == "en":
            assert not any(is_cjk(c) for c in r["text"]), r["text"]
    assert in_range >= 0.85 * len(recs)
    assert sum(3 <= len(r["spans"]) <= 8 for r in recs) >= 0.95 * len(recs)


def test_unlabeled_text_holds_no_entity(mixed, products, forms):
    """Promo words and template prose must never contain a taxonomy name left unlabeled."""
    latin = [f for f in forms if not any(is_cjk(c) for c in f)]
    cjk = [f for f in forms if any(is_cjk(c) for c in f) and len(f) >= 2]
    texts = [(r["text"], r["spans"]) for r in mixed]
    for p in products:
        for fld in ("title", "description"):
            texts.append((p[fld], [s for s in p["spans"] if s["field"] == fld]))
    for text, spans in texts:
        for gap in gaps(text, spans):
            g = norm(gap)
            words = set(re.findall(r"[0-9a-z]+", g))
            for f in latin:
                if re.fullmatch(r"[0-9a-z]+", f) and f in words:
                    raise AssertionError(f"{f!r} unlabeled in {text!r}")
            for f in cjk:
                assert f not in g, (f, text)


def test_many_labels_appear(mixed):
    stats = main_stats(mixed)
    assert len(stats) >= 8, stats
    assert stats["brand"] > 200 and stats["category"] > 300


def test_realism_noise_present(mixed):
    texts = [r["text"] for r in mixed]
    fullwidth = [t for t in texts if any(0xFF01 <= ord(c) <= 0xFF5E for c in t)]
    promo = [t for t in texts if any(w.casefold() in t.casefold() for w in PROMO_ZH + PROMO_EN)]
    mixed_script = [t for t in texts if any(is_cjk(c) for c in t)
                    and any(c.isascii() and c.isalpha() for c in t)]
    assert len(fullwidth) >= 10
    assert len(promo) >= 200
    assert len(mixed_script) >= 50
    assert any("【" in t for t in texts)
    assert any(t.isupper() for t in texts)  # all-caps English listings


def test_products_shape(products, forms):
    locales = {p["locale"] for p in products}
    assert locales == {"zh-CN", "en-US"}
    for p in products:
        assert set(p) == {"id", "title", "description", "locale", "spans"}
        assert 40 <= len(p["description"]) <= 200, p["description"]
        for fld in ("title", "description"):
            spans = [s for s in p["spans"] if s["field"] == fld]
            check_spans(p[fld], spans, forms)
    with_desc_entities = [p for p in products if any(s["field"] == "description" for s in p["spans"])]
    assert len(with_desc_entities) >= 0.8 * len(products)


def test_description_shares_and_adds_attributes(products):
    shares = adds = 0
    for p in products:
        title = {norm(p["title"][s["start"]:s["end"]]) for s in p["spans"] if s["field"] == "title"}
        desc = {norm(p["description"][s["start"]:s["end"]]) for s in p["spans"]
                if s["field"] == "description"}
        shares += bool(title & desc)
        adds += bool(desc - title)
    assert shares >= 0.3 * len(products) and adds >= 0.5 * len(products)


# -- taxonomy file -----------------------------------------------------------------------------

def test_taxonomy_header_and_types(taxonomy):
    assert taxonomy["format_version"] == 1
    assert taxonomy["name"] == "tagstream-demo"
    names = [t["name"] for t in taxonomy["types"]]
    assert len(names) >= 9 and len(set(names)) == len(names)
    assert {"brand", "category", "color", "material", "style", "size", "audience", "season",
            "pattern", "model"} <= set(names)
    assert all(t["zh"] and t["en"] for t in taxonomy["types"])


def test_taxonomy_nodes(taxonomy):
    nodes = taxonomy["nodes"]
    assert len(nodes) >= 320
    ids = [n["id"] for n in nodes]
    assert len(set(ids)) == len(ids)
    by_id = {n["id"]: n for n in nodes}
    for n in nodes:
        assert re.fullmatch(r"[a-z0-9]+(\.[a-z0-9]+)+", n["id"]), n["id"]
        assert n["id"].startswith(n["type"] + ".")
        assert n["zh"] and n["en"] and n["en"].isascii()
        assert 0 <= len(n["synonyms"]) <= 4
        if n["parent"] is not None:
            assert n["parent"] in by_id and by_id[n["parent"]]["type"] == n["type"]
        elif n["type"] != "category":
            assert n["parent"] is None
    assert not any(n["type"] == "model" for n in nodes)


def test_category_hierarchy_acyclic_and_three_deep(taxonomy):
    by_id = {n["id"]: n for n in taxonomy["nodes"]}
    max_depth = 0
    for n in taxonomy["nodes"]:
        seen, cur, depth = set(), n, 1
        while cur["parent"] is not None:
            assert cur["id"] not in seen, f"cycle through {cur['id']}"
            seen.add(cur["id"])
            cur, depth = by_id[cur["parent"]], depth + 1
        max_depth = max(max_depth, depth)
    assert max_depth == 3


def test_no_surface_form_claimed_twice(taxonomy):
    owner: dict[str, str] = {}
    for n in taxonomy["nodes"]:
        for f in {norm(x) for x in (n["zh"], n["en"], *n["synonyms"])}:
            assert owner.setdefault(f, n["id"]) == n["id"], f"{f!r}: {owner[f]} and {n['id']}"


def test_node_counts_per_type(taxonomy):
    counts: dict[str, int] = {}
    for n in taxonomy["nodes"]:
        counts[n["type"]] = counts.get(n["type"], 0) + 1
    assert counts["brand"] >= 60 and counts["category"] >= 90 and counts["color"] >= 30
    assert all(counts[t] >= 8 for t in ("material", "style", "size", "audience", "season", "pattern"))


def test_file_is_sorted_data():
    raw = DEMO_TAXONOMY.read_text(encoding="utf-8")
    doc = json.loads(raw)
    assert raw == json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    assert [n["id"] for n in doc["nodes"]] == sorted(n["id"] for n in doc["nodes"])


def test_load_rejects_bad_files(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"types": [{"name": "brand"}], "nodes": [{"id": "x.a", "type": "color"}]}))
    with pytest.raises(ValueError, match=r"t\.json: .*unknown type"):
        load_taxonomy_json(bad)
    bad.write_text(json.dumps({"types": [], "nodes": {}}))
    with pytest.raises(ValueError, match="nodes"):
        load_taxonomy_json(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="JSON"):
        load_taxonomy_json(bad)


def test_a_share_of_brand_mentions_names_brands_the_taxonomy_does_not_list(mixed, forms):
    brands = [norm(r["text"][s["start"]:s["end"]]) for r in mixed for s in r["spans"] if s["label"] == "brand"]
    unlisted = [b for b in brands if b not in forms]
    assert 0.08 <= len(unlisted) / len(brands) <= 0.25
    assert len(set(unlisted)) > 0.5 * len(unlisted)   # a long tail, not a few names
