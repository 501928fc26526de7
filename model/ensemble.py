"""A seed ensemble of trained taggers as one model: the mean of the members' token emissions, and
a CRF whose transitions are the mean of theirs. `tagstream export --members` ships it as one ONNX
graph (serving is unchanged; inference costs one model's per member); `bench/accuracy.py
--ensemble` measures it.

The members must read the same token ids and lexicon features: the same tokenizer, labels, units,
window and lexicon (`export.bundle` checks). Averaging the weights instead (a "soup") does not work
for these models: each seed's emission and CRF layers start from their own random values
(measured on ae-110k: 0.645 against 0.736).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Sequence

import torch
from torch import nn

from model.data import DataError
from model.train import Checkpoint
from stream.tagging.lexicon import LEXICON_FILE


class Ensemble(nn.Module):
    """Stands in for `model.bert_crf.BertCrf` where a tagger is read: ``forward`` (the exported
    graph), ``unit_emissions``, ``decode``, ``crf`` and ``lexicon_width``."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        for what, name in (("num_tags", "the number of tags"), ("lexicon_width", "the lexicon width")):
            values = {getattr(m, what) for m in members}
            if len(values) != 1:
                raise ValueError(f"members disagree on {name}: {sorted(values)}")
        self.members = nn.ModuleList(members)
        self.lexicon_width = members[0].lexicon_width
        self.crf = copy.deepcopy(members[0].crf)
        with torch.no_grad():
            for name in ("transitions", "start_transitions", "end_transitions"):
                getattr(self.crf, name).copy_(torch.stack([getattr(m.crf, name) for m in members]).mean(0))

    @property
    def num_tags(self) -> int:
        return self.crf.num_tags

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                lexicon: torch.Tensor | None = None) -> torch.Tensor:
        # shape: (batch, seq, tags)
        return torch.stack([m(input_ids, attention_mask, lexicon) for m in self.members]).mean(0)

    def unit_emissions(self, input_ids, attention_mask, unit_positions, lexicon=None) -> torch.Tensor:
        # shape: (batch, units, tags)
        return torch.stack([m.unit_emissions(input_ids, attention_mask, unit_positions, lexicon)
                            for m in self.members]).mean(0)

    @torch.no_grad()
    def decode(self, input_ids, attention_mask, unit_positions, unit_mask, lexicon=None) -> list[list[int]]:
        return self.crf.decode(self.unit_emissions(input_ids, attention_mask, unit_positions, lexicon), mask=unit_mask)


def ensemble_checkpoint(checkpoints: Sequence[Checkpoint]) -> Checkpoint:
    """The first checkpoint with the ensemble of all as its model; refused with what differs when
    the members would not read the same inputs."""
    first = checkpoints[0]
    for other in checkpoints[1:]:
        differs = [what for what, read in _INPUTS if read(first) != read(other)]
        if differs:
            verb = "differs" if len(differs) == 1 else "differ"
            raise DataError(f"{other.path}: cannot join an ensemble with {first.path}: its {', '.join(differs)} "
                            f"{verb} (members must read the same inputs)")
    return replace(first, model=Ensemble([c.model for c in checkpoints]).eval(),
                   meta={**first.meta, "ensemble": [str(c.path) for c in checkpoints]})


def _lexicon_file(checkpoint: Checkpoint) -> bytes | None:
    return None if checkpoint.encoder.lexicon is None else (checkpoint.path / LEXICON_FILE).read_bytes()


# What every member must share, so that one batch of inputs means the same to all.
_INPUTS = (("labels", lambda c: c.labels),
           ("tokenizer", lambda c: c.encoder.tokenizer.to_str()),
           ("units", lambda c: c.encoder.unit_mode),
           ("window", lambda c: (c.encoder.max_length, c.encoder.stride)),
           ("lexicon", _lexicon_file))
