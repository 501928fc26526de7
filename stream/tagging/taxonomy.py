"""The tag taxonomy: typed nodes with names, synonyms and a parent, validated on load, and the
normalisation of extracted spans to nodes (exact forms first, then a cautious fuzzy match for
Latin-script brand spellings)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path


from stream.tagging.jsonfile import read_json
from stream.tagging.text import compact_key, normalise_value

FORMAT_VERSION = 1
FUZZY_TYPES = frozenset({"brand"})   # spelling variants are common for brands, risky for e.g. sizes
_LATIN = re.compile(r"^[a-z0-9][a-z0-9 .&'+-]*$")


class TaxonomyError(ValueError):
    """A taxonomy file that cannot be used; the message says where the problem is."""


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    type: str
    zh: str
    en: str
    parent: str | None
    synonyms: tuple[str, ...] = ()

    def forms(self) -> tuple[str, ...]:
        return tuple(f for f in (self.zh, self.en, *self.synonyms) if f)


def within_one_edit(a: str, b: str) -> bool:
    """True if ``a`` becomes ``b`` by at most one insertion, deletion, substitution or swap of
    neighbours (Damerau's optimal string alignment, bounded at one)."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    i = 0
    while i < min(la, lb) and a[i] == b[i]:
        i += 1
    if la == lb:
        if a[i + 1:] == b[i + 1:]:
            return True                                          # substitution
        return i + 1 < la and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2:] == b[i + 2:]  # swap
    longer, shorter = (a, b) if la > lb else (b, a)
    return longer[i + 1:] == shorter[i:]                        # insertion / deletion


