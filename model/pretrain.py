"""Masked-language-model pretraining of a small BERT on unlabelled product texts: whole words are
masked (every CJK character is a word, or with `--whole-words jieba` each word jieba segments), and
the result is a base model for `tagstream train --base-model`."""

from __future__ import annotations

import bisect
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tqdm import tqdm
from transformers import BertConfig, BertForMaskedLM
from transformers.utils import logging as hf_logging

from model.config import DEFAULT_EPOCHS, PretrainConfig
from model.data import DataError, data_hash
from model.pretrain_lexicon import (add_projection, encoder_inputs, encoder_state, feature_batch, input_lexicon,
                                    save_projection, token_features)
from model.schedule import ESTIMATE_AFTER, PretrainSchedule, budget_spent, pretrain_horizon
from model.texts import read_texts
from model.train import length_batches
from model.vocab import build_wordpiece
from model.words import JIEBA, segment
from stream.tagging.tokenization import SPECIAL_TOKENS

TOKENIZER = "tokenizer.json"
META = "pretrain.json"
IGNORE = -100             # label of positions the loss skips (torch cross_entropy's default)
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1   # of the chosen words; the rest are kept as they are
REESTIMATE_EVERY = 50
CURVE_EVERY = 50          # steps averaged into one point of the recorded loss curve


@dataclass(frozen=True)
class MlmScores:
    loss: float       # mean cross-entropy per masked token
    accuracy: float   # share of masked tokens predicted exactly
    tokens: int       # masked tokens scored

    def to_json(self) -> dict:
        return {"loss": round(self.loss, 4), "accuracy": round(self.accuracy, 4), "tokens": self.tokens}


@dataclass
class PretrainResult:
    out: Path
    steps: int
    epochs: float
    stopped: str
    seconds: float
    cpu_seconds: float
    first_loss: float                 # the untrained model's loss on the first batch
    final_loss: float                 # mean over the last CURVE_EVERY steps
    held_out_before: MlmScores | None
    held_out_after: MlmScores | None
    curve: list[dict] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Encoded:
    """One text's sub-token ids (no special tokens, truncated), the word each belongs to, and with
    ``--lexicon``/``--words`` each one's flags, shape (sub-tokens, width)."""

    ids: list[int]
    words: list[int]
    features: np.ndarray | None = None


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str], max_length: int,
                 segments: Sequence[Sequence[tuple[int, int]]] | None = None,
                 features: Sequence[np.ndarray] | None = None) -> list[Encoded]:
    """Texts to sub-tokens cut to fit ``max_length`` with [CLS] and [SEP]; texts with no token are
    left out. A word is the tokenizer's (each CJK character alone), or with ``segments`` (per text,
    character ``(start, end)`` words covering it) the segment a sub-token starts in. ``features``: per
    text, its sub-tokens' lexicon flags (`pretrain_lexicon.token_features`)."""
    tokenizer.no_truncation()
    tokenizer.no_padding()
    keep = max_length - 2
    out = []
    for k, enc in enumerate(tokenizer.encode_batch(list(texts), add_special_tokens=False)):
        if not enc.ids:
            continue
        words = list(enc.word_ids[:keep])
        if segments is not None:
            ends = [end for _, end in segments[k]]
            words = [bisect.bisect_right(ends, start) for start, _ in enc.offsets[:keep]]
        out.append(Encoded(list(enc.ids[:keep]), words, features[k] if features is not None else None))
    return out


def word_groups(words: Sequence[int]) -> list[list[int]]:
    """Positions of each word's sub-tokens; a word's sub-tokens are consecutive."""
    groups: list[list[int]] = []
    for position, word in enumerate(words):
        if groups and words[groups[-1][0]] == word:
            groups[-1].append(position)
        else:
            groups.append([position])
    return groups


