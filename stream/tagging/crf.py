"""Numpy-only linear-chain CRF inference matching ``torchcrf.CRF(batch_first=True)``.

Serving installs have no PyTorch, so this module must never import torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import Sequence

import numpy as np

_NPZ_KEYS = ("transitions", "start_transitions", "end_transitions")


@dataclass(frozen=True)
class CrfParams:
    transitions: np.ndarray  # (tags, tags); [i, j] scores tag i -> tag j
    start: np.ndarray  # (tags,)
    end: np.ndarray  # (tags,)

    def __post_init__(self) -> None:
        for name in ("transitions", "start", "end"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float32))
        n = self.start.shape[0] if self.start.ndim == 1 else -1
        expected = {"transitions": (n, n), "start": (n,), "end": (n,)}
        for name, shape in expected.items():
            actual = getattr(self, name).shape
            if n < 1 or actual != shape:
                raise ValueError(f"{name}: expected shape {shape} (tags={n}), got {actual}")

    @classmethod
    def from_npz(cls, path: str | PathLike) -> "CrfParams":
        with np.load(path) as data:
            missing = [k for k in _NPZ_KEYS if k not in data.files]
            if missing:
                raise ValueError(f"{path}: expected keys {list(_NPZ_KEYS)}, got {sorted(data.files)}")
            return cls(data["transitions"], data["start_transitions"], data["end_transitions"])

    def save_npz(self, path: str | PathLike) -> None:
        np.savez(path, transitions=self.transitions,
                 start_transitions=self.start, end_transitions=self.end)

    @property
    def num_tags(self) -> int:
        return int(self.start.shape[0])


def _validate(emissions: np.ndarray, mask: np.ndarray, crf: CrfParams) -> tuple[np.ndarray, np.ndarray]:
    emissions = np.asarray(emissions, dtype=np.float64)
    mask = np.asarray(mask).astype(bool)
    if emissions.ndim != 3 or emissions.shape[2] != crf.num_tags:
        raise ValueError(f"emissions: expected shape (batch, seq, {crf.num_tags}), got {emissions.shape}")
    if mask.shape != emissions.shape[:2]:
        raise ValueError(f"mask: expected shape {emissions.shape[:2]}, got {mask.shape}")
    if emissions.shape[1] > 1 and np.any(mask[:, 1:] & ~mask[:, :-1]):
        raise ValueError("mask: expected left-aligned runs of True, got a True after a False")
    return emissions, mask


def viterbi_decode(emissions: np.ndarray, mask: np.ndarray, crf: CrfParams) -> list[list[int]]:
    """Best tag path per item; an item whose mask is all False decodes to []."""
    emissions, mask = _validate(emissions, mask, crf)
    batch, seq, _ = emissions.shape
    lengths = mask.sum(axis=1)
    if seq == 0:
        return [[] for _ in range(batch)]
    trans = crf.transitions.astype(np.float64)
    # shape: (batch, tags)
    score = crf.start + emissions[:, 0]
    history = []
    for t in range(1, seq):
        # The emission at t is the same for every previous tag, so it is added after the max:
        # one (batch, tags, tags) sum and one argmax per step instead of two sums, argmax and max.
        # shape: (batch, prev_tags, tags)
        nxt = score[:, :, None] + trans
        # shape: (batch, tags)
        best = nxt.argmax(axis=1)
        history.append(best)
        step = np.take_along_axis(nxt, best[:, None, :], axis=1)[:, 0] + emissions[:, t]
        score = np.where(mask[:, t, None], step, score)
    # shape: (batch,)
    cur = (score + crf.end).argmax(axis=1)
    last = lengths - 1
    paths = np.zeros((batch, seq), dtype=np.int64)
    rows = np.arange(batch)
    # Positions past an item's end hold its best last tag until t reaches the end.
    for t in range(seq - 1, -1, -1):
        paths[:, t] = cur
        if t > 0:
            cur = np.where(t <= last, history[t - 1][rows, cur], cur)
    return [paths[b, : lengths[b]].tolist() for b in range(batch)]


def _forward_backward(emissions: np.ndarray, mask: np.ndarray, crf: CrfParams):
    """Scaled forward-backward in the exp domain: each step is a (batch, tags) x (tags, tags)
    matrix product, renormalised, instead of a (batch, tags, tags) logsumexp. Exponents are
    shifted by their maxima first, so nothing overflows; the shifts go back into log Z."""
    batch, seq, tags = emissions.shape
    trans = crf.transitions.astype(np.float64)
    start, end = crf.start.astype(np.float64), crf.end.astype(np.float64)
    t_shift, s_shift, e_shift = trans.max(), start.max(), end.max()
    # shape: (tags, tags)
    t_exp = np.exp(trans - t_shift)
    s_exp, e_exp = np.exp(start - s_shift), np.exp(end - e_shift)
    # shape: (batch, seq, 1)
    em_shift = emissions.max(axis=2, keepdims=True)
    # shape: (batch, seq, tags)
    em_exp = np.exp(emissions - em_shift)

    def normalise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        total = x.sum(axis=1, keepdims=True)
        total = np.where(total > 0, total, 1.0)  # an all-underflow row stays 0 rather than nan
        return x / total, total[:, 0]

    alphas = np.zeros((batch, seq, tags))
    betas = np.zeros((batch, seq, tags))
    alpha, scale = normalise(s_exp * em_exp[:, 0])
    # shape: (batch,)
    log_scale = np.log(scale) + s_shift + em_shift[:, 0, 0]
    alphas[:, 0] = alpha
    for t in range(1, seq):
        nxt, scale = normalise((alpha @ t_exp) * em_exp[:, t])
        live = mask[:, t]
        alpha = np.where(live[:, None], nxt, alpha)
        log_scale += np.where(live, np.log(scale) + t_shift + em_shift[:, t, 0], 0.0)
        alphas[:, t] = alpha
    end_row, _ = normalise(np.broadcast_to(e_exp, (batch, tags)).copy())
    beta = end_row
    betas[:, seq - 1] = beta
    for t in range(seq - 2, -1, -1):
        nxt, _ = normalise((em_exp[:, t + 1] * beta) @ t_exp.T)
        beta = np.where(mask[:, t + 1, None], nxt, end_row)
        betas[:, t] = beta
    # An empty item has exactly one (empty) path with score 0, so log Z = 0.
    log_z = np.where(mask[:, 0], log_scale + np.log(np.maximum((alpha * e_exp).sum(axis=1), 1e-300)) + e_shift, 0.0)
    return alphas, betas, log_z


def sequence_log_partition(emissions: np.ndarray, mask: np.ndarray, crf: CrfParams) -> np.ndarray:
    """(batch,) log of the sum over all tag paths of exp(path score)."""
    emissions, mask = _validate(emissions, mask, crf)
    if emissions.shape[1] == 0:
        return np.zeros(emissions.shape[0])
    return _forward_backward(emissions, mask, crf)[2]


def marginals(emissions: np.ndarray, mask: np.ndarray, crf: CrfParams) -> np.ndarray:
    """(batch, seq, tags) P(y_t = k | x); rows at masked positions are 0."""
    emissions, mask = _validate(emissions, mask, crf)
    if emissions.shape[1] == 0:
        return np.zeros(emissions.shape)
    alphas, betas, _ = _forward_backward(emissions, mask, crf)
    # Scaled alpha and beta are each proportional to the true ones at every position, so
    # normalising their product over tags gives the exact posterior.
    # shape: (batch, seq, tags)
    joint = alphas * betas
    total = joint.sum(axis=2, keepdims=True)
    return np.where(mask[:, :, None] & (total > 0), joint / np.where(total > 0, total, 1.0), 0.0)


def path_probabilities(marg: np.ndarray, path: Sequence[int]) -> list[float]:
    """Each position's marginal probability of its decoded tag, in [0, 1]: a span's confidence
    (``span_confidence``) is the min over its positions; serving takes it from this once per item
    instead of once per span (it tags thousands of spans a second)."""
    probs = np.asarray(marg)[np.arange(len(path)), np.asarray(path, dtype=np.int64)]
    return np.clip(probs, 0.0, 1.0).tolist()


def span_confidence(marg: np.ndarray, path: list[int], start: int, end: int) -> float:
    """Confidence in [0, 1] for the decoded span at positions [start, end) of one item.

    ``marg`` is that item's (seq, tags) marginals. We take the min, not the mean: a span is
    right only if every position is, and P(all right) <= min_t P(y_t right), so one doubtful
    boundary token is not averaged away by confident interior tokens.
    """
    marg = np.asarray(marg)
    if marg.ndim != 2:
        raise ValueError(f"marg: expected shape (seq, tags), got {marg.shape}")
    if not 0 <= start < end <= min(len(path), marg.shape[0]):
        raise ValueError(f"span: expected 0 <= start < end <= {min(len(path), marg.shape[0])}, "
                         f"got [{start}, {end})")
    return min(path_probabilities(marg[start:end], path[start:end]))
