"""A seed ensemble of trained taggers, for the accuracy bench: the mean of the members' emissions
decoded under the mean of their CRF transitions. It costs one model's inference per member, so it
is measured here as an upper bound of what a budget buys, not shipped as a bundle form.

Averaging the weights instead (a "soup") does not work for these runs: each seed's emission and
CRF layers start from their own random values (measured on ae-110k: 0.645 against 0.736).
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn


class Ensemble(nn.Module):
    """Quacks like `model.bert_crf.BertCrf` for `model.train.predict`: ``decode`` and ``eval``."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        tags = {m.num_tags for m in members}
        if len(tags) != 1:
            raise ValueError(f"members disagree on the number of tags: {sorted(tags)}")
        self.members = nn.ModuleList(members)
        self.crf = copy.deepcopy(members[0].crf)
        with torch.no_grad():
            for name in ("transitions", "start_transitions", "end_transitions"):
                getattr(self.crf, name).copy_(torch.stack([getattr(m.crf, name) for m in members]).mean(0))

    def unit_emissions(self, input_ids, attention_mask, unit_positions, lexicon=None) -> torch.Tensor:
        # shape: (batch, units, tags)
        return torch.stack([m.unit_emissions(input_ids, attention_mask, unit_positions, lexicon)
                            for m in self.members]).mean(0)

    @torch.no_grad()
    def decode(self, input_ids, attention_mask, unit_positions, unit_mask, lexicon=None) -> list[list[int]]:
        return self.crf.decode(self.unit_emissions(input_ids, attention_mask, unit_positions, lexicon), mask=unit_mask)
