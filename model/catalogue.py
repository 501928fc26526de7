"""What the synthetic catalogue is made of: per-category profiles (brands, attribute presence,
templates), promo words, separators, description templates, and the text helpers that turn
taxonomy nodes into surface forms. ``model.synth`` draws titles from these."""
from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

# Promotional words are deliberately not entities: the tagger has to learn to skip them.
PROMO_ZH = ("包邮", "新款", "2026新款", "正品", "特价", "爆款", "限时", "限时特惠", "热卖", "官方正品", "现货", "清仓")
PROMO_EN = ("hot sale", "free shipping", "NEW", "2026", "new arrival", "limited offer", "best seller", "genuine")
MODEL_SUFFIXES = ("Pro", "Max", "Plus", "Ultra", "Lite", "SE")
SEPARATORS_ZH = (" ", " ", " ", "/", "·", "|", "-", " ")
SEPARATORS_EN = (" ", " ", " ", " ", " ", " | ", " - ", " / ", ", ")

UPPER = "ABCDEFGHJKLMNPRSTUVWXYZ"  # no I/O: real model numbers avoid them next to digits
DIGITS = "0123456789"


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
class Profile:
    """What a product of one top-level category plausibly says about itself."""
    brands: tuple[str, ...]
    presence: dict[str, float]
    pools: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class Piece:
    text: str
    label: str | None = None
    glue: bool = False  # a separator of its own: join() adds nothing on either side


CLOTHES_SIZES = ("size.xs", "size.s", "size.m", "size.l", "size.xl", "size.xxl", "size.xxxl",
                  "size.one", "size.plus")
SHOE_SIZES = ("size.eu36", "size.eu38", "size.eu40", "size.eu42", "size.eu44")
FABRICS = ("material.cotton", "material.polyester", "material.silk", "material.wool", "material.cashmere",
            "material.linen", "material.denim", "material.chiffon", "material.knit", "material.modal",
            "material.lyocell", "material.nylon", "material.spandex", "material.corduroy", "material.down",
            "material.fleece", "material.lace", "material.bamboo")
FASHION_STYLES = ("style.korean", "style.japanese", "style.vintage", "style.minimalist", "style.casual",
                   "style.business", "style.sporty", "style.loose", "style.slim", "style.street",
                   "style.guochao", "style.chinese", "style.french", "style.british", "style.elegant",
                   "style.sweet", "style.versatile", "style.preppy", "style.workwear", "style.highwaist",
                   "style.straight", "style.thick", "style.light", "style.breathable")
GADGET_COLORS = ("color.black", "color.white", "color.silver", "color.gold", "color.spacegray",
                  "color.midnight", "color.blue", "color.green", "color.purple", "color.pink",
                  "color.rosegold", "color.transparent", "color.darkgreen", "color.skyblue")
GADGET_STYLES = ("style.wireless", "style.portable", "style.waterproof", "style.smart", "style.light",
                  "style.minimalist", "style.business", "style.capacity")

