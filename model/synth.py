"""Deterministic bilingual synthetic product catalogue for training and testing the tagger.

Titles carry the noise of real listings: shuffled attributes, promo words, model numbers, full-width Latin.
"""
from __future__ import annotations

import json
import random
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

LANGS = ("zh", "en", "mixed")
DEMO_TAXONOMY = Path(__file__).resolve().parent / "resources" / "demo_taxonomy.json"

# Promotional words are deliberately not entities: the tagger has to learn to skip them.
PROMO_ZH = ("包邮", "新款", "2026新款", "正品", "特价", "爆款", "限时", "限时特惠", "热卖", "官方正品", "现货", "清仓")
PROMO_EN = ("hot sale", "free shipping", "NEW", "2026", "new arrival", "limited offer", "best seller", "genuine")
MODEL_SUFFIXES = ("Pro", "Max", "Plus", "Ultra", "Lite", "SE")
SEPARATORS_ZH = (" ", " ", " ", "/", "·", "|", "-", " ")
SEPARATORS_EN = (" ", " ", " ", " ", " ", " | ", " - ", " / ", ", ")

_UPPER = "ABCDEFGHJKLMNPRSTUVWXYZ"  # no I/O: real model numbers avoid them next to digits
_DIGITS = "0123456789"


@dataclass(frozen=True)
class Surface:
    """One node's surface forms, split by script so a zh or en title can prefer its own."""
    node_id: str
    label: str
    zh: str
    en: str
    cjk: tuple[str, ...]
    latin: tuple[str, ...]


@dataclass(frozen=True)
class _Profile:
    """What a product of one top-level category plausibly says about itself."""
    brands: tuple[str, ...]
    presence: dict[str, float]
    pools: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class _Piece:
    text: str
    label: str | None = None
    glue: bool = False  # a separator of its own: join() adds nothing on either side


_CLOTHES_SIZES = ("size.xs", "size.s", "size.m", "size.l", "size.xl", "size.xxl", "size.xxxl",
                  "size.one", "size.plus")
_SHOE_SIZES = ("size.eu36", "size.eu38", "size.eu40", "size.eu42", "size.eu44")
_FABRICS = ("material.cotton", "material.polyester", "material.silk", "material.wool", "material.cashmere",
            "material.linen", "material.denim", "material.chiffon", "material.knit", "material.modal",
            "material.lyocell", "material.nylon", "material.spandex", "material.corduroy", "material.down",
            "material.fleece", "material.lace", "material.bamboo")
_FASHION_STYLES = ("style.korean", "style.japanese", "style.vintage", "style.minimalist", "style.casual",
                   "style.business", "style.sporty", "style.loose", "style.slim", "style.street",
                   "style.guochao", "style.chinese", "style.french", "style.british", "style.elegant",
                   "style.sweet", "style.versatile", "style.preppy", "style.workwear", "style.highwaist",
                   "style.straight", "style.thick", "style.light", "style.breathable")
_GADGET_COLORS = ("color.black", "color.white", "color.silver", "color.gold", "color.spacegray",
                  "color.midnight", "color.blue", "color.green", "color.purple", "color.pink",
                  "color.rosegold", "color.transparent", "color.darkgreen", "color.skyblue")
_GADGET_STYLES = ("style.wireless", "style.portable", "style.waterproof", "style.smart", "style.light",
                  "style.minimalist", "style.business", "style.capacity")

