"""The parity gate: the exported graph gives PyTorch's emissions (within atol) and the same decoded
spans on held-out texts; its report goes into the bundle's manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnxruntime as ort
import torch

from model.data import Example
from model.metrics import entity_scores
from model.train import Checkpoint, predict
from stream.tagging.bundle import Bundle
from stream.tagging.decode import plan_batches
from stream.tagging.manifest import MODEL_FILES, Manifest
from stream.tagging.spans import Span, TaggedSpan, entity_types, unit_tags
from stream.tagging.tagger import CPU, Tagger
from stream.tagging.tokenization import gather_units


def staged_tagger(root: Path, manifest: Manifest, variant: str = "fp32") -> Tagger:
    """The serving tagger over a bundle still being written: its manifest is held in memory,
    because the one on disk is written once, after parity passed."""
    session = ort.InferenceSession(str(root / MODEL_FILES[variant]), providers=[CPU])
    return Tagger(Bundle(root, manifest), session, variant, batch_size=64)


def emission_parity(checkpoint: Checkpoint, tagger: Tagger, texts: Sequence[str], batch_size: int = 32) -> float:
    """Largest absolute emission difference between PyTorch and ONNX Runtime over real tokens,
    both fed by the serving tagger's encoder (its lexicon includes the bundle's taxonomy)."""
    encoder = tagger.encoder
    windows = [w for u in encoder.units(texts) for w in encoder.windows(u)]
    worst = 0.0
    checkpoint.model.eval()
    for batch_ids in plan_batches(windows, batch_size):
        batch = encoder.pad([windows[i] for i in batch_ids])
        lexicon = None if batch.lexicon is None else torch.from_numpy(batch.lexicon)
        with torch.no_grad():
            # shape: (batch, seq, tags)
            reference = checkpoint.model(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask),
                                         lexicon).numpy()
        got = tagger.emissions(batch)
        real = batch.attention_mask.astype(bool)
        worst = max(worst, float(np.abs(reference - got)[real].max()))
    return worst


def spans_of(tagged: Sequence[Sequence[TaggedSpan]]) -> list[list[Span]]:
    return [[Span(t.start, t.end, t.type) for t in spans] for spans in tagged]


def _numerical_tie(tagger: Tagger, text: str, ours: Sequence[Span], theirs: Sequence[Span], delta: float) -> bool:
    """Whether two decodings of one text are equally good up to the emission differences measured.

    PyTorch's path is best under its emissions, ONNX Runtime's under its own, and no emission
    differs by more than ``delta``; so if the two paths are a true numerical tie, the ONNX-side score
    of PyTorch's path is at most ``2 * units * delta`` below that of ONNX Runtime's. A larger gap is
    a real defect. Texts longer than one window are never excused."""
    encoder = tagger.encoder
    units = encoder.units([text])[0]
    windows = encoder.windows(units)
    if len(windows) != 1 or not len(units):
        return False
    batch = encoder.pad(windows)
    # shape: (units, tags)
    emissions = gather_units(tagger.emissions(batch), batch.unit_positions)[0][:len(units)]
    crf, index = tagger.crf, {label: i for i, label in enumerate(tagger.labels)}

    def score(spans: Sequence[Span]) -> float | None:
        tags, _ = unit_tags(units.spans, spans)
        if any(t not in index for t in tags):
            return None
        ids = np.array([index[t] for t in tags])
        return float(crf.start[ids[0]] + emissions[np.arange(len(ids)), ids].sum()
                     + crf.transitions[ids[:-1], ids[1:]].sum() + crf.end[ids[-1]])

    best, other = score(ours), score(theirs)
    return best is not None and other is not None and best - other <= 2 * len(units) * delta + 1e-6


@dataclass(frozen=True)
class ParityResult:
    report: dict                        # the manifest's parity report
    metrics: dict                       # held-out entity scores: torch, fp32 and each other variant
    tagged: list[list[TaggedSpan]]      # the fp32 graph's tags of the held-out texts

    @property
    def passed(self) -> bool:
        return self.report["passed"]

    def summary(self) -> str:
        r = self.report
        changes = "".join(f", {v} {r[f'{v}_f1_change']:+.4f}" for v in MODEL_FILES if f"{v}_f1_change" in r)
        return (f"parity: max |emission diff| {r['max_abs_emission_diff']:.2e} (atol {r['atol']}), "
                f"decoded mismatches {r['decoded_mismatches']} (numerical ties {r['numerical_ties']}); "
                f"held-out micro-F1 fp32 "
                f"{self.metrics['fp32']['micro']['f1']:.4f}{changes}")

    def failure(self) -> str:
        r = self.report
        return (f"parity failed: max |emission diff| {r['max_abs_emission_diff']:.2e} (atol {r['atol']}), "
                f"{r['decoded_mismatches']} texts decode differently (e.g. {r['mismatch_examples'][:3]}); "
                f"bundle not written")


def check_parity(checkpoint: Checkpoint, fp32: Tagger, held_out: Sequence[Example], atol: float,
                 variants: Mapping[str, Tagger] | None = None) -> ParityResult:
    """Compare the fp32 graph with PyTorch on ``held_out``; score the other variants against it.
    Only fp32 gates: quantised variants are lossy by design, their F1 change is reported."""
    texts = [e.text for e in held_out]
    gold = [e.spans for e in held_out]
    torch_spans = predict(checkpoint.model, fp32.encoder, checkpoint.labels, held_out)
    worst = emission_parity(checkpoint, fp32, texts)
    tagged = fp32.tag_texts(texts)
    onnx_spans = spans_of(tagged)
    differ = [i for i, (ours, theirs) in enumerate(zip(onnx_spans, torch_spans)) if ours != theirs]
    ties = [i for i in differ if _numerical_tie(fp32, texts[i], onnx_spans[i], torch_spans[i], worst)]
    mismatched = [held_out[i].id for i in differ if i not in ties]
    report = {"texts": len(texts), "atol": atol, "max_abs_emission_diff": worst,
              "decoded_mismatches": len(mismatched), "mismatch_examples": mismatched[:5],
              "numerical_ties": len(ties), "tie_examples": [held_out[i].id for i in ties[:5]],
              "passed": worst <= atol and not mismatched}
    known = entity_types(checkpoint.labels)
    metrics = {"torch": entity_scores(gold, torch_spans, known).to_json(),
               "fp32": entity_scores(gold, onnx_spans, known).to_json()}
    for variant, tagger in (variants or {}).items():
        metrics[variant] = entity_scores(gold, spans_of(tagger.tag_texts(texts)), known).to_json()
        report[f"{variant}_f1_change"] = round(metrics[variant]["micro"]["f1"] - metrics["fp32"]["micro"]["f1"], 6)
    return ParityResult(report, metrics, tagged)
