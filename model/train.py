"""Training: AdamW with warm-up and linear decay, early stopping on dev entity micro-F1."""

from __future__ import annotations

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
from tqdm import tqdm

from model import bert_crf
from model.data import DataError, Example, data_hash, labels_in, read_conll, read_jsonl
from model.metrics import Scores, entity_scores
from model.vocab import base_model_tokenizer, build_wordpiece
from stream.tagging.decode import ScoreFn, tag_texts
from stream.tagging.lexicon import LEXICON_FILE, Lexicon, read_specs
from stream.tagging.spans import Span, label_list, unit_tags
from stream.tagging.tokenization import PaddedBatch, TextEncoder, Window

TAGGER_META = "tagger.json"
TOKENIZER = "tokenizer.json"
EPOCH_LOG = "metrics.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    train: tuple[str, ...]
    out: str
    dev: str | None = None
    base_model: str | None = None      # a local BERT-family folder; None trains from scratch
    layers: int = 2                    # scratch model shape
    hidden: int = 128
    heads: int = 4
    vocab_size: int = 8000
    max_length: int = 128
    stride: int = 32
    epochs: int = 20
    batch_size: int = 16
    lr: float | None = None            # encoder; default 5e-5 pretrained, 1e-3 scratch
    head_lr: float = 5e-3              # emission and CRF layers learn from zero, so faster
    warmup: float = 0.1
    weight_decay: float = 0.01
    clip: float = 1.0
    dropout: float = 0.1
    patience: int = 3
    seed: int = 13
    max_seconds: float | None = None
    max_cpu_seconds: float | None = None   # process CPU time: the same compute on a busy machine
    lexicon: tuple[str, ...] = ()      # taxonomy JSON files or TYPE=FILE word lists
    lexicon_from_train: bool = False   # add the training set's entity strings to the lexicon
    lexicon_dim: int = 32
    threads: int | None = None
    repair: bool = False
    dev_fraction: float = 0.1
    name: str = "tagstream-tagger"

    @property
    def encoder_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 5e-5 if self.base_model else 1e-3


@dataclass
class TrainResult:
    out: Path
    best_epoch: int
    dev: Scores
    epochs: list[dict] = field(default_factory=list)
    samples_per_second: float = 0.0
    stopped: str = ""


def load_examples(paths: Sequence[str | Path], *, repair: bool = False) -> list[Example]:
    """JSONL by suffix (.jsonl/.json), otherwise a CoNLL file (BIO, IOB2 or BIOES)."""
    out: list[Example] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: no such file")
        if path.suffix in {".jsonl", ".json"}:
            out.extend(read_jsonl(path))
        else:
            out.extend(read_conll(path, repair=repair).examples)
    return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True, slots=True)
class Sample:
    window: Window
    tags: list[int]   # one tag id per unit the window covers


def make_samples(encoder: TextEncoder, examples: Sequence[Example], labels: Sequence[str]) -> tuple[list[Sample], int]:
    """One sample per window; returns the samples and how many spans were snapped to units."""
    index = {tag: i for i, tag in enumerate(labels)}
    samples, snapped = [], 0
    for ex, units in zip(examples, encoder.units([e.text for e in examples])):
        tags, bad = unit_tags(units.spans, ex.spans)
        snapped += len(bad)
        for w in encoder.windows(units):
            samples.append(Sample(w, [index[t] for t in tags[w.unit_start:w.unit_end]]))
    return samples, snapped


def batch_tensors(batch: PaddedBatch) -> dict[str, torch.Tensor]:
    out = {"input_ids": torch.from_numpy(batch.input_ids), "attention_mask": torch.from_numpy(batch.attention_mask),
           "unit_positions": torch.from_numpy(batch.unit_positions), "unit_mask": torch.from_numpy(batch.unit_mask)}
    if batch.lexicon is not None:
        out["lexicon"] = torch.from_numpy(batch.lexicon)
    return out


def collate(samples: Sequence[Sample], encoder: TextEncoder) -> dict[str, torch.Tensor]:
    """The serving padding (`TextEncoder.pad`) plus the gold tags, as tensors."""
    batch = encoder.pad([s.window for s in samples])
    tags = torch.zeros(batch.unit_mask.shape, dtype=torch.long)
    for row, s in enumerate(samples):
        tags[row, :len(s.tags)] = torch.tensor(s.tags)
    return {**batch_tensors(batch), "tags": tags}


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


