"""Deterministic bilingual synthetic product catalogue for training and testing the tagger.

Titles carry the noise of real listings: shuffled attributes, promo words, model numbers, full-width Latin.
"""
from __future__ import annotations

import random
from pathlib import Path

from model.catalogue import (DESC_EN, DESC_ZH, GENERIC, MODEL_SUFFIXES, PROFILES, PROMO_EN, PROMO_ZH, SEPARATORS_EN,
                             SEPARATORS_ZH, UPPER, Piece, Profile, Surface, capitalize, is_latin_word_char,
                             load_taxonomy_json, surfaces, to_fullwidth)

__all__ = ["DEMO_TAXONOMY", "LANGS", "generate", "load_taxonomy_json", "main_stats"]
LANGS = ("zh", "en", "mixed")
DEMO_TAXONOMY = Path(__file__).resolve().parent / "resources" / "demo_taxonomy.json"


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

    def pool(self, profile: Profile, label: str) -> list[str]:
        ids = [i for i in profile.pools.get(label, ()) if i in self.surf]
        return ids or self.by_type.get(label, [])

    def invent_brand(self, index: int) -> Surface:
        r = self.rng
        latin = "".join(r.choice(_ONSETS) + r.choice(_VOWELS) for _ in range(r.choice((2, 2, 3))))
        latin = (latin + r.choice(_CODAS)).capitalize()
        zh = "".join(r.choice(_BRAND_CHARS) for _ in range(r.choice((2, 2, 3))))
        return Surface(f"brand.~long-tail-{index}", "brand", zh, latin, (zh,), (latin,))

    def pick_node(self, profile: Profile, label: str, exclude: tuple[str, ...] = ()) -> str | None:
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
        letters = "".join(r.choice(UPPER) for _ in range(r.randint(1, 2)))
        kind = r.randrange(5)
        if kind == 0:
            return f"{letters}-{r.randint(1000, 9999)}"
        if kind == 1:
            return f"{letters[0]}{r.randint(10, 99)} {r.choice(MODEL_SUFFIXES)}"
        if kind == 2:
            return f"{letters[0]}{r.randint(1000, 9999)}"
        if kind == 3:
            return f"{letters}{r.randint(100, 999)}{r.choice(UPPER)}"
        return f"{letters[0]}-{r.randint(2020, 2026)}{r.choice(UPPER)}"

    # -- attributes ---------------------------------------------------------------------------

    def attributes(self) -> tuple[Profile, str, list[tuple[str, str | None]]]:
        """The product's profile, its category, and 3-8 (label, node id or None for model) attributes."""
        r = self.rng
        cat = self.pick_category()
        profile = PROFILES.get(self.root(cat), GENERIC)
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

    def _one(self, profile: Profile, label: str, have: list[tuple[str, str | None]]) -> list:
        if label == "model":
            return [] if any(lb == "model" for lb, _ in have) else [("model", None)]
        taken = tuple(i for lb, i in have if lb == label)
        # Colours often come in pairs ("黑色/白色"); other attributes appear once.
        if taken and label != "color":
            return []
        node = self.pick_node(profile, label, exclude=taken)
        return [(label, node)] if node else []

    # -- titles -------------------------------------------------------------------------------

    def entity(self, label: str, node: str | None, zh: bool, model: str) -> Piece:
        return Piece(model if label == "model" else self.surface(node, zh), label)

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

    def title_pieces(self, attrs: list[tuple[str, str | None]], zh: bool, model: str) -> list[Piece]:
        r = self.rng
        pieces: list[Piece] = []
        for label, node in self.order(attrs):
            piece = self.entity(label, node, zh, model)
            s = self.surf.get(node) if node else None
            if zh and label == "brand" and s and s.cjk and s.latin and len(attrs) < 8 and r.random() < 0.12:
                # "耐克/Nike": both names, as two brand mentions.
                other = s.cjk[0] if piece.text in s.latin else s.latin[0]
                pieces += [piece, Piece(r.choice(("/", "", " ")), glue=True), Piece(other, "brand")]
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
            pieces.insert(at, Piece(word))
        return pieces

    def style_pieces(self, pieces: list[Piece], zh: bool) -> None:
        """In place: casing for English, full-width Latin now and then (more often in zh listings)."""
        r = self.rng
        if not zh:
            case = r.choices(("asis", "title", "upper"), weights=(45, 40, 15))[0]
            for p in pieces:
                if case == "title":
                    p.text = " ".join(capitalize(w) for w in p.text.split(" "))
                elif case == "upper":
                    p.text = p.text.upper()
        p_full = 0.25 if zh else 0.03
        if r.random() < p_full:
            for p in pieces:
                if any(is_latin_word_char(c) for c in p.text) and r.random() < 0.6:
                    p.text = to_fullwidth(p.text)

    def join(self, pieces: list[Piece], zh: bool) -> tuple[str, list[tuple[int, int, str]]]:
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

    def description(self, profile: Profile, cat: str, attrs, zh: bool, model: str):
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
            pieces: list[Piece] = []
            for k, idx in enumerate(chosen):
                if k:
                    pieces.append(Piece("" if zh else " "))
                pieces += self._fill(templates[idx], profile, have, lineage, zh, model)
            text, spans = self._concat(pieces)
            if 40 <= len(text) <= 200:
                return text, spans
            if best is None or abs(len(text) - 120) < abs(len(best[0]) - 120):
                best = (text, spans)
        return best

    def _fill(self, template: str, profile: Profile, have, lineage: list[str], zh: bool,
              model: str) -> list[Piece]:
        r = self.rng
        out: list[Piece] = []
        rest = template
        used: list[str] = []
        while "{" in rest:
            pre, _, tail = rest.partition("{")
            label, _, rest = tail.partition("}")
            out.append(Piece(pre))
            if label == "model":
                out.append(Piece(model, "model"))
                continue
            if label == "category":
                node = lineage[0] if r.random() < 0.7 else r.choice(lineage)
                out.append(Piece(self.surface(node, zh), label))
                continue
            known = [n for n in have.get(label, []) if n and n not in used]
            # A listing names one brand; other attributes may add values the title left out.
            node = r.choice(known) if known and (label == "brand" or r.random() < 0.6) else None
            if node is None:
                node = self.pick_node(profile, label, exclude=tuple(used))
            if node is None:
                out.append(Piece(self.surf[self.by_type[label][0]].zh if zh else label))
                continue
            used.append(node)
            out.append(Piece(self.surface(node, zh), label))
        out.append(Piece(rest))
        if not zh:
            # Sentence-initial capital, as written prose has it.
            first = next(p for p in out if p.text)
            first.text = first.text[:1].upper() + first.text[1:]
        return out

    @staticmethod
    def _concat(pieces: list[Piece]) -> tuple[str, list[tuple[int, int, str]]]:
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

