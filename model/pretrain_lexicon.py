"""The lexicon at the input already during pretraining (`tagstream pretrain --lexicon … --words …`).

The fine-tuning's lexicon flags (BMES matches per type of gazetteers and taxonomy names, and a word
dictionary's word-position features) are summed into the masked-language model's token embeddings
through a learnt projection, as ``--lexicon-at input`` sums them in fine-tuning. The projection and
its layout (types, word dictionary, width) are saved beside the base model, and `tagstream train
--base-model` starts its own projection from them, column by column where types and dictionary agree.
Serving never sees the difference: the fine-tuned model has the same form either way.

The flags are those of the whole title, masked characters included, as fine-tuning and serving see
titles; so a flag tells the model something about a masked character (where a word ends, that a
brand starts here), and the held-out masked-token accuracy is higher than without flags for that
reason, not only because the model is better.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from torch import nn

from model.config import PretrainConfig, TrainConfig
from model.data import DataError
from model.words import word_dictionary
from stream.tagging.lexicon import FLAGS, Lexicon, read_specs
from stream.tagging.tokenization import TextEncoder
from stream.tagging.words import WIDTH as WORD_WIDTH

LAYOUT = "lexicon_input.json"
WEIGHTS = "lexicon_input.safetensors"
PROJECTION = "lexicon_embed"          # the MLM model's attribute, left out of model.safetensors
WORDS = "words"                       # the word dictionary's columns, in the groups a fine-tuning started


def input_lexicon(config: PretrainConfig) -> Lexicon | None:
    """The lexicon of ``--lexicon`` and ``--words``, laid out as fine-tuning lays out the same sources
    (types sorted by name, the word features after them); None without either."""
    if not config.lexicon and not config.words:
        return None
    given = read_specs(config.lexicon)
    return Lexicon.build(sorted(given), given, word_dictionary(config.words) if config.words else None)


def token_features(tokenizer: Tokenizer, lexicon: Lexicon, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
    """Per text, each sub-token's flags (those of its word, as fine-tuning with ``--units words``
    gives them), cut as `pretrain.encode_texts` cuts the sub-tokens; shape (sub-tokens, width)."""
    encoder = TextEncoder(tokenizer, max_length, 0, lexicon)
    out = []
    for units in encoder.units(list(texts)):
        # shape: (sub-tokens,) the unit each sub-token belongs to
        owner = np.repeat(np.arange(len(units)), np.diff([*units.first_token, len(units.token_ids)]))
        out.append(units.features[owner][:max_length - 2])
    return out


def feature_batch(features: Sequence[np.ndarray], seq: int) -> torch.Tensor:
    """Padded flags for a batch laid out [CLS] text [SEP] padding; only the text's sub-tokens have flags."""
    # shape: (batch, seq, width)
    out = torch.zeros((len(features), seq, features[0].shape[1]))
    for row, flags in enumerate(features):
        out[row, 1:1 + len(flags)] = torch.from_numpy(flags)
    return out


def add_projection(model: nn.Module, width: int) -> None:
    """A bias-free projection of ``width`` flags into the token-embedding space, started as `BertCrf`
    starts its own."""
    projection = nn.Linear(width, model.config.hidden_size, bias=False)
    nn.init.normal_(projection.weight, std=model.config.initializer_range)
    setattr(model, PROJECTION, projection)