def mask_words(text: Encoded, rng: random.Random, *, mask_prob: float, mask_id: int,
               random_ids: Sequence[int], never: frozenset[int] = frozenset()) -> tuple[list[int], list[int]]:
    """Whole-word masking: ``mask_prob`` of the words are chosen, and all sub-tokens of a chosen
    word are predicted together; the word is [MASK]ed (80%), replaced by random tokens (10%) or
    kept (10%). Words holding an id in ``never`` ([UNK]) are not chosen. Returns the inputs and
    the labels (the original id where predicted, IGNORE elsewhere)."""
    candidates = [g for g in word_groups(text.words) if not any(text.ids[p] in never for p in g)]
    # Stochastic rounding keeps the expected rate exact on titles of a few words.
    expected = len(candidates) * mask_prob
    count = int(expected) + (rng.random() < expected - int(expected))
    inputs, labels = list(text.ids), [IGNORE] * len(text.ids)
    for group in rng.sample(candidates, count):
        # One choice per word: a half-[MASK]ed word would show the model the other half.
        choice = rng.random()
        for position in group:
            labels[position] = text.ids[position]
            if choice < MASK_SHARE:
                inputs[position] = mask_id
            elif choice < MASK_SHARE + RANDOM_SHARE:
                inputs[position] = rng.choice(random_ids)
    return inputs, labels


@dataclass(frozen=True)
class Masker:
    """The vocabulary facts masking needs, taken from the tokenizer once."""

    mask_prob: float
    mask_id: int
    cls_id: int
    sep_id: int
    pad_id: int
    random_ids: tuple[int, ...]
    never: frozenset[int]

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer, mask_prob: float) -> "Masker":
        special = {tok: tokenizer.token_to_id(tok) for tok in SPECIAL_TOKENS}
        missing = [tok for tok, i in special.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer vocabulary lacks the BERT special tokens {missing}")
        ids = set(special.values())
        return cls(mask_prob, special["[MASK]"], special["[CLS]"], special["[SEP]"], special["[PAD]"],
                   tuple(i for i in range(tokenizer.get_vocab_size()) if i not in ids),
                   frozenset({special["[UNK]"]}))

    def batch(self, texts: Sequence[Encoded], rng: random.Random) -> dict[str, torch.Tensor]:
        """Masked, padded model inputs with [CLS] ... [SEP]; special tokens and padding are never predicted."""
        width = max(len(t.ids) for t in texts) + 2
        # shape: (batch, seq)
        input_ids = torch.full((len(texts), width), self.pad_id, dtype=torch.long)
        # shape: (batch, seq)
        attention = torch.zeros((len(texts), width), dtype=torch.long)
        # shape: (batch, seq)
        labels = torch.full((len(texts), width), IGNORE, dtype=torch.long)
        for row, text in enumerate(texts):
            inputs, targets = mask_words(text, rng, mask_prob=self.mask_prob, mask_id=self.mask_id,
                                         random_ids=self.random_ids, never=self.never)
            n = len(inputs) + 2
            input_ids[row, :n] = torch.tensor([self.cls_id, *inputs, self.sep_id])
            attention[row, :n] = 1
            labels[row, 1:n - 1] = torch.tensor(targets)
        out = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        if texts[0].features is not None:
            out["lexicon"] = feature_batch([t.features for t in texts], width)
        return out


def masked_lm(vocab_size: int, config: PretrainConfig, lexicon_width: int = 0) -> BertForMaskedLM:
    """A fresh BERT of the shape `bert_crf.scratch_encoder` builds, with an MLM head (and with
    ``lexicon_width`` its projection of the lexicon flags)."""
    bert = BertConfig(vocab_size=vocab_size, hidden_size=config.hidden, num_hidden_layers=config.layers,
                      num_attention_heads=config.heads, intermediate_size=config.hidden * 4,
                      max_position_embeddings=max(512, config.max_length))
    model = BertForMaskedLM(bert)
    if lexicon_width:
        add_projection(model, lexicon_width)
    return model


def mlm_loss(model: BertForMaskedLM, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """Mean cross-entropy over the masked tokens, how many of them the model gets right, and how many there are.

    The vocabulary projection runs on the masked positions only: over every position it would
    cost as much as the whole encoder of a small model.
    """
    # shape: (batch, seq, hidden)
    hidden = model.bert(**encoder_inputs(model, batch), attention_mask=batch["attention_mask"]).last_hidden_state
    picked = batch["labels"] != IGNORE
    # shape: (masked,)
    targets = batch["labels"][picked]
    # shape: (masked, vocab)
    logits = model.cls(hidden[picked])
    loss = F.cross_entropy(logits, targets)
    correct = int((logits.argmax(-1) == targets).sum())
    return loss, correct, int(targets.numel())


@torch.no_grad()
def evaluate_mlm(model: BertForMaskedLM, batches: Sequence[dict[str, torch.Tensor]]) -> MlmScores:
    was_training = model.training
    model.eval()
    total, correct, count = 0.0, 0, 0
    for batch in batches:
        if not (batch["labels"] != IGNORE).any():
            continue
        loss, right, n = mlm_loss(model, batch)
        total += float(loss) * n
        correct += right
        count += n
    model.train(was_training)
    return MlmScores(total / count if count else float("nan"), correct / count if count else 0.0, count)


def fixed_batches(texts: Sequence[Encoded], masker: Masker, batch_size: int,
                  seed: int) -> list[dict[str, torch.Tensor]]:
    """Batches masked once with their own seed, so scores before and after training compare the same guesses."""
    rng = random.Random(seed)
    return [masker.batch(texts[i:i + batch_size], rng) for i in range(0, len(texts), batch_size)]


def split_held_out(texts: Sequence[str], share: float, seed: int) -> tuple[list[str], list[str]]:
    if share <= 0 or len(texts) < 2:
        return list(texts), []
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    held = set(order[:max(1, round(len(texts) * share))])
    return [t for i, t in enumerate(texts) if i not in held], [texts[i] for i in sorted(held)]


def save_quietly(model: BertForMaskedLM, out: Path) -> None:
    """`save_pretrained` (config.json + model.safetensors) without transformers' shard progress bar."""
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(out), state_dict=encoder_state(model))
    finally:
        if shown:
            hf_logging.enable_progress_bar()


@dataclass
class _Run:
    """What the training loop leaves behind."""

    steps: int = 0
    stopped: str | None = None
    losses: list[float] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)