# Keyed by top-level category id; a taxonomy without these ids falls back to GENERIC.
PROFILES: dict[str, Profile] = {
    "category.apparel": Profile(
        brands=("brand.uniqlo", "brand.zara", "brand.hm", "brand.gap", "brand.cos", "brand.peacebird",
                "brand.semir", "brand.bosideng", "brand.hla", "brand.nanjiren", "brand.muji", "brand.mlb",
                "brand.nike", "brand.adidas", "brand.lining", "brand.anta"),
        presence={"color": .7, "material": .5, "style": .6, "size": .45, "audience": .5, "season": .45,
                  "pattern": .35, "model": .12},
        pools={"size": CLOTHES_SIZES, "material": FABRICS, "style": FASHION_STYLES}),
    "category.footwear": Profile(
        brands=("brand.nike", "brand.adidas", "brand.lining", "brand.anta", "brand.xtep", "brand.puma",
                "brand.newbalance", "brand.skechers", "brand.converse", "brand.vans", "brand.mlb"),
        presence={"color": .7, "material": .45, "style": .6, "size": .5, "audience": .6, "season": .4,
                  "pattern": .2, "model": .35},
        pools={"size": SHOE_SIZES,
               "material": ("material.leather", "material.pu", "material.canvas", "material.mesh",
                            "material.knit", "material.fleece"),
               "style": ("style.casual", "style.sporty", "style.business", "style.breathable",
                         "style.waterproof", "style.vintage", "style.korean", "style.minimalist",
                         "style.street", "style.light", "style.thick", "style.versatile", "style.british"),
               "pattern": ("pattern.solid", "pattern.colorblock", "pattern.letter", "pattern.camo",
                           "pattern.leopard", "pattern.snake")}),
    "category.bags": Profile(
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
    "category.digital": Profile(
        brands=("brand.huawei", "brand.xiaomi", "brand.apple", "brand.samsung", "brand.honor",
                "brand.lenovo", "brand.dell", "brand.sony", "brand.canon", "brand.nikon", "brand.edifier",
                "brand.logitech", "brand.dji", "brand.oneplus", "brand.anker", "brand.oppo", "brand.vivo",
                "brand.realme", "brand.iqoo"),
        presence={"color": .65, "material": .25, "style": .55, "size": .45, "audience": .25,
                  "season": .03, "pattern": .08, "model": .7},
        pools={"size": ("size.gb128", "size.gb256", "size.gb512", "size.tb1"),
               "material": ("material.aluminum", "material.glass", "material.silicone", "material.plastic",
                            "material.titanium", "material.carbon", "material.leather"),
               "style": GADGET_STYLES, "color": GADGET_COLORS,
               "audience": ("audience.students", "audience.office", "audience.kids", "audience.seniors",
                            "audience.men", "audience.women"),
               "pattern": ("pattern.cartoon", "pattern.gradient", "pattern.solid")}),
    "category.home": Profile(
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
    "category.beauty": Profile(
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
    "category.sports": Profile(
        brands=("brand.decathlon", "brand.northface", "brand.columbia", "brand.nike", "brand.adidas",
                "brand.lining", "brand.anta", "brand.xtep", "brand.puma", "brand.xiaomi"),
        presence={"color": .6, "material": .45, "style": .65, "size": .35, "audience": .5, "season": .4,
                  "pattern": .2, "model": .25},
        pools={"size": CLOTHES_SIZES,
               "material": ("material.nylon", "material.polyester", "material.spandex", "material.aluminum",
                            "material.carbon", "material.steel", "material.fleece", "material.down",
                            "material.latex"),
               "style": ("style.breathable", "style.waterproof", "style.light", "style.portable",
                         "style.sporty", "style.thick", "style.capacity", "style.casual"),
               "pattern": ("pattern.camo", "pattern.solid", "pattern.colorblock", "pattern.stripe",
                           "pattern.letter", "pattern.gradient")}),
    "category.food": Profile(
        brands=("brand.threesquirrels", "brand.bestore", "brand.nongfu", "brand.yili", "brand.nestle",
                "brand.starbucks"),
        presence={"color": 0.0, "material": 0.0, "style": .25, "size": .6, "audience": .45, "season": .15,
                  "pattern": 0.0, "model": 0.0},
        pools={"size": ("size.ml500", "size.l1"),
               "style": ("style.portable", "style.capacity", "style.chinese"),
               "audience": ("audience.kids", "audience.seniors", "audience.students", "audience.maternity",
                            "audience.office", "audience.baby")}),
    "category.baby": Profile(
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
    "category.appliances": Profile(
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
GENERIC = Profile(brands=(), presence={"color": .5, "material": .4, "style": .45, "size": .35,
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


def is_cjk(ch: str) -> bool:
    o = ord(ch)
    return 0x3400 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FFFF


def is_latin_word_char(ch: str) -> bool:
    """A letter or digit a whitespace/punctuation tokenizer would glue to its neighbours (full-width too)."""
    return ch.isalnum() and not is_cjk(ch) and unicodedata.normalize("NFKC", ch).isascii()


def capitalize(word: str) -> str:
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