def encoder_inputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the BERT encoder reads: the ids, or with flags the token embeddings plus their projection
    (position and type embeddings and the LayerNorm still come from BERT's embedding layer)."""
    if "lexicon" not in batch:
        return {"input_ids": batch["input_ids"]}
    embeds = model.bert.embeddings.word_embeddings(batch["input_ids"]) + getattr(model, PROJECTION)(batch["lexicon"])
    return {"inputs_embeds": embeds}


def encoder_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights ``save_pretrained`` writes: the model's own, without the projection."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(PROJECTION + ".")}


def save_projection(model: nn.Module, lexicon: Lexicon | None, config: PretrainConfig, out: Path) -> dict | None:
    """Write the projection and its layout beside the base model (removing an earlier run's where
    this one has none); the layout is returned for pretrain.json."""
    if lexicon is None:
        for name in (LAYOUT, WEIGHTS):
            (out / name).unlink(missing_ok=True)
        return None
    weight = getattr(model, PROJECTION).weight.detach()
    layout = {"format_version": 1, "types": list(lexicon.types), "width": lexicon.width,
              "words": lexicon.words.source if lexicon.words is not None else None, "hidden": int(weight.shape[0]),
              "entries": len(lexicon), "sources": list(config.lexicon), "word_spec": config.words}
    save_file({"weight": weight.contiguous()}, str(out / WEIGHTS))
    (out / LAYOUT).write_text(json.dumps(layout, indent=1, ensure_ascii=False), encoding="utf-8")
    return layout


def read_projection(base: Path) -> tuple[dict, torch.Tensor]:
    """A base model's layout and projection weight (hidden, width); what is wrong with them, if anything."""
    try:
        layout = json.loads((base / LAYOUT).read_text(encoding="utf-8"))
        weight = load_file(str(base / WEIGHTS))["weight"]
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{base}: unreadable lexicon projection ({LAYOUT}, {WEIGHTS}): {err}") from None
    types, width = layout.get("types"), layout.get("width")
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types) or not isinstance(width, int):
        raise DataError(f"{base / LAYOUT}: expected 'types' (a list of names) and 'width' (an integer)")
    words = layout.get("words") is not None
    if width != len(FLAGS) * len(types) + (WORD_WIDTH if words else 0) or tuple(weight.shape[1:]) != (width,):
        raise DataError(f"{base}: the lexicon projection's shape {tuple(weight.shape)} does not fit its layout "
                        f"(types {types}{' and words' if words else ''}: width {width})")
    return layout, weight


def _column_pairs(layout: dict, lexicon: Lexicon) -> tuple[list[tuple[int, int]], list[str]]:
    """(fine-tuning column, base column) pairs of the groups both layouts have, and those groups' names."""
    pairs, groups = [], []
    for index, tag_type in enumerate(lexicon.types):
        if tag_type in layout["types"]:
            base = len(FLAGS) * layout["types"].index(tag_type)
            pairs += [(len(FLAGS) * index + f, base + f) for f in range(len(FLAGS))]
            groups.append(tag_type)
    if lexicon.words is not None and layout.get("words") == lexicon.words.source:
        base = len(FLAGS) * len(layout["types"])
        pairs += [(lexicon.typed_width + f, base + f) for f in range(WORD_WIDTH)]
        groups.append(WORDS)
    return pairs, groups


def start_projection(model: nn.Module, config: TrainConfig, lexicon: Lexicon | None,
                     log: Callable[[str], None]) -> list[str] | None:
    """With a base model pretrained with flags: the fine-tuning's input projection starts from the
    base's in the columns of the types and word dictionary both have (the rest as initialised).
    Returns the groups started, or None where the base has no projection or it cannot be used."""
    base = Path(config.base_model) if config.base_model else None
    if base is None or not (base / LAYOUT).is_file():
        return None
    if lexicon is None or config.lexicon_at != "input":
        why = "has no lexicon" if lexicon is None else "puts its lexicon at the output (--lexicon-at output)"
        log(f"warning: {base} was pretrained with lexicon flags at the input, but this training {why}: "
            f"its projection is not used")
        return None
    layout, weight = read_projection(base)
    target = getattr(model, PROJECTION).weight
    if weight.shape[0] != target.shape[0]:
        raise DataError(f"{base}: the lexicon projection is for hidden size {weight.shape[0]}, the model's is "
                        f"{target.shape[0]}")
    pairs, groups = _column_pairs(layout, lexicon)
    words = lexicon.words.source if lexicon.words is not None else None
    if not pairs:
        log(f"warning: {base}'s lexicon projection (types {layout['types']}, words {layout.get('words')}) shares "
            f"no feature with this lexicon (types {list(lexicon.types)}, words {words}): it starts afresh")
        return None
    with torch.no_grad():
        for column, base_column in pairs:
            target[:, column] = weight[:, base_column]
    log(f"lexicon projection: {len(pairs)} of {lexicon.width} feature columns started from {base} "
        f"({', '.join(groups)})")
    return groups