@dataclass
class Taxonomy:
    """Nodes by id, their surface forms indexed by (type, normalised form)."""

    name: str
    version: str
    types: dict[str, dict]
    nodes: dict[str, Node]
    _forms: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    _latin: dict[str, list[tuple[str, str]]] = field(default_factory=dict, repr=False)
    _cache: dict[tuple[str, str], str | None] = field(default_factory=dict, repr=False)

    # -- loading and validation ---------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "Taxonomy":
        path = Path(path)
        data = read_json(path, TaxonomyError)
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: object, source: str = "taxonomy") -> "Taxonomy":
        problems: list[str] = []
        if not isinstance(data, dict):
            raise TaxonomyError(f"{source}: the top level must be an object")
        if data.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise TaxonomyError(f"{source}: format_version {data.get('format_version')!r} is not supported "
                                f"(this tagstream reads {FORMAT_VERSION})")
        types: dict[str, dict] = {}
        for i, raw in enumerate(data.get("types") or []):
            name = raw.get("name") if isinstance(raw, dict) else None
            if not isinstance(name, str) or not name:
                problems.append(f"types[{i}]: needs a non-empty string 'name'")
            elif name in types:
                problems.append(f"types[{i}]: type {name!r} is declared twice")
            else:
                types[name] = {"zh": raw.get("zh", ""), "en": raw.get("en", "")}
        nodes: dict[str, Node] = {}
        where: dict[str, int] = {}
        raw_nodes = data.get("nodes")
        if not isinstance(raw_nodes, list):
            raise TaxonomyError(f"{source}: 'nodes' must be a list")
        for i, raw in enumerate(raw_nodes):
            node = _node(raw, i, types, problems)
            if node is None:
                continue
            if node.id in nodes:
                problems.append(f"nodes[{i}]: duplicate id {node.id!r} (first at nodes[{where[node.id]}])")
                continue
            nodes[node.id] = node
            where[node.id] = i
        for node in nodes.values():
            if node.parent is not None and node.parent not in nodes:
                problems.append(f"nodes[{where[node.id]}] {node.id!r}: unknown parent {node.parent!r}")
        problems.extend(_cycles(nodes, where))
        forms: dict[tuple[str, str], str] = {}
        for node in nodes.values():
            for form in node.forms():
                key = (node.type, normalise_value(form))
                owner = forms.setdefault(key, node.id)
                if owner != node.id:
                    problems.append(f"nodes[{where[node.id]}] {node.id!r}: {form!r} is already a name or "
                                    f"synonym of {owner!r} (type {node.type})")
        if problems:
            shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
            raise TaxonomyError(f"{source}: {shown}")
        taxonomy = cls(str(data.get("name", "taxonomy")), str(data.get("version", "0")), types, nodes, forms)
        for (tag_type, key), node_id in forms.items():
            if tag_type in FUZZY_TYPES and _LATIN.match(key):
                taxonomy._latin.setdefault(tag_type, []).append((compact_key(key), node_id))
        return taxonomy

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "name": self.name, "version": self.version,
                "types": [{"name": name, **names} for name, names in self.types.items()],
                "nodes": [{"id": n.id, "type": n.type, "zh": n.zh, "en": n.en, "synonyms": list(n.synonyms),
                           "parent": n.parent} for n in self.nodes.values()]}

    @property
    def covered_types(self) -> frozenset[str]:
        """Tag types with at least one node (free-form types such as model numbers have none)."""
        return frozenset(node.type for node in self.nodes.values())

    # -- normalisation ------------------------------------------------------------------------
    def lookup(self, tag_type: str, text: str) -> Node | None:
        """The node a span's text names: an exact name or synonym after NFKC, case folding and
        whitespace collapsing; for Latin-script brands also without spaces and punctuation, or
        within one edit of exactly one known spelling (words of six letters or more)."""
        key = normalise_value(text)
        node_id = self._forms.get((tag_type, key))
        if node_id is None and tag_type in self._latin and _LATIN.match(key):
            cache_key = (tag_type, key)
            if cache_key not in self._cache:
                self._cache[cache_key] = self._fuzzy(tag_type, compact_key(key))
            node_id = self._cache[cache_key]
        return self.nodes[node_id] if node_id else None

    def _fuzzy(self, tag_type: str, compact: str) -> str | None:
        exact = {node_id for form, node_id in self._latin[tag_type] if form == compact}
        if len(exact) == 1:
            return exact.pop()
        if exact or len(compact) < 6:
            return None          # ambiguous, or too short for a typo to be told from another word
        close = {node_id for form, node_id in self._latin[tag_type]
                 if len(form) >= 6 and within_one_edit(compact, form)}
        return close.pop() if len(close) == 1 else None

    def path(self, node: Node) -> list[str]:
        """Ids from the root down to ``node`` (e.g. apparel > women > dresses)."""
        out: list[str] = []
        current: Node | None = node
        while current is not None:
            out.append(current.id)
            current = self.nodes.get(current.parent) if current.parent else None
        return out[::-1]

    # -- for curators -------------------------------------------------------------------------
    def stats(self) -> dict:
        per_type: dict[str, dict] = {}
        for node in self.nodes.values():
            row = per_type.setdefault(node.type, {"nodes": 0, "synonyms": 0, "roots": 0, "max_depth": 0})
            row["nodes"] += 1
            row["synonyms"] += len(node.synonyms)
            row["roots"] += node.parent is None
            row["max_depth"] = max(row["max_depth"], len(self.path(node)))
        return {"name": self.name, "version": self.version, "nodes": len(self.nodes),
                "types": dict(sorted(per_type.items()))}

    def diff(self, newer: "Taxonomy") -> dict:
        """Nodes added, removed and changed (with the fields that changed) from self to ``newer``."""
        changed = {}
        for node_id in self.nodes.keys() & newer.nodes.keys():
            a, b = self.nodes[node_id], newer.nodes[node_id]
            fields = [f for f in ("type", "zh", "en", "parent", "synonyms") if getattr(a, f) != getattr(b, f)]
            if fields:
                changed[node_id] = {f: [_plain(getattr(a, f)), _plain(getattr(b, f))] for f in fields}
        return {"from": f"{self.name}:{self.version}", "to": f"{newer.name}:{newer.version}",
                "added": sorted(newer.nodes.keys() - self.nodes.keys()),
                "removed": sorted(self.nodes.keys() - newer.nodes.keys()),
                "changed": dict(sorted(changed.items()))}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _node(raw: object, i: int, types: dict[str, dict], problems: list[str]) -> Node | None:
    if not isinstance(raw, dict):
        problems.append(f"nodes[{i}]: must be an object")
        return None
    node_id, tag_type = raw.get("id"), raw.get("type")
    if not isinstance(node_id, str) or not node_id:
        problems.append(f"nodes[{i}]: needs a non-empty string 'id'")
        return None
    if not isinstance(tag_type, str) or (types and tag_type not in types):
        problems.append(f"nodes[{i}] {node_id!r}: unknown type {tag_type!r}")
        return None
    names = {k: raw.get(k) or "" for k in ("zh", "en")}
    synonyms = raw.get("synonyms") or []
    parent = raw.get("parent")
    if not all(isinstance(v, str) for v in names.values()) or not (names["zh"] or names["en"]):
        problems.append(f"nodes[{i}] {node_id!r}: needs a 'zh' or 'en' name (strings)")
        return None
    if not isinstance(synonyms, list) or not all(isinstance(s, str) and s.strip() for s in synonyms):
        problems.append(f"nodes[{i}] {node_id!r}: 'synonyms' must be a list of non-empty strings")
        return None
    if parent is not None and not isinstance(parent, str):
        problems.append(f"nodes[{i}] {node_id!r}: 'parent' must be a node id or null")
        return None
    return Node(node_id, tag_type, unicodedata.normalize("NFC", names["zh"]), names["en"], parent, tuple(synonyms))


def _cycles(nodes: dict[str, Node], where: dict[str, int]) -> list[str]:
    problems, done = [], set()
    for start in nodes:
        trail: list[str] = []
        current: str | None = start
        while current is not None and current in nodes and current not in done:
            if current in trail:
                cycle = trail[trail.index(current):] + [current]
                problems.append(f"nodes[{where[current]}] {current!r}: parent cycle {' > '.join(cycle)}")
                break
            trail.append(current)
            current = nodes[current].parent
        done.update(trail)
    return problems
