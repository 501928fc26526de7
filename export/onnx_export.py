"""Checkpoint -> model bundle: ONNX emissions graph, CRF parameters, parity gate, int8/fp16.

An export is done when parity passes: fp32 emissions within ``atol`` of PyTorch and the same
decoded tags on the held-out texts. Otherwise nothing is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from stream.tagging.bundle import BundleError, file_hashes, write_manifest
from stream.tagging.manifest import FORMAT_VERSION, MODEL_FILES, Manifest
from model.data import Example
from model.metrics import entity_scores
from model.train import Checkpoint, load_checkpoint, load_examples, predict
from stream.tagging.crf import CrfParams
from stream.tagging.decode import plan_batches
from stream.tagging.lexicon import LEXICON_FILE
from stream.tagging.profile import profile
from stream.tagging.taxonomy import Taxonomy, TaxonomyError
from stream.tagging.spans import Span
from stream.tagging.tagger import Tagger

DEMO_TAXONOMY = Path(__file__).resolve().parent.parent / "model" / "resources" / "demo_taxonomy.json"
MIN_PARITY_TEXTS = 200


class ExportError(RuntimeError):
    """The export did not pass its gate; nothing was written."""


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: str
    out: str
    held_out: tuple[str, ...] = ()      # default: the checkpoint's dev file
    taxonomy: str | None = None         # default: the demo taxonomy
    int8: bool = False
    fp16: bool = False
    opset: int = 17
    atol: float = 1e-4
    max_parity_texts: int = 1000
    version: str | None = None
    force: bool = False


def export_onnx(model: torch.nn.Module, path: Path, opset: int) -> None:
    """The emission graph; a model with lexicon features takes them as a third input."""
    model.eval()
    ids = torch.ones((2, 12), dtype=torch.long)
    mask = torch.ones((2, 12), dtype=torch.long)
    args, names = (ids, mask), ["input_ids", "attention_mask"]
    width = getattr(model, "lexicon_width", 0)
    if width:
        args, names = (ids, mask, torch.zeros((2, 12, width))), [*names, "lexicon"]
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "emissions"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, args, str(path), input_names=names, output_names=["emissions"],
                          opset_version=opset, dynamo=False, dynamic_axes=axes)


def quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("root").setLevel(logging.ERROR)  # the quantizer warns about pre-processing on every call
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def convert_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # Inputs and outputs stay int64/float32 so callers do not care which variant runs.
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def emission_parity(checkpoint: Checkpoint, tagger: Tagger, texts: Sequence[str], batch_size: int = 32) -> float:
    """Largest absolute emission difference between PyTorch and ONNX Runtime over real tokens,
    both fed by the serving tagger's encoder (its lexicon includes the bundle's taxonomy)."""
    encoder = tagger.encoder
    windows = [w for u in encoder.units(texts) for w in encoder.windows(u)]
    worst = 0.0
    for batch_ids in plan_batches(windows, batch_size):
        batch = encoder.pad([windows[i] for i in batch_ids])
        lexicon = None if batch.lexicon is None else torch.from_numpy(batch.lexicon)
        with torch.no_grad():
            reference = checkpoint.model(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask),
                                         lexicon).numpy()
        got = tagger.emissions(batch)
        real = batch.attention_mask.astype(bool)
        worst = max(worst, float(np.abs(reference - got)[real].max()))
    return worst


def _spans(tagged) -> list[list[Span]]:
    return [[Span(t.start, t.end, t.type) for t in spans] for spans in tagged]


def export_bundle(config: ExportConfig, log: Callable[[str], None] = print) -> Path:
    checkpoint = load_checkpoint(config.checkpoint)
    held_out_paths = config.held_out or ((checkpoint.meta.get("config") or {}).get("dev"),)
    if not held_out_paths or not held_out_paths[0]:
        raise ExportError("no held-out data: pass --held-out (the checkpoint has no dev file recorded)")
    held_out: list[Example] = load_examples(held_out_paths)[:config.max_parity_texts]
    if len(held_out) < MIN_PARITY_TEXTS:
        raise ExportError(f"parity needs at least {MIN_PARITY_TEXTS} held-out texts, "
                          f"{', '.join(held_out_paths)} has {len(held_out)}")
    out = Path(config.out)
    if out.exists() and not config.force:
        raise ExportError(f"{out} already exists (use --force to replace it)")
    taxonomy = Path(config.taxonomy) if config.taxonomy else DEMO_TAXONOMY
    if not taxonomy.is_file():
        raise ExportError(f"{taxonomy}: no such taxonomy file")
    try:
        Taxonomy.load(taxonomy)  # a bundle never ships a taxonomy the worker would refuse
    except TaxonomyError as err:
        raise ExportError(str(err)) from None

    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        export_onnx(checkpoint.model, staging / MODEL_FILES["fp32"], config.opset)
        crf = checkpoint.model.crf
        CrfParams(crf.transitions.detach().numpy(), crf.start_transitions.detach().numpy(),
                  crf.end_transitions.detach().numpy()).save_npz(staging / "crf.npz")
        shutil.copyfile(checkpoint.path / "tokenizer.json", staging / "tokenizer.json")
        shutil.copyfile(taxonomy, staging / "taxonomy.json")
        if checkpoint.encoder.lexicon is not None:
            shutil.copyfile(checkpoint.path / LEXICON_FILE, staging / LEXICON_FILE)
        (staging / "reference.json").write_text("{}", encoding="utf-8")
        if config.int8:
            quantize_int8(staging / MODEL_FILES["fp32"], staging / MODEL_FILES["int8"])
        if config.fp16:
            convert_fp16(staging / MODEL_FILES["fp32"], staging / MODEL_FILES["fp16"])

        meta = checkpoint.meta
        version = config.version or datetime.now(timezone.utc).strftime("%Y%m%d.%H%M%S")
        manifest = Manifest(
            format_version=FORMAT_VERSION, name=meta.get("name", "tagstream-tagger"), version=version,
            labels=checkpoint.labels, max_length=meta["max_length"], stride=meta["stride"],
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            training_data_sha256=meta.get("training_data_sha256", ""), files=file_hashes(staging),
            source={"checkpoint": str(checkpoint.path), "base_model": meta.get("base_model"),
                    "best_epoch": meta.get("best_epoch"), "train_files": meta.get("train_files")})
        write_manifest(staging, manifest)

        texts = [e.text for e in held_out]
        gold = [e.spans for e in held_out]
        log(f"parity: {len(texts)} held-out texts")
        fp32 = Tagger.load(staging, variant="fp32", device="cpu")
        torch_spans = predict(checkpoint.model, fp32.encoder, checkpoint.labels, held_out)
        worst = emission_parity(checkpoint, fp32, texts)
        tagged = fp32.tag_texts(texts)
        onnx_spans = _spans(tagged)
        mismatched = [held_out[i].id for i in range(len(texts)) if onnx_spans[i] != torch_spans[i]]
        parity = {"texts": len(texts), "atol": config.atol, "max_abs_emission_diff": worst,
                  "decoded_mismatches": len(mismatched), "mismatch_examples": mismatched[:5],
                  "passed": worst <= config.atol and not mismatched}
        metrics = {"torch": entity_scores(gold, torch_spans).to_json(),
                   "fp32": entity_scores(gold, onnx_spans).to_json()}
        f1_fp32 = metrics["fp32"]["micro"]["f1"]
        for variant in ("int8", "fp16"):
            if getattr(config, variant):
                spans = _spans(Tagger.load(staging, variant=variant, device="cpu").tag_texts(texts))
                metrics[variant] = entity_scores(gold, spans).to_json()
                parity[f"{variant}_f1_change"] = round(metrics[variant]["micro"]["f1"] - f1_fp32, 6)
        log(f"parity: max |emission diff| {worst:.2e} (atol {config.atol}), decoded mismatches {len(mismatched)}; "
            f"held-out micro-F1 fp32 {f1_fp32:.4f}"
            + "".join(f", {v} {parity[f'{v}_f1_change']:+.4f}" for v in ("int8", "fp16") if f"{v}_f1_change" in parity))
        if not parity["passed"]:
            raise ExportError(f"parity failed: max |emission diff| {worst:.2e} (atol {config.atol}), "
                              f"{len(mismatched)} texts decode differently (e.g. {mismatched[:3]}); bundle not written")

        reference = profile(fp32.encoder.units(texts), tagged)
        (staging / "reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False), encoding="utf-8")
        manifest = Manifest(**{**manifest.to_json(), "files": file_hashes(staging), "metrics": metrics,
                               "parity": parity})
        write_manifest(staging, manifest)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


__all__ = ["ExportConfig", "ExportError", "export_bundle", "BundleError"]