def training_samples(config: TrainConfig, encoder: TextEncoder, examples: list[Example],
                     labels: Sequence[str]) -> tuple[list[Sample], int, Lexicon | None]:
    """Samples, spans snapped, and the lexicon the checkpoint serves with (None without one).

    A lexicon made from the training set's own entities would mark every gold span, and the
    model would learn to trust it blindly; so each half of the training texts gets features
    from the other half's entities (plus the given sources), and serving gets them all.
    """
    given = read_specs(config.lexicon) if config.lexicon else {}
    if not given and not config.lexicon_from_train:
        samples, snapped = make_samples(encoder, examples, labels)
        return samples, snapped, None
    own = entity_strings(examples) if config.lexicon_from_train else {}
    types = sorted(set(given) | set(own) | {label[2:] for label in labels if label != "O"})
    lexicon = Lexicon.build(types, merge_forms(given, own))
    if not config.lexicon_from_train:
        samples, snapped = make_samples(encoder.with_lexicon(lexicon), examples, labels)
        return samples, snapped, lexicon
    halves = [examples[0::2], examples[1::2]]
    samples, snapped = [], 0
    for k, half in enumerate(halves):
        other = Lexicon.build(types, merge_forms(given, entity_strings(halves[1 - k])))
        part, bad = make_samples(encoder.with_lexicon(other), half, labels)
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


def torch_scorer(model: bert_crf.BertCrf) -> ScoreFn:
    def score(batch: PaddedBatch):
        with torch.no_grad():
            paths = model.decode(**batch_tensors(batch))
        return paths, None
    return score


def predict(model: bert_crf.BertCrf, encoder: TextEncoder, labels: Sequence[str], examples: Sequence[Example],
            batch_size: int = 64) -> list[list[Span]]:
    model.eval()
    tagged = tag_texts(encoder, [e.text for e in examples], torch_scorer(model), labels, batch_size=batch_size)
    return [[Span(t.start, t.end, t.type) for t in spans] for spans in tagged]


def evaluate_model(model, encoder, labels, examples, batch_size: int = 64) -> Scores:
    return entity_scores([e.spans for e in examples], predict(model, encoder, labels, examples, batch_size))


