"""From new-tag candidates to a taxonomy patch a curator reviews, and from an accepted patch to a
new taxonomy file. Pure functions; the CLI reads the topic and writes the files."""

from __future__ import annotations

import re
import time
from typing import Iterable, Mapping

from stream.tagging.taxonomy import Taxonomy, TaxonomyError
from stream.tagging.text import compact_key

PATCH_FORMAT = "tagstream-taxonomy-patch/1"
_LATIN_ID = re.compile(r"[^a-z0-9]+")


def _slug(text: str) -> str:
    latin = _LATIN_ID.sub("-", compact_key(text)).strip("-")
    return latin or "".join(ch for ch in text if not ch.isspace())


def suggest(records: Iterable[Mapping], taxonomy: Taxonomy, *, min_count: int = 1) -> dict:
    """Merge candidate records (one per value per window) into a patch of proposed nodes, most
    frequent first; values the taxonomy already knows (added since) are left out."""
    merged: dict[tuple[str, str], dict] = {}
    for i, record in enumerate(records):
        _check_candidate(record, i)
        key = (record["type"], record["key"])
        entry = merged.setdefault(key, {"type": record["type"], "texts": {}, "count": 0, "products": 0,
                                        "windows": 0, "examples": []})
        entry["texts"][record["text"]] = entry["texts"].get(record["text"], 0) + record["count"]
        entry["count"] += record["count"]
        entry["products"] += record["products"]
        entry["windows"] += 1
        for example in record.get("examples", []):
            if example not in entry["examples"] and len(entry["examples"]) < 5:
                entry["examples"].append(example)
    add, used_ids = [], set(taxonomy.nodes)
    for (tag_type, key), entry in sorted(merged.items(), key=lambda kv: (-kv[1]["count"], kv[0])):
        text = max(entry["texts"].items(), key=lambda kv: kv[1])[0]
        if entry["count"] < min_count or taxonomy.lookup(tag_type, text) is not None:
            continue
        node_id = base = f"{tag_type}.{_slug(text)}"
        n = 2
        while node_id in used_ids:
            node_id, n = f"{base}-{n}", n + 1
        used_ids.add(node_id)
        latin = text.isascii()
        add.append({"accept": True, "id": node_id, "type": tag_type, "zh": "" if latin else text,
                    "en": text if latin else "", "synonyms": [], "parent": None,
                    "evidence": {"count": entry["count"], "products": entry["products"], "windows": entry["windows"],
                                 "examples": entry["examples"]}})
    return {"format": PATCH_FORMAT, "taxonomy": {"name": taxonomy.name, "version": taxonomy.version},
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "review": "set accept to false to drop an entry; give synonym_of: <node id> to add the text "
                      "as a synonym of an existing node instead; edit names, synonyms and parent freely",
            "add": add}


_CANDIDATE_FIELDS = {"type": str, "key": str, "text": str, "count": int, "products": int}


def _check_candidate(record: object, i: int) -> None:
    """A record that is not a candidate (a drift report, an enriched product) is refused by name."""
    if not isinstance(record, Mapping):
        raise ValueError(f"record {i + 1} is not a JSON object, so not a taxonomy candidate")
    for name, kind in _CANDIDATE_FIELDS.items():
        if not isinstance(record.get(name), kind):
            got = "missing" if name not in record else f"a {type(record[name]).__name__}"
            raise ValueError(f"record {i + 1} is not a taxonomy candidate: {name!r} is {got}, expected a "
                             f"{kind.__name__} (candidates come from the tagstream.taxonomy-candidates topic)")


def apply(taxonomy: Taxonomy, patch: Mapping, *, version: str | None = None) -> tuple[Taxonomy, dict]:
    """A new taxonomy with the patch's accepted entries; (taxonomy, what was done)."""
    if patch.get("format") != PATCH_FORMAT:
        raise TaxonomyError(f"not a taxonomy patch (format {patch.get('format')!r}, expected {PATCH_FORMAT!r})")
    data = taxonomy.to_dict()
    by_id = {node["id"]: node for node in data["nodes"]}
    done = {"added": [], "synonyms": [], "skipped": []}
    for i, entry in enumerate(patch.get("add", [])):
        if not isinstance(entry, dict):
            raise TaxonomyError(f"patch add[{i}]: must be an object")
        if not entry.get("accept", True):
            done["skipped"].append(entry.get("id"))
            continue
        target = entry.get("synonym_of")
        if target:
            if target not in by_id:
                raise TaxonomyError(f"patch add[{i}]: synonym_of {target!r} is not a node of {taxonomy.name}")
            text = entry.get("en") or entry.get("zh")
            by_id[target]["synonyms"].append(text)
            done["synonyms"].append(f"{target} += {text}")
            continue
        node = {k: entry.get(k) for k in ("id", "type", "zh", "en", "synonyms", "parent")}
        node["synonyms"] = node["synonyms"] or []
        data["nodes"].append(node)
        by_id[node["id"]] = node
        done["added"].append(node["id"])
    data["version"] = version or _next_version(taxonomy.version)
    return Taxonomy.from_dict(data, source="patched taxonomy"), done


def _next_version(version: str) -> str:
    return str(int(version) + 1) if version.isdigit() else f"{version}.1"
