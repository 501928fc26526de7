"""Normalising extracted spans to taxonomy nodes (exact match after NFKC + case folding)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from stream.profile import normalise_value


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    type: str
    zh: str
    en: str
    parent: str | None


class Taxonomy:
    """Surface forms (names and synonyms) of every node, indexed by their normalised key."""

    def __init__(self, nodes: list[Node], forms: dict[tuple[str, str], str]) -> None:
        self.nodes = {n.id: n for n in nodes}
        self._forms = forms                                      # (type, key) -> node id

    @classmethod
    def load(cls, path: str | Path) -> "Taxonomy":
        data = orjson.loads(Path(path).read_bytes())
        nodes, forms = [], {}
        for raw in data.get("nodes", []):
            node = Node(raw["id"], raw["type"], raw.get("zh", ""), raw.get("en", ""), raw.get("parent"))
            nodes.append(node)
            for form in (node.zh, node.en, *raw.get("synonyms", [])):
                if form:
                    forms.setdefault((node.type, normalise_value(form)), node.id)
        return cls(nodes, forms)

    def lookup(self, tag_type: str, text: str) -> Node | None:
        key = normalise_value(text)
        node_id = self._forms.get((tag_type, key))
        return self.nodes[node_id] if node_id else None

    def path(self, node: Node) -> list[str]:
        out, seen = [], set()
        current: Node | None = node
        while current is not None and current.id not in seen:
            seen.add(current.id)
            out.append(current.id)
            current = self.nodes.get(current.parent) if current.parent else None
        return out[::-1]
