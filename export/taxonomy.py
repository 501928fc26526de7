"""The taxonomy a bundle ships: the one asked for, else the checkpoint's, else an empty taxonomy of
the label types. Never the demo taxonomy unless a caller passes its path: a bundle carrying the
wrong taxonomy serves wrong node ids and paths without any error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from export.config import ExportError
from stream.tagging.taxonomy import FORMAT_VERSION, Taxonomy, TaxonomyError

EMPTY_NAME = "empty"


@dataclass(frozen=True)
class ShippedTaxonomy:
    content: bytes          # written verbatim as the bundle's taxonomy.json
    origin: str             # asked | checkpoint | empty
    path: str | None        # the file it came from (None for the empty one)
    name: str
    version: str

    def describe(self) -> str:
        if self.origin == "empty":
            return ("none given and the checkpoint carries none: shipping an empty taxonomy of the label types "
                    "(no tag is tied to a node; pass a taxonomy to ship one)")
        whose = "asked for" if self.origin == "asked" else "the checkpoint's"
        return f"{self.name} {self.version} from {self.path} ({whose})"

    def source(self) -> dict:
        """What the manifest's ``source`` records about it."""
        return {"origin": self.origin, "path": self.path, "name": self.name, "version": self.version}


def label_types(labels: Sequence[str]) -> list[str]:
    return sorted({label.split("-", 1)[1] for label in labels if "-" in label})


def empty_taxonomy(labels: Sequence[str]) -> dict:
    return {"format_version": FORMAT_VERSION, "name": EMPTY_NAME, "version": "0",
            "types": [{"name": t, "zh": "", "en": ""} for t in label_types(labels)], "nodes": []}


def shipped_taxonomy(asked: str | None, carried: Path | None, labels: Sequence[str]) -> ShippedTaxonomy:
    """``asked``: a taxonomy file given explicitly; ``carried``: the checkpoint's (see model/train.py)."""
    if not asked and carried is None:
        data = empty_taxonomy(labels)
        content = json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8")
        return ShippedTaxonomy(content, "empty", None, data["name"], data["version"])
    path = Path(asked) if asked else Path(carried)
    if not path.is_file():
        raise ExportError(f"{path}: no such taxonomy file")
    try:
        taxonomy = Taxonomy.load(path)  # a bundle never ships a taxonomy the worker would refuse
    except TaxonomyError as err:
        raise ExportError(str(err)) from None
    return ShippedTaxonomy(path.read_bytes(), "asked" if asked else "checkpoint", str(path), taxonomy.name,
                           taxonomy.version)
