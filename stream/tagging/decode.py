"""From texts to tagged spans around any emission scorer: bucketing, windows, merging.

The serving tagger (ONNX Runtime + numpy Viterbi) and the trainer's evaluation (PyTorch +
torchcrf) both go through `tag_texts`, so they can only differ in how a batch is scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from stream.tagging.crf import path_probabilities
from stream.tagging.spans import TaggedSpan, tag_runs
from stream.tagging.tokenization import PaddedBatch, TextEncoder, Units, Window

# Best tag-id path per row, and per-unit marginals (batch, units, tags) when the scorer has them.
ScoreFn = Callable[[PaddedBatch], tuple[list[list[int]], np.ndarray | None]]


def plan_batches(windows: Sequence[Window], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Window indices grouped into calls of similar length, so padding stays small: at most
    ``batch_size`` windows a call and, with ``max_tokens``, at most that many padded tokens (a
    longer window still gets a call of its own). On a CPU a call of 64 short titles padded to
    its longest is about half padding; calls of about 512 tokens cut that to an eighth without
    making the matrix products too small to run well (bench/inference.py)."""
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
    calls: list[list[int]] = []
    call: list[int] = []
    for i in order:
        length = len(windows[i].input_ids)      # the longest so far: the call's padded length
        if call and (len(call) >= batch_size or (max_tokens and (len(call) + 1) * length > max_tokens)):
            calls.append(call)
            call = []
        call.append(i)
    if call:
        calls.append(call)
    return calls


def merge_window_runs(windows: Sequence[Window], runs_per_window: Sequence[Sequence[tuple]]) -> list[tuple]:
    """Combine entity runs decoded per window (unit indices local to the window) into runs
    over the whole text. A run is kept by the window that owns its first unit; a run that
    overlaps one already kept (a boundary disagreement) is dropped.

    Each run is a tuple whose first two items are its unit range; extra items pass through.
    """
    merged: list[tuple] = []
    for window, runs in zip(windows, runs_per_window):
        for run in runs:
            start, end = run[0] + window.unit_start, run[1] + window.unit_start
            if window.own_start <= start < window.own_end:
                merged.append((start, end, *run[2:]))
    merged.sort(key=lambda r: (r[0], r[1]))
    kept: list[tuple] = []
    for run in merged:
        if not kept or run[0] >= kept[-1][1]:
            kept.append(run)
    return kept


@dataclass(frozen=True, slots=True)
class ScoredText:
    """One text's tags, and how unsure the CRF was at each of its units: the marginal entropy
    over tags, divided by log(tags) so 0 is certain and 1 is uniform (None unless asked for; all
    zeros without marginals), and with ``marginals`` the CRF's per-unit posteriors themselves."""

    spans: list[TaggedSpan]
    entropy: np.ndarray | None = None     # shape: (units,)
    marginals: np.ndarray | None = None   # shape: (units, tags); None unless asked for


def token_entropy(marginals: np.ndarray) -> np.ndarray:
    """(..., tags) posteriors -> (...) normalised entropy in [0, 1]."""
    tags = marginals.shape[-1]
    if tags < 2:
        return np.zeros(marginals.shape[:-1])
    p = np.clip(marginals, 1e-12, 1.0)
    return np.clip(-(marginals * np.log(p)).sum(axis=-1) / np.log(tags), 0.0, 1.0)


def score_units(encoder: TextEncoder, units: Sequence[Units], score: ScoreFn, labels: Sequence[str],
                *, batch_size: int = 64, fields: Sequence[str] | None = None, bucket: bool = True,
                entropy: bool = False, marginals: bool = False, max_tokens: int | None = None) -> list[ScoredText]:
    """Tag already-tokenised texts; ``fields`` names each text's field (default ``text``). With
    ``entropy`` (review, not serving), also each unit's entropy, from the window that owns it; with
    ``marginals`` (a teacher for weak labels), each unit's posteriors over the tags, likewise."""
    owners: list[int] = []
    windows: list[Window] = []
    for index, u in enumerate(units):
        for w in encoder.windows(u):
            owners.append(index)
            windows.append(w)
    runs: list[list[tuple]] = [[] for _ in windows]
    entropies = [np.zeros(len(u)) for u in units] if entropy else None
    posteriors: list[np.ndarray | None] = [None] * len(units)
    batches = plan_batches(windows, batch_size, max_tokens) if bucket else [
        list(range(i, min(i + batch_size, len(windows)))) for i in range(0, len(windows), batch_size)]
    for batch in batches:
        padded = encoder.pad([windows[i] for i in batch])
        paths, batch_marginals = score(padded)
        for row, i in enumerate(batch):
            tags = [labels[t] for t in paths[row]]
            marg = None if batch_marginals is None else batch_marginals[row]
            # A span's confidence: the least probable of its decoded tags (crf.span_confidence).
            probs = None if marg is None else path_probabilities(marg, paths[row])
            runs[i] = [(a, b, kind, 1.0 if probs is None else min(probs[a:b])) for a, b, kind in tag_runs(tags)]
            if marg is None or not (entropy or marginals):
                continue
            w = windows[i]
            own = slice(w.own_start - w.unit_start, w.own_end - w.unit_start)
            if entropies is not None:
                entropies[owners[i]][w.own_start:w.own_end] = token_entropy(marg[own])
            if marginals:
                if posteriors[owners[i]] is None:
                    posteriors[owners[i]] = np.zeros((len(units[owners[i]]), marg.shape[-1]), dtype=np.float32)
                posteriors[owners[i]][w.own_start:w.own_end] = marg[own]
    per_text_windows: list[list[int]] = [[] for _ in units]
    for i, owner in enumerate(owners):
        per_text_windows[owner].append(i)
    out: list[ScoredText] = []
    for index, u in enumerate(units):
        field = fields[index] if fields is not None else "text"
        members = per_text_windows[index]
        merged = merge_window_runs([windows[i] for i in members], [runs[i] for i in members])
        spans = []
        for a, b, kind, conf in merged:
            start, end = u.spans[a][0], u.spans[b - 1][1]
            spans.append(TaggedSpan(field, start, end, u.text[start:end], kind, conf))
        out.append(ScoredText(spans, entropies[index] if entropies is not None else None, posteriors[index]))
    return out


def tag_units(encoder: TextEncoder, units: Sequence[Units], score: ScoreFn, labels: Sequence[str],
              **kwargs) -> list[list[TaggedSpan]]:
    return [scored.spans for scored in score_units(encoder, units, score, labels, **kwargs)]


def tag_texts(encoder: TextEncoder, texts: Sequence[str], score: ScoreFn, labels: Sequence[str],
              **kwargs) -> list[list[TaggedSpan]]:
    return tag_units(encoder, encoder.units(texts), score, labels, **kwargs)
