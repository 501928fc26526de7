"""BERT encoder + dropout + linear emissions + a linear-chain CRF over text units; optionally
lexicon features (BMES flags per tag type, `stream.tagging.lexicon`), summed into each token's
input embedding or concatenated to its output vector, and hashed bigram embeddings summed into
the input embedding (computed from ``input_ids`` inside the graph, so serving feeds nothing new)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchcrf import CRF
from transformers import AutoConfig, AutoModel, BertConfig, PretrainedConfig

from model.config import HEADS, LEXICON_AT
from stream.tagging.spans import transition_rules

WEIGHTS = "model.pt"
ENCODER_CONFIG = "config.json"
# A disallowed tag's emission: exp() of it underflows to 0 next to any real path score, yet it stays
# finite, so a logsumexp never meets all -inf (whose gradient is NaN).
DISALLOWED = -1e4
BIGRAM_PRIME = 1_000_003   # token id pairs hash as (left * prime + right) mod buckets


def bigram_buckets(input_ids: torch.Tensor, buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's bigram bucket with its left and with its right neighbour (the first token's
    left and the last token's right pair with id 0). Integer ops only, so they export to ONNX."""
    # shape: (batch, seq)
    right_ids = torch.cat([input_ids[:, 1:], torch.zeros_like(input_ids[:, :1])], dim=1)
    right = torch.remainder(input_ids * BIGRAM_PRIME + right_ids, buckets)
    # The first token's left pair is (0, first): its bucket is first mod buckets.
    left = torch.cat([torch.remainder(input_ids[:, :1], buckets), right[:, :-1]], dim=1)
    return left, right


