"""Training samples and their batches: one sample per window, with the tags it learns from (all of
them for a gold example; only the span units for a partially annotated one), padded as serving pads."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from model.config import WEAK_UNMATCHED, TrainConfig
from model.data import DataError, Example
from model.lexicon_train import fold_forms
from model.words import word_dictionary
from stream.tagging.lexicon import Lexicon, read_specs
from stream.tagging.spans import OUTSIDE, unit_tags
from stream.tagging.tokenization import PaddedBatch, TextEncoder, Window


@dataclass(frozen=True, slots=True)
class Sample:
    window: Window
    tags: list[int]   # one tag id per unit the window covers (O where unknown)
    known: tuple[bool, ...] | None = None   # per unit, whether its tag is known; None: all are (gold)
    prior: np.ndarray | None = None   # (units, tags): a teacher's posteriors, weighing the unknown units
    weight: float = 1.0               # of its loss (weak titles: --weak-weight)

    def allowed(self, num_tags: int) -> np.ndarray:
        """Per unit, the tags a training path may take there: exactly the known tag, any where unknown."""
        # shape: (units, tags)
        out = np.zeros((len(self.tags), num_tags), dtype=bool)
        out[np.arange(len(self.tags)), self.tags] = True
        if self.known is not None:
            out[~np.asarray(self.known, dtype=bool)] = True
        return out


def make_samples(encoder: TextEncoder, examples: Sequence[Example], labels: Sequence[str],
                 unmatched: str = "unknown", priors: Mapping[str, np.ndarray] | None = None,
                 weak_weight: float = 1.0, unknown: Mapping[tuple[str, str], Sequence[tuple[int, int]]] | None = None
                 ) -> tuple[list[Sample], int]:
    """One sample per window; returns the samples and how many spans were snapped to units.

    A partial example's units outside its spans are unknown (``unmatched`` "prior", "unknown" or
    "teacher") or O (``"o"``: then it is a gold example like any other). ``priors`` (with "teacher"):
    per partial example's text, the teacher's posteriors per unit (`model.teacher.unit_posteriors`);
    a partial example's samples weigh ``weak_weight`` in the loss, however its unmatched units are read.
    ``unknown``: per gold example (by id and text), character ranges whose units are unknown, not O
    (`model.data.unlabelled_repeats`)."""
    if unmatched not in WEAK_UNMATCHED:
        raise ValueError(f"expected unmatched in {WEAK_UNMATCHED}, got {unmatched!r}")
    index = {tag: i for i, tag in enumerate(labels)}
    samples, snapped = [], 0
    for ex, units in zip(examples, encoder.units([e.text for e in examples])):
        tags, bad = unit_tags(units.spans, ex.spans)
        snapped += len(bad)
        known = [t != OUTSIDE for t in tags] if ex.partial and unmatched != "o" else None
        if not ex.partial and unknown and (ex.id, ex.text) in unknown:
            ranges = unknown[(ex.id, ex.text)]
            known = [not any(a < r_end and r_start < b for r_start, r_end in ranges) for a, b in units.spans]
        prior = priors[ex.text] if known is not None and priors is not None else None
        if prior is not None and len(prior) != len(units):
            raise DataError(f"the teacher split {ex.id!r} into {len(prior)} units, the model being trained into "
                            f"{len(units)}: a teacher must be trained from the same base model")
        for w in encoder.windows(units):
            samples.append(Sample(w, [index[t] for t in tags[w.unit_start:w.unit_end]],
                                  None if known is None else tuple(known[w.unit_start:w.unit_end]),
                                  None if prior is None else prior[w.unit_start:w.unit_end],
                                  weak_weight if ex.partial else 1.0))
    return samples, snapped


def batch_tensors(batch: PaddedBatch) -> dict[str, torch.Tensor]:
    out = {"input_ids": torch.from_numpy(batch.input_ids), "attention_mask": torch.from_numpy(batch.attention_mask),
           "unit_positions": torch.from_numpy(batch.unit_positions), "unit_mask": torch.from_numpy(batch.unit_mask)}
    if batch.lexicon is not None:
        out["lexicon"] = torch.from_numpy(batch.lexicon)
    return out


def collate(samples: Sequence[Sample], encoder: TextEncoder, num_tags: int | None = None,
            o_prior: float | None = None) -> dict[str, torch.Tensor]:
    """The serving padding (`TextEncoder.pad`) plus the gold tags, as tensors; when a sample has
    unknown units (and ``num_tags`` is given), also ``allowed``: shape (batch, units, tags), every tag
    allowed at padding. A batch of gold samples only has no ``allowed``, so it trains as before.
    ``weight`` (batch,): each sample's loss weight, when one is not 1.
    With ``o_prior``, also ``log_prior`` of the same shape: at unknown units log P(O) = log o_prior
    for tag 0 (O) and the rest shared evenly by the entity tags; 0 elsewhere. A sample with its own
    ``prior`` (a teacher's posteriors) has their logs at its unknown units instead."""
    batch = encoder.pad([s.window for s in samples])
    tags = torch.zeros(batch.unit_mask.shape, dtype=torch.long)
    for row, s in enumerate(samples):
        tags[row, :len(s.tags)] = torch.tensor(s.tags)
    out = {**batch_tensors(batch), "tags": tags}
    if any(s.weight != 1.0 for s in samples):
        out["weight"] = torch.tensor([s.weight for s in samples], dtype=torch.float32)
    if num_tags is not None and any(s.known is not None for s in samples):
        # shape: (batch, units, tags)
        allowed = np.ones((*batch.unit_mask.shape, num_tags), dtype=bool)
        for row, s in enumerate(samples):
            allowed[row, :len(s.tags)] = s.allowed(num_tags)
        out["allowed"] = torch.from_numpy(allowed)
        if o_prior is not None or any(s.prior is not None for s in samples):
            unknown_row = None
            if o_prior is not None:
                unknown_row = np.full(num_tags, np.log((1.0 - o_prior) / max(1, num_tags - 1)))
                unknown_row[0] = np.log(o_prior)
            # shape: (batch, units, tags)
            log_prior = np.zeros(allowed.shape, dtype=np.float32)
            for row, s in enumerate(samples):
                if s.known is None:
                    continue
                unknown = ~np.asarray(s.known, dtype=bool)
                if s.prior is not None:
                    log_prior[row, :len(s.tags)][unknown] = np.log(s.prior[unknown])
                elif unknown_row is not None:
                    log_prior[row, :len(s.tags)][unknown] = unknown_row
            out["log_prior"] = torch.from_numpy(log_prior)
    return out


def entity_strings(examples: Sequence[Example]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ex in examples:
        for span in ex.spans:
            out.setdefault(span.label, []).append(ex.text[span.start:span.end])
    return out


def merge_forms(*sources: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for source in sources:
        for tag_type, forms in source.items():
            out.setdefault(tag_type, []).extend(forms)
    return out


def weak_o_prior(config: TrainConfig, samples: Sequence[Sample]) -> float | None:
    """P(O) at unknown units under ``--weak-unmatched prior``: the given value, else the share of O
    units in the gold samples (tag 0 is O). None when no prior applies."""
    if config.weak_unmatched != "prior" or not any(s.known is not None for s in samples):
        return None
    if config.weak_o_prior is not None:
        return config.weak_o_prior
    gold = [t for s in samples if s.known is None for t in s.tags]
    if not gold:
        raise DataError("--weak-unmatched prior: no gold training titles to estimate how often an unknown "
                        "position is O; give --weak-o-prior")
    return min(0.99, max(0.01, sum(t == 0 for t in gold) / len(gold)))


def training_samples(config: TrainConfig, encoder: TextEncoder, examples: list[Example], labels: Sequence[str],
                     priors: Mapping[str, np.ndarray] | None = None,
                     repeats: Mapping[tuple[str, str], Sequence[tuple[int, int]]] | None = None
                     ) -> tuple[list[Sample], int, Lexicon | None]:
    """Samples, spans snapped, and the lexicon the checkpoint serves with (None without one);
    ``priors``: a teacher's posteriors for the partial examples, ``repeats`` the gold examples'
    ranges left unknown (see `make_samples`).

    With ``--lexicon-from-train`` or ``--lexicon-min-ratio``, each of ``--lexicon-folds`` folds of
    the training texts is flagged with what the other folds give (their entities; the given
    sources pruned by their label ratios) and serving with what all of them give
    (`model.lexicon_train`).
    """
    unmatched = config.weak_unmatched
    given = read_specs(config.lexicon) if config.lexicon else {}
    words = word_dictionary(config.words) if config.words else None
    if not given and not config.lexicon_from_train and words is None:
        samples, snapped = make_samples(encoder, examples, labels, unmatched, priors, config.weak_weight, repeats)
        return samples, snapped, None
    count = config.lexicon_folds
    dealt = random.Random(config.seed).sample(examples, len(examples)) if config.lexicon_fold_seed else examples
    folds = [dealt[k::count] for k in range(count)]
    per_fold, serving = fold_forms(folds, given, from_train=config.lexicon_from_train,
                                   min_ratio=config.lexicon_min_ratio, own_types=config.lexicon_train_types == "own")
    typed = given or config.lexicon_from_train
    types = sorted(set(given) | set(serving[1]) | {label[2:] for label in labels if label != "O"}) if typed else []
    lexicon = Lexicon.build(types, merge_forms(*serving), words)
    if not config.lexicon_from_train and not config.lexicon_min_ratio:
        samples, snapped = make_samples(encoder.with_lexicon(lexicon), examples, labels, unmatched, priors,
                                        config.weak_weight, repeats)
        return samples, snapped, lexicon
    samples, snapped = [], 0
    for fold, forms in zip(folds, per_fold):
        part, bad = make_samples(encoder.with_lexicon(Lexicon.build(types, merge_forms(*forms), words)), fold, labels,
                                 unmatched, priors, config.weak_weight, repeats)
        samples += part
        snapped += bad
    return samples, snapped, lexicon


def length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length items: sort within large shuffled chunks, so padding
    stays small and batches still vary from epoch to epoch."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for i in range(0, len(order), chunk):
        part = sorted(order[i:i + chunk], key=lambda j: lengths[j])
        batches += [part[k:k + batch_size] for k in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def bucketed_batches(samples: Sequence[Sample], batch_size: int, rng: random.Random) -> list[list[int]]:
    return length_batches([len(s.window.input_ids) for s in samples], batch_size, rng)
