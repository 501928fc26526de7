"""A teacher for weak labels: a tagger trained on the gold titles says, per unit of a weakly labelled
title, how likely each tag is. The partial-annotation CRF then weighs the tag sequences that agree
with the dictionary's spans by these posteriors at the unmatched units (`--weak-unmatched teacher`),
instead of reading every unmatched unit as O or as anything at all.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from model.data import DataError
from model.samples import batch_tensors
from stream.tagging.crf import CrfParams, marginals, viterbi_decode
from stream.tagging.decode import ScoreFn, score_units
from stream.tagging.tokenization import PaddedBatch

# Every tag keeps at least this posterior, so a confidently wrong teacher never rules a path out.
FLOOR = 1e-3


def marginal_scorer(model) -> ScoreFn:
    """Emissions from PyTorch; Viterbi paths and per-unit marginals from the serving CRF (numpy)."""
    crf = model.crf
    params = CrfParams(crf.transitions.detach().numpy(), crf.start_transitions.detach().numpy(),
                       crf.end_transitions.detach().numpy())

    def score(batch: PaddedBatch):
        tensors = batch_tensors(batch)
        with torch.no_grad():
            units = model.unit_emissions(tensors["input_ids"], tensors["attention_mask"], tensors["unit_positions"],
                                         tensors.get("lexicon")).numpy()
        return viterbi_decode(units, batch.unit_mask, params), marginals(units, batch.unit_mask, params)
    return score


def unit_posteriors(checkpoint, texts: Sequence[str], labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Per distinct text, the teacher's posteriors over ``labels`` (the student's tags, in its order)
    at each unit: shape (units, len(labels)), rows summing to 1. A student tag the teacher lacks gets
    only the floor; a teacher tag the student lacks gives its mass to the rest."""
    if "O" not in checkpoint.labels:
        raise DataError(f"{checkpoint.path}: the teacher's labels have no O tag")
    distinct = list(dict.fromkeys(texts))
    checkpoint.model.eval()
    scored = score_units(checkpoint.encoder, checkpoint.encoder.units(distinct), marginal_scorer(checkpoint.model),
                         checkpoint.labels, marginals=True)
    columns = [checkpoint.labels.index(label) if label in checkpoint.labels else -1 for label in labels]
    out = {}
    for text, result in zip(distinct, scored):
        teacher = result.marginals if result.marginals is not None else np.zeros((0, len(checkpoint.labels)))
        # shape: (units, len(labels))
        student = np.stack([teacher[:, c] if c >= 0 else np.zeros(len(teacher)) for c in columns], axis=-1)
        student = np.maximum(student, FLOOR)
        out[text] = (student / student.sum(axis=-1, keepdims=True)).astype(np.float32)
    return out