# Keyed by top-level category id; a taxonomy without these ids falls back to _GENERIC.
_PROFILES: dict[str, _Profile] = {
    "category.apparel": _Profile(
        brands=("brand.uniqlo", "brand.zara", "brand.hm", "brand.gap", "brand.cos", "brand.peacebird",
                "brand.semir", "brand.bosideng", "brand.hla", "brand.nanjiren", "brand.muji", "brand.mlb",
                "brand.nike", "brand.adidas", "brand.lining", "brand.anta"),
        presence={"color": .7, "material": .5, "style": .6, "size": .45, "audience": .5, "season": .45,
                  "pattern": .35, "model": .12},
        pools={"size": _CLOTHES_SIZES, "material": _FABRICS, "style": _FASHION_STYLES}),
    "category.footwear": _Profile(
        brands=("brand.nike", "brand.adidas", "brand.lining", "brand.anta", "brand.xtep", "brand.puma",
                "brand.newbalance", "brand.skechers", "brand.converse", "brand.vans", "brand.mlb"),
        presence={"color": .7, "material": .45, "style": .6, "size": .5, "audience": .6, "season": .4,
                  "pattern": .2, "model": .35},
        pools={"size": _SHOE_SIZES,
               "material": ("material.leather", "material.pu", "material.canvas", "material.mesh",
                            "material.knit", "material.fleece"),
               "style": ("style.casual", "style.sporty", "style.business", "style.breathable",
                         "style.waterproof", "style.vintage", "style.korean", "style.minimalist",
                         "style.street", "style.light", "style.thick", "style.versatile", "style.british"),
               "pattern": ("pattern.solid", "pattern.colorblock", "pattern.letter", "pattern.camo",
                           "pattern.leopard", "pattern.snake")}),
    "category.bags": _Profile(
        brands=("brand.samsonite", "brand.mlb", "brand.zara", "brand.nike", "brand.adidas",
                "brand.northface", "brand.decathlon", "brand.muji", "brand.cos"),
        presence={"color": .65, "material": .55, "style": .65, "size": .2, "audience": .5, "season": .15,
                  "pattern": .3, "model": .15},
        pools={"size": ("size.s", "size.m", "size.l"),
               "material": ("material.leather", "material.pu", "material.canvas", "material.nylon",
                            "material.polyester"),
               "style": ("style.korean", "style.vintage", "style.minimalist", "style.casual",
                         "style.business", "style.capacity", "style.waterproof", "style.luxury",
                         "style.portable", "style.light", "style.french", "style.preppy"),
               "pattern": ("pattern.solid", "pattern.plaid", "pattern.letter", "pattern.colorblock",
                           "pattern.embroidery", "pattern.snake", "pattern.leopard"),
               "audience": ("audience.men", "audience.women", "audience.students", "audience.office",
                            "audience.unisex", "audience.couples")}),
    "category.digital": _Profile(
        brands=("brand.huawei", "brand.xiaomi", "brand.apple", "brand.samsung", "brand.honor",
                "brand.lenovo", "brand.dell", "brand.sony", "brand.canon", "brand.nikon", "brand.edifier",
                "brand.logitech", "brand.dji", "brand.oneplus", "brand.anker", "brand.oppo", "brand.vivo",
                "brand.realme", "brand.iqoo"),
        presence={"color": .65, "material": .25, "style": .55, "size": .45, "audience": .25,
                  "season": .03, "pattern": .08, "model": .7},
        pools={"size": ("size.gb128", "size.gb256", "size.gb512", "size.tb1"),
               "material": ("material.aluminum", "material.glass", "material.silicone", "material.plastic",
                            "material.titanium", "material.carbon", "material.leather"),
               "style": _GADGET_STYLES, "color": _GADGET_COLORS,
               "audience": ("audience.students", "audience.office", "audience.kids", "audience.seniors",
                            "audience.men", "audience.women"),
               "pattern": ("pattern.cartoon", "pattern.gradient", "pattern.solid")}),
    "category.home": _Profile(
        brands=("brand.ikea", "brand.muji", "brand.nanjiren", "brand.lock", "brand.thermos",
                "brand.supor", "brand.xiaomi"),
        presence={"color": .55, "material": .6, "style": .55, "size": .15, "audience": .3, "season": .3,
                  "pattern": .35, "model": .1},
        pools={"size": ("size.ml500", "size.l1"),
               "material": ("material.cotton", "material.linen", "material.silk", "material.bamboo",
                            "material.latex", "material.ceramic", "material.glass", "material.steel",
                            "material.wood", "material.plastic", "material.silicone", "material.polyester",
                            "material.fleece", "material.down"),
               "style": ("style.nordic", "style.minimalist", "style.japanese", "style.chinese",
                         "style.luxury", "style.vintage", "style.capacity", "style.portable",
                         "style.thick", "style.french"),
               "audience": ("audience.kids", "audience.students", "audience.couples", "audience.seniors",
                            "audience.baby", "audience.office"),
               "pattern": ("pattern.solid", "pattern.plaid", "pattern.stripe", "pattern.floral",
                           "pattern.cartoon", "pattern.geometric", "pattern.inkwash", "pattern.print",
                           "pattern.jacquard")}),
    "category.beauty": _Profile(
        brands=("brand.loreal", "brand.lancome", "brand.esteelauder", "brand.shiseido",
                "brand.perfectdiary", "brand.florasis", "brand.pechoin", "brand.muji"),
        presence={"color": .4, "material": 0.0, "style": .3, "size": .35, "audience": .5, "season": .3,
                  "pattern": 0.0, "model": .15},
        pools={"size": ("size.ml500",),
               "style": ("style.portable", "style.waterproof", "style.light", "style.french",
                         "style.chinese", "style.luxury"),
               "color": ("color.red", "color.pink", "color.coral", "color.burgundy", "color.orange",
                         "color.nude", "color.caramel", "color.champagne", "color.brown"),
               "audience": ("audience.women", "audience.men", "audience.students", "audience.maternity",
                            "audience.teens", "audience.unisex")}),
    "category.sports": _Profile(
        brands=("brand.decathlon", "brand.northface", "brand.columbia", "brand.nike", "brand.adidas",
                "brand.lining", "brand.anta", "brand.xtep", "brand.puma", "brand.xiaomi"),
        presence={"color": .6, "material": .45, "style": .65, "size": .35, "audience": .5, "season": .4,
                  "pattern": .2, "model": .25},
        pools={"size": _CLOTHES_SIZES,
               "material": ("material.nylon", "material.polyester", "material.spandex", "material.aluminum",
                            "material.carbon", "material.steel", "material.fleece", "material.down",
                            "material.latex"),
               "style": ("style.breathable", "style.waterproof", "style.light", "style.portable",
                         "style.sporty", "style.thick", "style.capacity", "style.casual"),
               "pattern": ("pattern.camo", "pattern.solid", "pattern.colorblock", "pattern.stripe",
                           "pattern.letter", "pattern.gradient")}),
    "category.food": _Profile(
        brands=("brand.threesquirrels", "brand.bestore", "brand.nongfu", "brand.yili", "brand.nestle",
                "brand.starbucks"),
        presence={"color": 0.0, "material": 0.0, "style": .25, "size": .6, "audience": .45, "season": .15,
                  "pattern": 0.0, "model": 0.0},
        pools={"size": ("size.ml500", "size.l1"),
               "style": ("style.portable", "style.capacity", "style.chinese"),
               "audience": ("audience.kids", "audience.seniors", "audience.students", "audience.maternity",
                            "audience.office", "audience.baby")}),
    "category.baby": _Profile(
        brands=("brand.pampers", "brand.goodbaby", "brand.lego", "brand.nanjiren"),
        presence={"color": .45, "material": .4, "style": .35, "size": .4, "audience": .6, "season": .3,
                  "pattern": .35, "model": .15},
        pools={"size": ("size.s", "size.m", "size.l", "size.xl", "size.xxl", "size.one"),
               "material": ("material.cotton", "material.silicone", "material.bamboo", "material.plastic",
                            "material.glass", "material.aluminum"),
               "style": ("style.portable", "style.light", "style.breathable", "style.capacity",
                         "style.thick"),
               "audience": ("audience.baby", "audience.kids", "audience.boys", "audience.girls",
                            "audience.maternity"),
               "pattern": ("pattern.cartoon", "pattern.solid", "pattern.stripe", "pattern.polkadot",
                           "pattern.heart")}),
    "category.appliances": _Profile(
        brands=("brand.midea", "brand.gree", "brand.haier", "brand.joyoung", "brand.supor",
                "brand.dyson", "brand.philips", "brand.panasonic", "brand.ecovacs", "brand.xiaomi"),
        presence={"color": .5, "material": .3, "style": .6, "size": .2, "audience": .25, "season": .05,
                  "pattern": 0.0, "model": .65},
        pools={"size": ("size.l1", "size.ml500"),
               "material": ("material.steel", "material.ceramic", "material.plastic", "material.glass"),
               "style": ("style.smart", "style.portable", "style.wireless", "style.capacity",
                         "style.minimalist", "style.nordic", "style.luxury", "style.light"),
               "color": ("color.white", "color.black", "color.silver", "color.gray", "color.pink",
                         "color.mint", "color.cream", "color.champagne", "color.gold"),
               "audience": ("audience.seniors", "audience.students", "audience.couples", "audience.office",
                            "audience.men", "audience.women")}),
}
_GENERIC = _Profile(brands=(), presence={"color": .5, "material": .4, "style": .45, "size": .35,
                                         "audience": .4, "season": .3, "pattern": .3, "model": .2})