def _optimizer(model, config: PretrainConfig):
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)


def _train(model, train_set, masker: "Masker", config: PretrainConfig, started: tuple[float, float]) -> _Run:
    """Masked-word steps until the first budget (steps, seconds, CPU-seconds, epochs) is spent."""
    started_wall, started_cpu = started
    optimizer = _optimizer(model, config)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    # Until a time budget has been timed, the schedule assumes DEFAULT_EPOCHS.
    schedule = PretrainSchedule(pretrain_horizon(config, 0, steps_per_epoch, 0, 0, 0, 0) or DEFAULT_EPOCHS * steps_per_epoch,
                         config.warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)
    rng = random.Random(config.seed)
    lengths = [len(t.ids) for t in train_set]
    run, epoch = _Run(), 0
    loop_wall, loop_cpu = time.monotonic(), time.process_time()
    bar = tqdm(total=schedule.total, desc="pretrain", unit="step", leave=False, disable=None)
    model.train()
    while run.stopped is None:
        epoch_steps = run.steps
        for batch_ids in length_batches(lengths, config.batch_size, rng):
            batch = masker.batch([train_set[i] for i in batch_ids], rng)
            if not (batch["labels"] != IGNORE).any():
                continue
            loss, _, _ = mlm_loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            scheduler.step()
            run.steps += 1
            run.losses.append(loss.item())
            wall, cpu = time.monotonic() - started_wall, time.process_time() - started_cpu
            if run.steps % CURVE_EVERY == 0:
                run.curve.append({"step": run.steps, "loss": round(sum(run.losses[-CURVE_EVERY:]) / CURVE_EVERY, 4),
                                  "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)})
            if run.steps == ESTIMATE_AFTER or run.steps % REESTIMATE_EVERY == 0:
                estimate = pretrain_horizon(config, run.steps, steps_per_epoch, wall, cpu,
                                    time.monotonic() - loop_wall, time.process_time() - loop_cpu)
                if estimate is not None and estimate != schedule.total:
                    schedule.total = bar.total = estimate
                    bar.refresh()
            bar.update(1)
            bar.set_postfix(loss=f"{run.losses[-1]:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
            run.stopped = budget_spent(config, run.steps, wall, cpu)
            if run.stopped:
                break
        else:
            epoch += 1
            if config.epoch_limit is not None and epoch >= config.epoch_limit:
                run.stopped = "epochs"
            elif run.steps == epoch_steps:
                raise DataError(f"{', '.join(config.texts)}: no word to mask (every text is [UNK] only)")
    bar.close()
    return run


def pretrain(config: PretrainConfig, log: Callable[[str], None] = print) -> PretrainResult:
    """Build a vocabulary from the texts, train a BERT on masked words until the first budget is
    spent, and write config.json, model.safetensors, tokenizer.json and pretrain.json to ``config.out``."""
    started_wall, started_cpu = time.monotonic(), time.process_time()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    if not config.texts:
        raise DataError("no text files given")
    texts = read_texts(config.texts, log=log)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)   # an unwritable --out fails now, not after the budget is spent
    # A topic dump repeats a title for every price or stock update; each text counts once.
    unique = list(dict.fromkeys(texts))
    train_texts, held_texts = split_held_out(unique, config.held_out, config.seed)
    log(f"{len(texts)} texts, {len(texts) - len(unique)} duplicates dropped; "
        f"{len(train_texts)} for training, {len(held_texts)} held out")

    tokenizer = build_wordpiece(train_texts, vocab_size=config.vocab_size)
    masker = Masker.for_tokenizer(tokenizer, config.mask_prob)
    lexicon, length = input_lexicon(config), config.max_length
    train_set, held_set = (encode_texts(tokenizer, part, length, segment(part) if config.whole_words == JIEBA else None,
                                        token_features(tokenizer, lexicon, part, length) if lexicon else None)
                           for part in (train_texts, held_texts))
    if not train_set:
        raise DataError(f"{', '.join(config.texts)}: no text has a token to learn from")
    model = masked_lm(tokenizer.get_vocab_size(), config, lexicon.width if lexicon else 0)
    log(f"vocabulary {tokenizer.get_vocab_size()}; model {config.layers} layers x {config.hidden} "
        f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)"
        + (f"; lexicon flags at the input: types {list(lexicon.types)}, width {lexicon.width}" if lexicon else ""))

    held_batches = fixed_batches(held_set, masker, config.batch_size, config.seed + 1)
    before = evaluate_mlm(model, held_batches) if held_set else None
    run = _train(model, train_set, masker, config, (started_wall, started_cpu))
    after = evaluate_mlm(model, held_batches) if held_set else None
    wall, cpu = time.monotonic() - started_wall, time.process_time() - started_cpu
    losses = run.losses
    final_loss = sum(losses[-CURVE_EVERY:]) / len(losses[-CURVE_EVERY:]) if losses else float("nan")
    save_quietly(model, out)
    layout = save_projection(model, lexicon, config, out)   # None without flags (and an earlier run's removed)
    tokenizer.save(str(out / TOKENIZER))
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    result = PretrainResult(out, run.steps, round(run.steps / steps_per_epoch, 2), run.stopped, round(wall, 1),
                            round(cpu, 1), losses[0] if losses else float("nan"), final_loss, before, after, run.curve)
    counts = {"texts": len(texts), "unique_texts": len(unique), "held_out_texts": len(held_texts),
              "vocab_size": tokenizer.get_vocab_size(), "lexicon": layout}
    _write_meta(out, config, result, counts)
    held = (f"; held-out masked-token accuracy {before.accuracy:.1%} -> {after.accuracy:.1%} "
            f"(loss {before.loss:.3f} -> {after.loss:.3f}, {after.tokens} tokens)" if before and after else "")
    log(f"{run.steps} steps, {result.epochs} epochs ({run.stopped}), {result.cpu_seconds} CPU-s; "
        f"MLM loss {result.first_loss:.3f} -> {final_loss:.3f}{held}")
    return result


def _write_meta(out: Path, config: PretrainConfig, result: PretrainResult, counts: dict) -> None:
    meta = {
        "steps": result.steps,
        "epochs": result.epochs,
        "stopped": result.stopped,
        "seconds": result.seconds,
        "cpu_seconds": result.cpu_seconds,
        **counts,
        "first_loss": round(result.first_loss, 4),
        "final_loss": round(result.final_loss, 4),
        "held_out_before": result.held_out_before.to_json() if result.held_out_before else None,
        "held_out_after": result.held_out_after.to_json() if result.held_out_after else None,
        "curve": result.curve,
        "texts_sha256": data_hash(config.texts),
        "config": asdict(config),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (out / META).write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")


__all__ = ["PretrainConfig", "PretrainResult", "MlmScores", "Encoded", "Masker", "read_texts", "encode_texts",
           "word_groups", "mask_words", "length_batches", "masked_lm", "mlm_loss", "evaluate_mlm", "fixed_batches",
           "pretrain"]