def split_dev(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_dev = max(1, int(len(examples) * fraction))
    dev = {i for i in order[:n_dev]}
    return [e for i, e in enumerate(examples) if i not in dev], [examples[i] for i in sorted(dev)]


class BudgetSchedule:
    """Linear warm-up and decay over the steps training will really take. With a time budget that
    is not ``epochs`` full epochs: the horizon is re-estimated from the pace so far (evaluations
    included), so the rate still decays to zero when the budget runs out instead of staying
    in warm-up."""

    def __init__(self, config: TrainConfig, steps_per_epoch: int) -> None:
        self.config = config
        self.cap = self.total = steps_per_epoch * config.epochs
        self.warmup = int(config.warmup * self.total)
        self._warmup_fixed = not (config.max_seconds or config.max_cpu_seconds)

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return step / max(1, self.warmup)
        return max(0.0, (self.total - step) / max(1, self.total - self.warmup))

    def observe(self, step: int, wall: float, cpu: float) -> None:
        """After ``step`` steps taking ``wall`` / ``cpu`` seconds so far, re-aim the horizon."""
        if not step:
            return
        reachable = [budget / (spent / step) for budget, spent in
                ((self.config.max_seconds, wall), (self.config.max_cpu_seconds, cpu)) if budget and spent > 0]
        if not reachable:
            return
        self.total = max(step + 1, min(self.cap, int(min(reachable))))
        if not self._warmup_fixed:
            self.warmup = int(self.config.warmup * self.total)
            self._warmup_fixed = True


def train(config: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    examples = load_examples(config.train, repair=config.repair)
    if not examples:
        raise DataError(f"{', '.join(config.train)}: no training examples")
    if config.dev:
        dev = load_examples([config.dev], repair=config.repair)
        train_examples = examples
    else:
        train_examples, dev = split_dev(examples, config.dev_fraction, config.seed)
    labels = label_list(labels_in(train_examples))
    unknown = set(labels_in(dev)) - set(labels_in(train_examples))
    if unknown:
        raise DataError(f"{config.dev}: labels {sorted(unknown)} appear in dev but not in training data")

    if config.base_model:
        tokenizer = base_model_tokenizer(config.base_model)
        encoder_module = bert_crf.pretrained_encoder(config.base_model)
    else:
        tokenizer = build_wordpiece([e.text for e in train_examples], vocab_size=config.vocab_size)
        encoder_module = bert_crf.scratch_encoder(tokenizer.get_vocab_size(), config.layers, config.hidden,
                                                  config.heads, max(512, config.max_length))
    text_encoder = TextEncoder(tokenizer, config.max_length, config.stride)
    samples, snapped, lexicon = training_samples(config, text_encoder, train_examples, labels)
    text_encoder = text_encoder.with_lexicon(lexicon)
    width = lexicon.width if lexicon else 0
    model = bert_crf.BertCrf(encoder_module, len(labels), config.dropout, width, config.lexicon_dim)

    log(f"train: {len(train_examples)} texts -> {len(samples)} windows, {len(labels)} tags; "
        f"dev: {len(dev)} texts; spans snapped to token edges: {snapped}"
        + (f"; lexicon: {len(lexicon)} entries over {len(lexicon.types)} types" if lexicon else ""))

    head = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    decay = [p for n, p in model.encoder.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.encoder.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([
        {"params": decay, "lr": config.encoder_lr, "weight_decay": config.weight_decay},
        {"params": no_decay, "lr": config.encoder_lr, "weight_decay": 0.0},
        {"params": head, "lr": config.head_lr, "weight_decay": 0.0},
    ])
    steps_per_epoch = math.ceil(len(samples) / config.batch_size)
    schedule = BudgetSchedule(config, steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / TOKENIZER))
    (out / LEXICON_FILE).unlink(missing_ok=True)
    if lexicon:
        lexicon.save(out / LEXICON_FILE)
    (out / EPOCH_LOG).write_text("", encoding="utf-8")
    rng = random.Random(config.seed)
    started, cpu_started = time.monotonic(), time.process_time()
    best_f1, best_epoch, best_scores, stale = -1.0, 0, None, 0
    epochs: list[dict] = []
    seen, train_time, stopped = 0, 0.0, "epochs"
    for epoch in range(1, config.epochs + 1):
        model.train()
        epoch_start, losses = time.monotonic(), []
        bar = tqdm(bucketed_batches(samples, config.batch_size, rng), desc=f"epoch {epoch}", unit="batch",
                   leave=False, disable=None)
        for batch_ids in bar:
            batch = collate([samples[i] for i in batch_ids], text_encoder)
            loss = model.loss(**batch)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            seen += len(batch_ids)
            if scheduler.last_epoch == 20:
                schedule.observe(20, time.monotonic() - started, time.process_time() - cpu_started)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if config.max_seconds and time.monotonic() - started > config.max_seconds:
                stopped = "time budget"
                break
            if config.max_cpu_seconds and time.process_time() - cpu_started > config.max_cpu_seconds:
                stopped = "time budget"
                break
        train_time += time.monotonic() - epoch_start
        scores = evaluate_model(model, text_encoder, labels, dev)
        schedule.observe(scheduler.last_epoch, time.monotonic() - started, time.process_time() - cpu_started)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
                  "dev_micro_f1": scores.micro.f1, "dev": scores.to_json(),
                  "seconds": round(time.monotonic() - epoch_start, 2),
                  "train_samples_per_second": round(seen / train_time, 1) if train_time else None}
        epochs.append(record)
        with (out / EPOCH_LOG).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        log(f"epoch {epoch}: loss {record['train_loss']:.4f}  dev micro-F1 {scores.micro.f1:.4f}  "
            f"({record['train_samples_per_second']} samples/s)")
        if scores.micro.f1 > best_f1:
            best_f1, best_epoch, best_scores, stale = scores.micro.f1, epoch, scores, 0
            bert_crf.save(model, out)
        else:
            stale += 1
        if stopped == "time budget":
            break
        if stale >= config.patience:
            stopped = "early stopping"
            break
        if best_f1 >= 1.0 and losses and np.mean(losses) < 0.01:
            stopped = "converged"
            break
    meta = {
        "name": config.name,
        "labels": labels,
        "max_length": config.max_length,
        "stride": config.stride,
        "dropout": config.dropout,
        "lexicon": {"types": list(lexicon.types), "width": lexicon.width, "dim": config.lexicon_dim,
                    "entries": len(lexicon), "sources": list(config.lexicon),
                    "from_train": config.lexicon_from_train} if lexicon else None,
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "base_model": str(config.base_model) if config.base_model else None,
        "train_files": list(config.train),
        "training_data_sha256": data_hash(config.train),
        "best_epoch": best_epoch,
        "dev": best_scores.to_json() if best_scores else None,
        "train_samples_per_second": round(seen / train_time, 1) if train_time else None,
        "stopped": stopped,
        "config": asdict(config),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (out / TAGGER_META).write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    return TrainResult(out, best_epoch, best_scores, epochs, meta["train_samples_per_second"] or 0.0, stopped)


@dataclass
class Checkpoint:
    """A trained tagger loaded back for evaluation or export."""

    model: bert_crf.BertCrf
    encoder: TextEncoder
    labels: list[str]
    meta: dict
    path: Path


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    for name in (TAGGER_META, TOKENIZER, bert_crf.WEIGHTS, bert_crf.ENCODER_CONFIG):
        if not (path / name).is_file():
            raise DataError(f"{path}: not a checkpoint (missing {name})")
    meta = json.loads((path / TAGGER_META).read_text(encoding="utf-8"))
    lexicon_meta = meta.get("lexicon")
    lexicon = None
    if lexicon_meta:
        if not (path / LEXICON_FILE).is_file():
            raise DataError(f"{path}: not a checkpoint (trained with a lexicon, but {LEXICON_FILE} is missing)")
        lexicon = Lexicon.load(path / LEXICON_FILE)
    model = bert_crf.load(path, len(meta["labels"]), meta.get("dropout", 0.1),
                          lexicon.width if lexicon else 0, lexicon_meta["dim"] if lexicon_meta else 32)
    encoder = TextEncoder.from_file(path / TOKENIZER, meta["max_length"], meta["stride"], lexicon)
    return Checkpoint(model, encoder, meta["labels"], meta, path)