# Description sentences: {type} slots become entities, everything else is plain text.
# The plain text avoids every taxonomy surface form so that unlabeled text never holds an entity.
DESC_ZH = (
    "这款{category}采用{material}打造，手感舒适。",
    "{brand}出品，{style}设计，做工精致。",
    "有{color}和{color}可选，满足不同喜好。",
    "适合{audience}日常使用，{season}必备。",
    "{pattern}元素点缀，整体更显{style}。",
    "型号{model}，尺码可选{size}。",
    "{brand}{model}，{color}配色，经典耐看。",
    "精选{material}，细节处理到位，适合{season}。",
    "本店{category}支持七天无理由退换。",
    "{audience}也能轻松驾驭这款{category}。",
)
DESC_EN = (
    "This {category} is made of {material} and feels great every day.",
    "Designed by {brand} with a {style} look.",
    "Available in {color} and {color}.",
    "A great pick for {audience} in {season}.",
    "Features a {pattern} design with {style} details.",
    "Model {model}, size {size} in stock.",
    "The {brand} {model} comes in {color}.",
    "Crafted from {material}, ideal for {season}.",
    "Ships within 48 hours with easy returns.",
    "A {category} for {audience} who want comfort.",
)


def load_taxonomy_json(path: str | Path) -> dict:
    """Load a taxonomy file, checking only what generate() relies on."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    types = doc.get("types")
    if not isinstance(types, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                              for t in types):
        raise ValueError(f"{path}: 'types' must be a list of objects with a 'name'")
    nodes = doc.get("nodes")
    if not isinstance(nodes, list):
        raise ValueError(f"{path}: 'nodes' must be a list")
    known = {t["name"] for t in types}
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str):
            raise ValueError(f"{path}: nodes[{i}] must be an object with a string 'id'")
        if node.get("type") not in known:
            raise ValueError(f"{path}: node {node['id']!r} has unknown type {node.get('type')!r}; "
                             f"expected one of {sorted(known)}")
    return doc


def is_cjk(ch: str) -> bool:
    o = ord(ch)
    return 0x3400 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FFFF


def is_latin_word_char(ch: str) -> bool:
    """A letter or digit a whitespace/punctuation tokenizer would glue to its neighbours (full-width too)."""
    return ch.isalnum() and not is_cjk(ch) and unicodedata.normalize("NFKC", ch).isascii()


def _capitalize(word: str) -> str:
    """Upper-case the first letter even behind a bracket: "[new" -> "[New"."""
    for i, c in enumerate(word):
        if c.isalpha():
            return word[:i] + c.upper() + word[i + 1:]
    return word


def to_fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if 0x21 <= ord(c) <= 0x7E else c for c in text)


def surfaces(taxonomy: dict) -> dict[str, Surface]:
    """Surface forms per node id, deduplicated in file order (zh, en, then synonyms)."""
    out: dict[str, Surface] = {}
    for node in sorted(taxonomy["nodes"], key=lambda n: n["id"]):
        forms: list[str] = []
        for form in (node.get("zh"), node.get("en"), *node.get("synonyms", ())):
            if form and form not in forms:
                forms.append(form)
        cjk = tuple(f for f in forms if any(is_cjk(c) for c in f))
        latin = tuple(f for f in forms if f not in cjk)
        out[node["id"]] = Surface(node["id"], node["type"], node.get("zh") or forms[0],
                                  node.get("en") or forms[0], cjk, latin)
    return out


LONG_TAIL_BRANDS = 300     # invented brand names per generator (per seed)
LONG_TAIL_SHARE = 0.15     # share of brand mentions that name one of them
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "kr", "st", "tr", "vel")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "or", "ar", "en")
_CODAS = ("", "", "x", "n", "s", "k", "l", "ra", "on")
_BRAND_CHARS = "美德华之品乐优佳雅森源尚悦诺凯盛嘉泰恒朗维格莱卡芙蔓索澜瑞博思兰菲奥迪琳"


class _Generator:
    """Holds the taxonomy index and one Random; every draw goes through self.rng for determinism."""

    def __init__(self, taxonomy: dict, seed: int) -> None:
        self.rng = random.Random(seed)
        self.surf = surfaces(taxonomy)
        self.by_type: dict[str, list[str]] = {}
        for sid in self.surf:  # already sorted by id
            self.by_type.setdefault(self.surf[sid].label, []).append(sid)
        self.parent = {n["id"]: n.get("parent") for n in taxonomy["nodes"]}
        self.has_child = {p for p in self.parent.values() if p}
        self.types = {t["name"] for t in taxonomy["types"]}
        # The long tail: brands the taxonomy does not list, so a model learns what a brand looks
        # like in a title rather than a closed list (and new brands can be discovered in the stream).
        self.long_tail = [self.invent_brand(i) for i in range(LONG_TAIL_BRANDS)] if "brand" in self.types else []
        for brand in self.long_tail:
            self.surf[brand.node_id] = brand

    # -- sampling ---------------------------------------------------------------------------

    def root(self, node_id: str) -> str:
        seen = set()
        while self.parent.get(node_id) and node_id not in seen:
            seen.add(node_id)
            node_id = self.parent[node_id]
        return node_id

    def pick_category(self) -> str:
        cats = self.by_type.get("category", [])
        leaves = [c for c in cats if c not in self.has_child]
        # Listings mostly name the concrete product; broader categories show up now and then.
        if leaves and self.rng.random() < 0.85:
            return self.rng.choice(leaves)
        return self.rng.choice(cats)

    def pool(self, profile: _Profile, label: str) -> list[str]:
        ids = [i for i in profile.pools.get(label, ()) if i in self.surf]
        return ids or self.by_type.get(label, [])

    def invent_brand(self, index: int) -> Surface:
        r = self.rng
        latin = "".join(r.choice(_ONSETS) + r.choice(_VOWELS) for _ in range(r.choice((2, 2, 3))))
        latin = (latin + r.choice(_CODAS)).capitalize()
        zh = "".join(r.choice(_BRAND_CHARS) for _ in range(r.choice((2, 2, 3))))
        return Surface(f"brand.~long-tail-{index}", "brand", zh, latin, (zh,), (latin,))

    def pick_node(self, profile: _Profile, label: str, exclude: tuple[str, ...] = ()) -> str | None:
        if label == "brand" and self.long_tail and self.rng.random() < LONG_TAIL_SHARE:
            return self.rng.choice(self.long_tail).node_id
        if label == "brand":
            ids = [i for i in profile.brands if i in self.surf]
            # Keep a little cross-domain noise: brands stretch into other categories.
            if not ids or self.rng.random() < 0.05:
                ids = self.by_type.get("brand", [])
        else:
            ids = self.pool(profile, label)
        ids = [i for i in ids if i not in exclude]
        return self.rng.choice(ids) if ids else None

    def surface(self, node_id: str, zh: bool) -> str:
        s = self.surf[node_id]
        if zh:
            p_latin = {"brand": 0.45, "size": 0.45}.get(s.label, 0.06)
            use_latin = bool(s.latin) and (not s.cjk or self.rng.random() < p_latin)
        else:
            use_latin = bool(s.latin)
        group, primary = (s.latin, s.en) if use_latin else (s.cjk, s.zh)
        if primary in group and (len(group) == 1 or self.rng.random() < 0.65):
            return primary
        others = [f for f in group if f != primary] or list(group)
        return self.rng.choice(others)

    def model_number(self) -> str:
        r = self.rng
        letters = "".join(r.choice(_UPPER) for _ in range(r.randint(1, 2)))
        kind = r.randrange(5)
        if kind == 0:
            return f"{letters}-{r.randint(1000, 9999)}"
        if kind == 1:
            return f"{letters[0]}{r.randint(10, 99)} {r.choice(MODEL_SUFFIXES)}"
        if kind == 2:
            return f"{letters[0]}{r.randint(1000, 9999)}"
        if kind == 3:
            return f"{letters}{r.randint(100, 999)}{r.choice(_UPPER)}"
        return f"{letters[0]}-{r.randint(2020, 2026)}{r.choice(_UPPER)}"

    # -- attributes ---------------------------------------------------------------------------

    def attributes(self) -> tuple[_Profile, str, list[tuple[str, str | None]]]:
        """The product's profile, its category, and 3-8 (label, node id or None for model) attributes."""
        r = self.rng
        cat = self.pick_category()
        profile = _PROFILES.get(self.root(cat), _GENERIC)
        attrs: list[tuple[str, str | None]] = []
        if "brand" in self.types and r.random() < 0.85:
            if (b := self.pick_node(profile, "brand")) is not None:
                attrs.append(("brand", b))
        if r.random() < 0.95:
            attrs.append(("category", cat))
        optional = [lb for lb in ("color", "material", "style", "size", "audience", "season", "pattern",
                                  "model") if lb in self.types]
        for label in optional:
            if r.random() < profile.presence.get(label, 0.3):
                attrs.extend(self._one(profile, label, attrs))
        # Top up from whatever this kind of product can say, so each title has 3-8 entities.
        addable = [lb for lb in optional if profile.presence.get(lb, 0.3) > 0] or optional
        tries = 0
        while len(attrs) < 3 and tries < 20:
            tries += 1
            attrs.extend(self._one(profile, r.choice(addable), attrs))
        if ("category", cat) not in attrs and len(attrs) < 3:
            attrs.append(("category", cat))
        while len(attrs) > 8:
            droppable = [i for i, (lb, _) in enumerate(attrs) if lb not in ("brand", "category")]
            attrs.pop(r.choice(droppable))
        return profile, cat, attrs

    def _one(self, profile: _Profile, label: str, have: list[tuple[str, str | None]]) -> list:
        if label == "model":
            return [] if any(lb == "model" for lb, _ in have) else [("model", None)]
        taken = tuple(i for lb, i in have if lb == label)
        # Colours often come in pairs ("黑色/白色"); other attributes appear once.
        if taken and label != "color":
            return []
        node = self.pick_node(profile, label, exclude=taken)
        return [(label, node)] if node else []

    # -- titles -------------------------------------------------------------------------------

    def entity(self, label: str, node: str | None, zh: bool, model: str) -> _Piece:
        return _Piece(model if label == "model" else self.surface(node, zh), label)

    def order(self, attrs: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
        """Listing order: brand (+model) up front, modifiers shuffled, category late, size last-ish."""
        r = self.rng
        head = [a for a in attrs if a[0] == "brand"]
        model = [a for a in attrs if a[0] == "model"]
        cats = [a for a in attrs if a[0] == "category"]
        sizes = [a for a in attrs if a[0] == "size"]
        mods = [a for a in attrs if a[0] not in ("brand", "model", "category", "size")]
        r.shuffle(mods)
        body = mods + cats
        if cats and r.random() < 0.25:  # "连衣裙 黑色 M码" style: category before modifiers
            body = cats + mods
        seq = head + (model if r.random() < 0.7 else []) + body
        seq += [m for m in model if m not in seq]
        if sizes:
            seq.insert(len(seq) if r.random() < 0.75 else r.randint(0, len(seq)), sizes[0])
        if head and r.random() < 0.15:  # brand not first
            seq.remove(head[0])
            seq.insert(r.randint(0, len(seq)), head[0])
        return seq

    def title_pieces(self, attrs: list[tuple[str, str | None]], zh: bool, model: str) -> list[_Piece]:
        r = self.rng
        pieces: list[_Piece] = []
        for label, node in self.order(attrs):
            piece = self.entity(label, node, zh, model)
            s = self.surf.get(node) if node else None
            if zh and label == "brand" and s and s.cjk and s.latin and len(attrs) < 8 and r.random() < 0.12:
                # "耐克/Nike": both names, as two brand mentions.
                other = s.cjk[0] if piece.text in s.latin else s.latin[0]
                pieces += [piece, _Piece(r.choice(("/", "", " ")), glue=True), _Piece(other, "brand")]
                continue
            pieces.append(piece)
        n_promo = r.choice((0, 1, 1, 1, 2, 2, 3))
        for word in r.sample(PROMO_ZH if zh else PROMO_EN, n_promo):
            wrap = r.random()
            if zh and wrap < 0.35:
                word = r.choice(("【{}】", "[{}]", "{}！", "({})")).format(word)
            elif not zh and wrap < 0.25:
                word = r.choice(("[{}]", "({})", "{}!")).format(word)
            at = 0 if r.random() < 0.55 else r.randint(0, len(pieces))
            pieces.insert(at, _Piece(word))
        return pieces

    def style_pieces(self, pieces: list[_Piece], zh: bool) -> None:
        """In place: casing for English, full-width Latin now and then (more often in zh listings)."""
        r = self.rng
        if not zh:
            case = r.choices(("asis", "title", "upper"), weights=(45, 40, 15))[0]
            for p in pieces:
                if case == "title":
                    p.text = " ".join(_capitalize(w) for w in p.text.split(" "))
                elif case == "upper":
                    p.text = p.text.upper()
        p_full = 0.25 if zh else 0.03
        if r.random() < p_full:
            for p in pieces:
                if any(is_latin_word_char(c) for c in p.text) and r.random() < 0.6:
                    p.text = to_fullwidth(p.text)

    def join(self, pieces: list[_Piece], zh: bool) -> tuple[str, list[tuple[int, int, str]]]:
        """Concatenate with separators; never lets two Latin words touch."""
        r = self.rng
        text = ""
        spans: list[tuple[int, int, str]] = []
        glued = False
        for p in pieces:
            if p.glue:
                text += p.text
                glued = True
                continue
            if not p.text:
                continue
            if glued and text and is_latin_word_char(text[-1]) and is_latin_word_char(p.text[0]):
                text += " "
            elif text and not glued:
                if zh:
                    sep = "" if r.random() < 0.55 else r.choice(SEPARATORS_ZH)
                else:
                    sep = r.choice(SEPARATORS_EN)
                if p.text[0] in "/-·|" or text[-1] in "/-·|":
                    sep = ""  # the piece itself is a separator
                if not sep and is_latin_word_char(text[-1]) and is_latin_word_char(p.text[0]):
                    sep = r.choice(SEPARATORS_ZH if zh else SEPARATORS_EN)
                if not zh and sep.strip() and (text[-1] in "[(" or p.text[0] in "])!"):
                    sep = " "
                text += sep
            glued = False
            start = len(text)
            text += p.text
            if p.label:
                spans.append((start, len(text), p.label))
        return text, spans

    def title(self, attrs: list[tuple[str, str | None]], zh: bool, model: str):
        pieces = self.title_pieces(attrs, zh, model)
        self.style_pieces(pieces, zh)
        return self.join(pieces, zh)

    # -- descriptions -------------------------------------------------------------------------

    def description(self, profile: _Profile, cat: str, attrs, zh: bool, model: str):
        """1-3 sentences, 40-200 chars, reusing some title attributes and adding others."""
        r = self.rng
        have: dict[str, list[str | None]] = {}
        for label, node in attrs:
            have.setdefault(label, []).append(node)
        # The description may name the product more broadly, but never as a different product.
        lineage = [cat]
        while self.parent.get(lineage[-1]) and len(lineage) < 8:
            lineage.append(self.parent[lineage[-1]])
        # Only templates whose slots suit this kind of product (no "made of corduroy" for snacks).
        templates = [t for t in (DESC_ZH if zh else DESC_EN)
                     if all(lb in ("brand", "category") or lb in have or profile.presence.get(lb, 0.3) > 0
                            for lb in _slots(t))]
        best = None
        for _ in range(30):
            chosen = r.sample(range(len(templates)), min(len(templates), r.randint(1, 3)))
            pieces: list[_Piece] = []
            for k, idx in enumerate(chosen):
                if k:
                    pieces.append(_Piece("" if zh else " "))
                pieces += self._fill(templates[idx], profile, have, lineage, zh, model)
            text, spans = self._concat(pieces)
            if 40 <= len(text) <= 200:
                return text, spans
            if best is None or abs(len(text) - 120) < abs(len(best[0]) - 120):
                best = (text, spans)
        return best

    def _fill(self, template: str, profile: _Profile, have, lineage: list[str], zh: bool,
              model: str) -> list[_Piece]:
        r = self.rng
        out: list[_Piece] = []
        rest = template
        used: list[str] = []
        while "{" in rest:
            pre, _, tail = rest.partition("{")
            label, _, rest = tail.partition("}")
            out.append(_Piece(pre))
            if label == "model":
                out.append(_Piece(model, "model"))
                continue
            if label == "category":
                node = lineage[0] if r.random() < 0.7 else r.choice(lineage)
                out.append(_Piece(self.surface(node, zh), label))
                continue
            known = [n for n in have.get(label, []) if n and n not in used]
            # A listing names one brand; other attributes may add values the title left out.
            node = r.choice(known) if known and (label == "brand" or r.random() < 0.6) else None
            if node is None:
                node = self.pick_node(profile, label, exclude=tuple(used))
            if node is None:
                out.append(_Piece(self.surf[self.by_type[label][0]].zh if zh else label))
                continue
            used.append(node)
            out.append(_Piece(self.surface(node, zh), label))
        out.append(_Piece(rest))
        if not zh:
            # Sentence-initial capital, as written prose has it.
            first = next(p for p in out if p.text)
            first.text = first.text[:1].upper() + first.text[1:]
        return out

    @staticmethod
    def _concat(pieces: list[_Piece]) -> tuple[str, list[tuple[int, int, str]]]:
        text = ""
        spans = []
        for p in pieces:
            if text and p.text and is_latin_word_char(text[-1]) and is_latin_word_char(p.text[0]):
                text += " "  # "{brand}{model}" must not glue two Latin words
            start = len(text)
            text += p.text
            if p.label and p.text:
                spans.append((start, len(text), p.label))
        return text, spans


def _slots(template: str) -> list[str]:
    return [part.partition("}")[0] for part in template.split("{")[1:]]


def _in_range(text: str, zh: bool) -> bool:
    return 15 <= len(text) <= 45 if zh else 6 <= len(text.split()) <= 16


def generate(taxonomy: dict, n: int, *, seed: int = 0, lang: str = "mixed",
             products: bool = False) -> list[dict]:
    """n synthetic records; identical for identical arguments."""
    if lang not in LANGS:
        raise ValueError(f"lang: expected one of {LANGS}, got {lang!r}")
    gen = _Generator(taxonomy, seed)
    records: list[dict] = []
    for i in range(n):
        zh = lang == "zh" or (lang == "mixed" and gen.rng.random() < 0.5)
        # Rejection-sample toward realistic lengths; the last draw stands if none fits.
        for _ in range(12):
            profile, cat, attrs = gen.attributes()
            model = gen.model_number()
            text, spans = gen.title(attrs, zh, model)
            if _in_range(text, zh):
                break
        rid = f"synth-{i + 1:06d}"
        if not products:
            records.append({"id": rid, "text": text,
                            "spans": [{"start": s, "end": e, "label": lb} for s, e, lb in spans]})
            continue
        desc, dspans = gen.description(profile, cat, attrs, zh, model)
        records.append({
            "id": rid, "title": text, "description": desc, "locale": "zh-CN" if zh else "en-US",
            "spans": [{"field": "title", "start": s, "end": e, "label": lb} for s, e, lb in spans]
            + [{"field": "description", "start": s, "end": e, "label": lb} for s, e, lb in dspans],
        })
    return records


def main_stats(records: list[dict]) -> dict[str, int]:
    """Span count per label, sorted by label."""
    counts: dict[str, int] = {}
    for rec in records:
        for span in rec["spans"]:
            counts[span["label"]] = counts.get(span["label"], 0) + 1
    return dict(sorted(counts.items()))


if __name__ == "__main__":
    _recs = generate(load_taxonomy_json(DEMO_TAXONOMY), 20, seed=1)
    for _r in _recs:
        print(_r["text"], [(_r["text"][s["start"]:s["end"]], s["label"]) for s in _r["spans"]])
    print(main_stats(generate(load_taxonomy_json(DEMO_TAXONOMY), 2000)))
