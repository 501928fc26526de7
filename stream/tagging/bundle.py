"""Reading, verifying and publishing model bundles. Torch-free: the serving tagger uses it.

A model store is a directory of bundles plus a ``CURRENT`` pointer file naming the live one;
``HISTORY`` lists earlier pointers for rollback. The pointer is replaced atomically, so a
worker watching it sees either the old or the new bundle, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from stream.tagging.manifest import FORMAT_VERSION, MANIFEST, REQUIRED_FILES, Manifest

POINTER = "CURRENT"
HISTORY = "HISTORY"


class BundleError(ValueError):
    """A bundle that must not be served; the message says which file and what is wrong."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def model_id(self) -> str:
        return f"{self.manifest.name}:{self.manifest.version}"


def resolve(path: str | Path) -> Path:
    """A bundle directory, or a model store whose CURRENT pointer names one."""
    path = Path(path)
    pointer = path / POINTER
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if not name:
            raise BundleError(f"{pointer}: empty pointer")
        target = (path / name).resolve()
        if not target.is_dir():
            raise BundleError(f"{pointer}: points at {name}, which is not a directory")
        return target
    return path


def read_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Load and check a bundle: manifest, format version, required files and every sha256."""
    root = resolve(path)
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{root}: missing file {MANIFEST}")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{manifest_path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{manifest_path}: expected a JSON object")
    if data.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{manifest_path}: unknown format version {data.get('format_version')!r} "
                          f"(this tagstream reads version {FORMAT_VERSION})")
    try:
        manifest = Manifest.from_json(data)
    except (TypeError, ValueError) as err:
        raise BundleError(f"{manifest_path}: {err}") from None
    for name in REQUIRED_FILES:
        if name not in manifest.files:
            raise BundleError(f"{manifest_path}: the manifest does not list required file {name}")
    if verify:
        for name, expected in sorted(manifest.files.items()):
            target = root / name
            if not target.is_file():
                raise BundleError(f"{root}: missing file {name}")
            actual = sha256_file(target)
            if actual != expected:
                raise BundleError(f"{target}: sha256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…): "
                                  f"the file was changed or corrupted after export")
    return Bundle(root, manifest)


def write_manifest(root: Path, manifest: Manifest) -> None:
    (root / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=1, ensure_ascii=False), encoding="utf-8")


def file_hashes(root: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(root.iterdir()) if p.is_file() and p.name != MANIFEST}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def current(store: str | Path) -> str | None:
    pointer = Path(store) / POINTER
    return pointer.read_text(encoding="utf-8").strip() if pointer.is_file() else None


def promote(store: str | Path, bundle_name: str) -> None:
    """Point the store at ``bundle_name`` (a sub-directory), remembering the previous one."""
    store = Path(store)
    read_bundle(store / bundle_name)  # never point at something that would be refused
    previous = current(store)
    if previous and previous != bundle_name:
        with (store / HISTORY).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"bundle": previous, "replaced_at": _now()}) + "\n")
    _atomic_write(store / POINTER, bundle_name + "\n")


def rollback(store: str | Path) -> tuple[str, str]:
    """Return the store to the bundle live before the current one; (from, to)."""
    store = Path(store)
    history = store / HISTORY
    entries = [json.loads(line) for line in history.read_text(encoding="utf-8").splitlines()
               if line.strip()] if history.is_file() else []
    now = current(store)
    while entries:
        previous = entries.pop()["bundle"]
        if previous != now and (store / previous).is_dir():
            read_bundle(store / previous)
            _atomic_write(store / POINTER, previous + "\n")
            history.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
            return now or "", previous
    raise BundleError(f"{store}: no earlier bundle to roll back to")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
