"""One loaded bundle as one immutable object: encoder, ONNX session and CRF (the tagger), taxonomy
and drift reference. Its call takes products and returns typed tags; `tagstream tag`, the worker
and anything else that serves a bundle print or publish exactly what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import orjson

from stream.tagging.bundle import Bundle, BundleError, read_bundle
from stream.tagging.spans import Tag, TaggedSpan
from stream.tagging.tagger import Tagger
from stream.tagging.taxonomy import Taxonomy, TaxonomyError
from stream.tagging.text import normalise_value

FIELDS = ("title", "description")


@dataclass(frozen=True, slots=True)
class TextStats:
    """How one tagged text tokenised: what drift needs, without tokenising it again."""

    field: str
    chars: int
    tokens: int
    unknown_tokens: int


@dataclass(frozen=True, slots=True)
class ProductTags:
    """What the pipeline found in one product: its tags in reading order, and per-text statistics."""

    tags: tuple[Tag, ...]
    texts: tuple[TextStats, ...]


@dataclass(frozen=True)
class Pipeline:
    tagger: Tagger
    taxonomy: Taxonomy
    reference: Mapping

    @classmethod
    def load(cls, path: str | Path, *, variant: str = "fp32", device: str = "auto", threads: int | None = None,
             batch_size: int = 64) -> "Pipeline":
        """Verify the bundle (every hash) and load all of it, or refuse it with what is wrong. The
        taxonomy is parsed once, for the lexicon features and the tags alike."""
        bundle = read_bundle(path)
        taxonomy = _taxonomy(bundle)
        tagger = Tagger.open(bundle, variant=variant, device=device, threads=threads, batch_size=batch_size,
                             taxonomy=taxonomy)
        return cls.around(tagger, taxonomy)

    @classmethod
    def around(cls, tagger: Tagger, taxonomy: Taxonomy | None = None) -> "Pipeline":
        """A pipeline over an open tagger (its bundle's taxonomy and reference)."""
        bundle = tagger.bundle
        try:
            reference = orjson.loads(bundle.file("reference.json").read_bytes())
        except orjson.JSONDecodeError as err:
            raise BundleError(f"{bundle.file('reference.json')}: not valid JSON ({err})") from None
        return cls(tagger, taxonomy or _taxonomy(bundle), reference)

    @property
    def bundle(self) -> Bundle:
        return self.tagger.bundle

    @property
    def model(self) -> dict:
        return {"name": self.tagger.model_name, "version": self.tagger.model_version}

    @property
    def model_id(self) -> str:
        return f"{self.tagger.model_name}:{self.tagger.model_version}"

    def tag(self, span: TaggedSpan) -> Tag:
        """A span with its taxonomy node (or its normalised text when it has none)."""
        node = self.taxonomy.lookup(span.type, span.text)
        return Tag(tag=node.id if node else normalise_value(span.text), type=span.type, text=span.text,
                   field=span.field, start=span.start, end=span.end, confidence=round(span.confidence, 4),
                   in_taxonomy=node is not None, path=tuple(self.taxonomy.path(node)) if node else ())

    def __call__(self, products: Sequence[Mapping]) -> list[ProductTags]:
        """Tag the title and description of each product in one model pass."""
        texts, fields, owners = [], [], []
        for index, product in enumerate(products):
            for name in FIELDS:
                value = product.get(name)
                if value:
                    texts.append(value)
                    fields.append(name)
                    owners.append(index)
        units = self.tagger.encoder.units(texts)
        tags: list[list[Tag]] = [[] for _ in products]
        stats: list[list[TextStats]] = [[] for _ in products]
        for owner, field, u, spans in zip(owners, fields, units, self.tagger.tag_units(units, fields)):
            tags[owner].extend(self.tag(s) for s in spans)
            stats[owner].append(TextStats(field, len(u.text), len(u.token_ids), u.unknown_tokens))
        return [ProductTags(tuple(t), tuple(s)) for t, s in zip(tags, stats)]


def _taxonomy(bundle: Bundle) -> Taxonomy:
    try:
        return Taxonomy.load(bundle.file("taxonomy.json"))
    except TaxonomyError as err:
        raise BundleError(str(err)) from None