class BertCrf(nn.Module):
    """Emissions come from every sub-token; the CRF runs over each unit's first sub-token."""

    def __init__(self, encoder: nn.Module, num_tags: int, dropout: float = 0.1,
                 lexicon_width: int = 0, lexicon_dim: int = 32, lexicon_at: str = "output", head: str = "crf",
                 bigrams: int = 0) -> None:
        super().__init__()
        if lexicon_at not in LEXICON_AT:
            raise ValueError(f"expected lexicon_at in {LEXICON_AT}, got {lexicon_at!r}")
        if head not in HEADS:
            raise ValueError(f"expected head in {HEADS}, got {head!r}")
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.lexicon_width = lexicon_width
        self.lexicon_at = lexicon_at
        at_input = bool(lexicon_width) and lexicon_at == "input"
        # A multi-hot flag vector times a matrix is the sum of one learnt vector per active flag. At
        # the input the vectors live in the word-embedding space, so attention sees the flags.
        width = encoder.get_input_embeddings().embedding_dim if at_input else lexicon_dim
        self.lexicon_embed = nn.Linear(lexicon_width, width, bias=False) if lexicon_width else None
        if at_input:
            # Scaled like BERT's own embeddings, so the flags do not drown a pretrained model's tokens.
            nn.init.normal_(self.lexicon_embed.weight, std=getattr(encoder.config, "initializer_range", 0.02))
        # One table for both sides: the bigram 手机 is the same vector to 手 (its right pair) and to 机.
        self.bigram_embed = nn.Embedding(bigrams, encoder.get_input_embeddings().embedding_dim) if bigrams else None
        if bigrams:
            nn.init.normal_(self.bigram_embed.weight, std=getattr(encoder.config, "initializer_range", 0.02))
        extra = lexicon_dim if lexicon_width and not at_input else 0
        self.emit = nn.Linear(encoder.config.hidden_size + extra, num_tags)
        self.crf = CRF(num_tags, batch_first=True)
        self.head = head
        if head == "softmax":
            # Not trained: zero transitions make Viterbi the per-unit argmax (`constrain_softmax` then
            # forbids what BIOES does not allow), so serving and export stay as they are.
            for param in self.crf.parameters():
                param.requires_grad_(False).zero_()

    @property
    def num_tags(self) -> int:
        return self.crf.num_tags

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                lexicon: torch.Tensor | None = None) -> torch.Tensor:
        """Token emissions; this is the graph exported to ONNX."""
        if self.lexicon_embed is not None:
            expected = (*input_ids.shape, self.lexicon_width)
            if lexicon is None or tuple(lexicon.shape) != expected:
                got = None if lexicon is None else tuple(lexicon.shape)
                raise ValueError(f"expected lexicon features of shape {expected}, got {got}")
        lexicon_at_input = self.lexicon_embed is not None and self.lexicon_at == "input"
        if lexicon_at_input or self.bigram_embed is not None:
            # Position and type embeddings and the LayerNorm still come from BERT's embedding layer.
            # shape: (batch, seq, embedding)
            embeds = self.encoder.get_input_embeddings()(input_ids)
            if lexicon_at_input:
                embeds = embeds + self.lexicon_embed(lexicon)
            if self.bigram_embed is not None:
                left, right = bigram_buckets(input_ids, self.bigram_embed.num_embeddings)
                embeds = embeds + self.bigram_embed(left) + self.bigram_embed(right)
            # shape: (batch, seq, hidden)
            hidden = self.encoder(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
        else:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.lexicon_embed is not None and not lexicon_at_input:
            # shape: (batch, seq, hidden + lexicon_dim)
            hidden = torch.cat([hidden, self.lexicon_embed(lexicon)], dim=-1)
        # shape: (batch, seq, tags)
        return self.emit(self.dropout(hidden))

    def unit_emissions(self, input_ids, attention_mask, unit_positions, lexicon=None) -> torch.Tensor:
        emissions = self(input_ids, attention_mask, lexicon)
        index = unit_positions.unsqueeze(-1).expand(-1, -1, emissions.size(-1))
        # shape: (batch, units, tags)
        return emissions.gather(1, index)

    def loss(self, input_ids, attention_mask, unit_positions, unit_mask, tags, lexicon=None,
             weight=None) -> torch.Tensor:
        """Mean CRF negative log-likelihood per sequence; ``weight`` (batch,) scales each sequence's."""
        if tags.shape != unit_mask.shape:
            raise ValueError(f"expected tags of shape {tuple(unit_mask.shape)}, got {tuple(tags.shape)}")
        emissions = self.unit_emissions(input_ids, attention_mask, unit_positions, lexicon)
        if self.head == "softmax":
            # Summed over units and averaged over sequences, like the CRF's loss.
            mask = unit_mask.bool()
            # shape: (batch, units)
            per_unit = F.cross_entropy(emissions.transpose(1, 2), tags, reduction="none") * mask
            return _weighted_mean(per_unit.sum(dim=1), weight)
        return _weighted_mean(-self.crf(emissions, tags, mask=unit_mask, reduction="none"), weight)

    def partial_loss(self, input_ids, attention_mask, unit_positions, unit_mask, allowed, lexicon=None,
                     tags=None, log_prior=None, weight=None) -> torch.Tensor:
        """Mean negative log-probability of the tag sequences ``allowed`` admits (partial annotation):
        logZ(all paths) - logZ(allowed paths). With one allowed tag per unit it is `loss`. ``tags`` is
        accepted and ignored, so a collated batch passes as it is. ``log_prior`` (batch, units, tags)
        weighs the allowed paths (`constrained_nll`)."""
        if self.head != "crf":
            raise ValueError("partially annotated (weak) examples need the CRF head")
        if allowed.shape[:2] != unit_mask.shape or allowed.size(-1) != self.num_tags:
            raise ValueError(f"expected allowed of shape {(*unit_mask.shape, self.num_tags)}, "
                             f"got {tuple(allowed.shape)}")
        emissions = self.unit_emissions(input_ids, attention_mask, unit_positions, lexicon)
        return _weighted_mean(constrained_nll(self.crf, emissions, unit_mask, allowed, log_prior), weight)

    @torch.no_grad()
    def decode(self, input_ids, attention_mask, unit_positions, unit_mask, lexicon=None) -> list[list[int]]:
        emissions = self.unit_emissions(input_ids, attention_mask, unit_positions, lexicon)
        return self.crf.decode(emissions, mask=unit_mask)


def constrain_softmax(model: BertCrf, labels: Sequence[str]) -> None:
    """Make a softmax head decode the best *legal* BIOES path: its untrained CRF gets 0 for every
    allowed start, transition and end and `DISALLOWED` for the rest, so Viterbi is the per-unit
    argmax wherever that is legal. Taken per unit, the argmax often breaks an entity in two (B I O I
    E) or leaves one open; on ecommerce-ner that cost the softmax head 18 points of F1. A CRF head
    is left as it is."""
    if model.head != "softmax":
        return
    opens, follows, closes = transition_rules(labels)
    with torch.no_grad():
        for param, allowed in ((model.crf.start_transitions, opens), (model.crf.transitions, follows),
                               (model.crf.end_transitions, closes)):
            param.copy_(torch.where(torch.tensor(allowed), 0.0, DISALLOWED))


def _weighted_mean(per_sequence: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """The batch's loss: the mean over sequences, each scaled by its weight when there are weights."""
    return (per_sequence if weight is None else per_sequence * weight).mean()


def constrained_nll(crf: CRF, emissions: torch.Tensor, mask: torch.Tensor, allowed: torch.Tensor,
                    log_prior: torch.Tensor | None = None) -> torch.Tensor:
    """Per sequence, -log of the probability mass of the paths whose every tag is allowed; with
    ``log_prior`` (batch, seq, tags), each allowed path's mass is weighted by the product of its
    tags' prior (a constant prior per unit changes the value, not the gradient).

    ``emissions`` (batch, seq, tags), ``mask`` (batch, seq) with the first unit on, ``allowed``
    (batch, seq, tags) bool with at least one tag allowed per unmasked unit. Returns shape (batch,).
    """
    if not crf.batch_first:
        raise ValueError("expected a batch_first CRF")
    mask = mask.bool()
    # shape: (batch, seq, tags)
    constrained = emissions.masked_fill(~allowed.bool(), DISALLOWED)
    if log_prior is not None:
        constrained = constrained + log_prior
    # Both partitions in one forward pass over a doubled batch (the same arithmetic, half the Python
    # steps of the loop over positions). pytorch-crf takes (seq, batch, tags) and (seq, batch).
    # shape: (seq, 2 * batch, tags)
    stacked = torch.cat([emissions, constrained]).transpose(0, 1)
    # shape: (2 * batch,)
    log_z = crf._compute_normalizer(stacked, torch.cat([mask, mask]).transpose(0, 1))
    return log_z[:len(emissions)] - log_z[len(emissions):]


def encoder_from_config(config: PretrainedConfig) -> nn.Module:
    try:
        return AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:  # not every BERT-family class takes it
        return AutoModel.from_config(config)


def scratch_encoder(vocab_size: int, layers: int, hidden: int, heads: int, max_positions: int) -> nn.Module:
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden * 4,
                        max_position_embeddings=max_positions)
    return encoder_from_config(config)


def pretrained_encoder(path: str | Path) -> nn.Module:
    path = Path(path)
    if not (path / ENCODER_CONFIG).is_file():
        raise FileNotFoundError(f"{path}: not a model folder (no {ENCODER_CONFIG})")
    try:
        return AutoModel.from_pretrained(str(path), add_pooling_layer=False, local_files_only=True)
    except TypeError:
        return AutoModel.from_pretrained(str(path), local_files_only=True)


def save(model: BertCrf, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    model.encoder.config.to_json_file(str(directory / ENCODER_CONFIG))
    torch.save(model.state_dict(), directory / WEIGHTS)


def load(directory: str | Path, num_tags: int, dropout: float = 0.1, lexicon_width: int = 0,
         lexicon_dim: int = 32, lexicon_at: str = "output", head: str = "crf", bigrams: int = 0) -> BertCrf:
    directory = Path(directory)
    config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
    model = BertCrf(encoder_from_config(config), num_tags, dropout, lexicon_width, lexicon_dim, lexicon_at, head,
                    bigrams)
    state = torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model

