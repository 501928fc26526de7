"""Checkpoint -> model bundle: export the graph, quantise, check parity, then write the drift
reference and the manifest once and move the finished bundle into place.

An export is done when parity passes: fp32 emissions within ``atol`` of PyTorch and the same
decoded tags on the held-out texts. Otherwise nothing is written.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

from export.config import MIN_PARITY_TEXTS, ExportConfig, ExportError
from export.graph import convert_fp16, export_onnx
from export.parity import check_parity, staged_tagger
from export.quantize import calibration_feeds, quantize_int8, quantize_int8_static
from export.taxonomy import ShippedTaxonomy, shipped_taxonomy
from model.data import DataError, Example
from model.train import Checkpoint, load_checkpoint, load_examples
from stream.tagging.bundle import file_hashes, write_manifest
from stream.tagging.crf import CrfParams
from stream.tagging.lexicon import LEXICON_FILE
from stream.tagging.manifest import FORMAT_VERSION, MODEL_FILES, Manifest
from stream.tagging.profile import profile
from stream.tagging.spans import TaggedSpan
from stream.tagging.tagger import Tagger

REFERENCE = "reference.json"


def held_out_examples(config: ExportConfig, checkpoint: Checkpoint) -> list[Example]:
    """The parity texts: those given, else the checkpoint's dev file; at least MIN_PARITY_TEXTS."""
    paths = config.held_out or ((checkpoint.meta.get("config") or {}).get("dev"),)
    if not paths or not paths[0]:
        raise ExportError("no held-out data: pass --held-out (the checkpoint has no dev file recorded)")
    held_out = load_examples(paths)[:config.max_parity_texts]
    if len(held_out) < MIN_PARITY_TEXTS:
        raise ExportError(f"parity needs at least {MIN_PARITY_TEXTS} held-out texts, "
                          f"{', '.join(paths)} has {len(held_out)}")
    return held_out


def write_crf(checkpoint: Checkpoint, path: Path) -> None:
    crf = checkpoint.model.crf
    CrfParams(crf.transitions.detach().numpy(), crf.start_transitions.detach().numpy(),
              crf.end_transitions.detach().numpy()).save_npz(path)


def stage_files(config: ExportConfig, checkpoint: Checkpoint, taxonomy: ShippedTaxonomy, root: Path) -> None:
    """Every file of the bundle but the drift reference and the manifest."""
    export_onnx(checkpoint.model, root / MODEL_FILES["fp32"], config.opset)
    write_crf(checkpoint, root / "crf.npz")
    shutil.copyfile(checkpoint.path / "tokenizer.json", root / "tokenizer.json")
    (root / "taxonomy.json").write_bytes(taxonomy.content)
    if checkpoint.encoder.lexicon is not None:
        shutil.copyfile(checkpoint.path / LEXICON_FILE, root / LEXICON_FILE)
    if config.int8 and config.int8_dynamic:
        quantize_int8(root / MODEL_FILES["fp32"], root / MODEL_FILES["int8"])
    if config.fp16:
        convert_fp16(root / MODEL_FILES["fp32"], root / MODEL_FILES["fp16"])


def draft_manifest(config: ExportConfig, checkpoint: Checkpoint, taxonomy: ShippedTaxonomy, root: Path) -> Manifest:
    """The manifest of the staged files, before parity adds its report, metrics and the reference."""
    meta = checkpoint.meta
    now = datetime.now(timezone.utc)
    return Manifest(
        format_version=FORMAT_VERSION, name=meta.get("name", "tagstream-tagger"),
        version=config.version or now.strftime("%Y%m%d.%H%M%S"), labels=checkpoint.labels,
        max_length=meta["max_length"], stride=meta["stride"], units=checkpoint.encoder.unit_mode,
        created_at=now.isoformat(timespec="seconds"),
        training_data_sha256=meta.get("training_data_sha256", ""), files=file_hashes(root),
        source={"checkpoint": str(checkpoint.path), "base_model": meta.get("base_model"),
                "best_epoch": meta.get("best_epoch"), "train_files": meta.get("train_files"),
                "taxonomy": taxonomy.source(), **({"ensemble": meta["ensemble"]} if "ensemble" in meta else {}),
                **({"int8": int8_form(config)} if config.int8 else {})})


def int8_form(config: ExportConfig) -> str:
    """How the bundle's int8 model was made, for its manifest."""
    if config.int8_dynamic:
        return "dynamic"
    return f"static, SmoothQuant alpha {config.int8_smoothing}" if config.int8_smoothing else "static"


def write_reference(root: Path, tagger: Tagger, texts: Sequence[str], tagged: Sequence[Sequence[TaggedSpan]]) -> None:
    """The drift reference: tag statistics of the held-out texts as this bundle tags them."""
    reference = profile(tagger.encoder.units(texts), tagged)
    (root / REFERENCE).write_text(json.dumps(reference, indent=1, ensure_ascii=False), encoding="utf-8")


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A staging folder beside ``out`` that replaces it when the block succeeds and is removed
    when it fails, so a worker never sees half a bundle."""
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def exported_checkpoint(config: ExportConfig) -> Checkpoint:
    """The checkpoint to export; with ``members``, the seed ensemble of it and them."""
    checkpoint = load_checkpoint(config.checkpoint)
    if not config.members:
        return checkpoint
    from model.ensemble import ensemble_checkpoint

    try:
        return ensemble_checkpoint([checkpoint, *(load_checkpoint(m) for m in config.members)])
    except DataError as err:
        raise ExportError(str(err)) from None


def export_bundle(config: ExportConfig, log: Callable[[str], None] = print) -> Path:
    checkpoint = exported_checkpoint(config)
    held_out = held_out_examples(config, checkpoint)
    out = Path(config.out)
    if out.exists() and not config.force:
        raise ExportError(f"{out} already exists (use --force to replace it)")
    taxonomy = shipped_taxonomy(config.taxonomy, checkpoint.taxonomy, checkpoint.labels)
    log(f"taxonomy: {taxonomy.describe()}")
    with staged(out) as root:
        stage_files(config, checkpoint, taxonomy, root)
        manifest = draft_manifest(config, checkpoint, taxonomy, root)
        log(f"parity: {len(held_out)} held-out texts")
        fp32 = staged_tagger(root, manifest)
        if config.int8 and not config.int8_dynamic:
            log(f"int8: calibrating activation scales on the held-out texts (smoothing {config.int8_smoothing})")
            quantize_int8_static(root / MODEL_FILES["fp32"], root / MODEL_FILES["int8"],
                                 calibration_feeds(fp32.encoder, [e.text for e in held_out]), config.int8_smoothing)
            manifest = replace(manifest, files=file_hashes(root))
        others = {v: staged_tagger(root, manifest, v) for v in ("int8", "fp16") if getattr(config, v)}
        result = check_parity(checkpoint, fp32, held_out, config.atol, others)
        log(result.summary())
        if not result.passed:
            raise ExportError(result.failure())
        write_reference(root, fp32, [e.text for e in held_out], result.tagged)
        write_manifest(root, replace(manifest, files=file_hashes(root), metrics=result.metrics,
                                     parity=result.report))
    return out
