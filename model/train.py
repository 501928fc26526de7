"""Training: AdamW with warm-up and linear decay, early stopping on dev entity micro-F1."""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from model import bert_crf
from model.augment import mention_swapper
from model.config import TrainConfig
from model.data import DataError, Example, data_hash, labels_in, load_examples, split_dev, unlabelled_repeats
from model.metrics import Scores, entity_scores
from model.pretrain_lexicon import start_projection
from model.samples import (Sample, batch_tensors, bucketed_batches, collate, length_batches,  # noqa: F401
                           make_samples, training_samples, weak_o_prior)
from model.schedule import BudgetSchedule, LastEpochs
from model.teacher import unit_posteriors
from model.vocab import base_model_tokenizer, build_wordpiece, read_tokenizer
from stream.tagging.decode import ScoreFn, tag_texts
from stream.tagging.lexicon import LEXICON_FILE, Lexicon
from stream.tagging.spans import Span, entity_types, label_list
from stream.tagging.taxonomy import Taxonomy, TaxonomyError
from stream.tagging.tokenization import PaddedBatch, TextEncoder

TAGGER_META = "tagger.json"
TOKENIZER = "tokenizer.json"
EPOCH_LOG = "metrics.jsonl"
TAXONOMY = "taxonomy.json"         # the taxonomy the checkpoint's bundles ship (see export/taxonomy.py)


@dataclass
class TrainResult:
    out: Path
    best_epoch: int
    dev: Scores
    epochs: list[dict] = field(default_factory=list)
    samples_per_second: float = 0.0
    stopped: str = ""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def torch_scorer(model: bert_crf.BertCrf) -> ScoreFn:
    def score(batch: PaddedBatch):
        with torch.no_grad():
            paths = model.decode(**batch_tensors(batch))
        return paths, None
    return score


def predict(model: bert_crf.BertCrf, encoder: TextEncoder, labels: Sequence[str], examples: Sequence[Example],
            batch_size: int = 64, score: ScoreFn | None = None) -> list[list[Span]]:
    """The model's spans per example; ``score`` decodes instead of the model's own (e.g. with a bias)."""
    model.eval()
    tagged = tag_texts(encoder, [e.text for e in examples], score or torch_scorer(model), labels,
                       batch_size=batch_size)
    return [[Span(t.start, t.end, t.type) for t in spans] for spans in tagged]


def evaluate_model(model, encoder, labels, examples, batch_size: int = 64, score: ScoreFn | None = None) -> Scores:
    """Entity scores; gold types outside ``labels`` stay in, as misses, and are listed."""
    return entity_scores([e.spans for e in examples], predict(model, encoder, labels, examples, batch_size, score),
                         known=entity_types(labels))


def checkpoint_taxonomy(config: TrainConfig) -> Path | None:
    """The taxonomy a checkpoint carries to its bundles: the one given, else the lexicon's only
    taxonomy JSON source (``TYPE=FILE`` sources are word lists). Checked before training starts."""
    sources = [spec for spec in config.lexicon if "=" not in spec]
    chosen = config.taxonomy or (sources[0] if len(sources) == 1 else None)
    if chosen is None:
        return None
    try:
        Taxonomy.load(chosen)  # a checkpoint never carries a taxonomy its bundle would be refused for
    except TaxonomyError as err:
        raise DataError(str(err)) from None
    return Path(chosen)


def _split(config: TrainConfig, log: Callable[[str], None]) -> tuple[list[Example], list[Example], list[str], int]:
    """(train examples, dev examples, labels, titles read from --weak). Dev labels absent from training
    (a long tail of types split at random) are a warning: their spans stay in the dev gold and count as
    misses. Partial examples (--weak, or ``partial`` in --train) are training data only, never dev."""
    examples = load_examples(config.train, repair=config.repair)
    if not examples:
        raise DataError(f"{', '.join(config.train)}: no training examples")
    partial = [e for e in examples if e.partial]
    gold = [e for e in examples if not e.partial]
    if config.dev:
        dev = load_examples([config.dev], repair=config.repair)
        if any(e.partial for e in dev):
            raise DataError(f"{config.dev}: dev data must be fully labelled, but it has partial examples")
        train_examples = gold
    elif not gold:
        raise DataError(f"{', '.join(config.train)}: only partial examples; give --dev (fully labelled)")
    else:
        train_examples, dev = split_dev(gold, config.dev_fraction, config.seed)
    weak = [replace(e, partial=True) for e in load_examples(config.weak)]
    partial += weak
    if config.weak_unmatched == "unknown":
        # With nothing known and no prior, every tag sequence is allowed: loss and gradient are zero.
        empty = sum(not e.spans for e in partial)
        partial = [e for e in partial if e.spans]
        if empty:
            log(f"partial examples without spans skipped (nothing known about them): {empty}")
    train_examples = train_examples + partial
    labels = label_list(labels_in(train_examples))
    unseen = sorted(set(labels_in(dev)) - set(labels_in(train_examples)))
    if unseen:
        spans = sum(s.label in unseen for e in dev for s in e.spans)
        log(f"warning: labels {unseen} appear in dev ({config.dev or 'the held-out share'}) but not in training "
            f"data: the model cannot predict them; their dev spans ({spans}) count as misses")
    return train_examples, dev, labels, len(weak)


def _encoder(config: TrainConfig, train_examples: Sequence[Example]):
    """(tokenizer, encoder module): the base model's, or a small BERT and a vocabulary given or built from the data."""
    if config.base_model:
        return base_model_tokenizer(config.base_model), bert_crf.pretrained_encoder(config.base_model)
    tokenizer = (read_tokenizer(config.tokenizer) if config.tokenizer
                 else build_wordpiece([e.text for e in train_examples], vocab_size=config.vocab_size))
    return tokenizer, bert_crf.scratch_encoder(tokenizer.get_vocab_size(), config.layers, config.hidden,
                                               config.heads, max(512, config.max_length))


def _optimizer(config: TrainConfig, model: bert_crf.BertCrf) -> torch.optim.AdamW:
    head = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    decay = [p for n, p in model.encoder.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.encoder.named_parameters() if p.ndim <= 1]
    return torch.optim.AdamW([
        {"params": decay, "lr": config.encoder_lr, "weight_decay": config.weight_decay},
        {"params": no_decay, "lr": config.encoder_lr, "weight_decay": 0.0},
        {"params": head, "lr": config.head_lr, "weight_decay": 0.0},
    ])


def _model(config: TrainConfig, encoder_module, labels: list[str], lexicon: Lexicon | None) -> bert_crf.BertCrf:
    model = bert_crf.BertCrf(encoder_module, len(labels), config.dropout, lexicon.width if lexicon is not None else 0,
                             config.lexicon_dim, config.lexicon_at, config.head, config.bigrams)
    bert_crf.constrain_softmax(model, labels)
    return model


def _start_checkpoint(out: Path, tokenizer, lexicon: Lexicon | None, taxonomy: Path | None) -> None:
    """What the checkpoint holds besides weights and meta; leftovers of an earlier run go."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / TOKENIZER))
    for name in (LEXICON_FILE, TAXONOMY):
        (out / name).unlink(missing_ok=True)
    if lexicon is not None:
        lexicon.save(out / LEXICON_FILE)
    if taxonomy:
        shutil.copyfile(taxonomy, out / TAXONOMY)
    (out / EPOCH_LOG).write_text("", encoding="utf-8")


def _over_budget(config: TrainConfig, wall: float, cpu: float) -> bool:
    return bool((config.max_seconds and wall > config.max_seconds)
                or (config.max_cpu_seconds and cpu > config.max_cpu_seconds))


def _step(model: bert_crf.BertCrf, batch: dict[str, torch.Tensor], optimizer, scheduler, clip: float) -> float:
    """One optimiser step; the partial-annotation loss only for batches that hold unknown units,
    so gold-only batches train exactly as before."""
    loss = model.partial_loss(**batch) if "allowed" in batch else model.loss(**batch)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    scheduler.step()
    return loss.item()


def _lexicon_meta(config: TrainConfig, lexicon: Lexicon, from_base: list[str] | None) -> dict:
    """``from_base``: the feature groups whose projection started from the base model's (`start_projection`)."""
    words = {"source": lexicon.words.source, "entries": len(lexicon.words)} if lexicon.words is not None else None
    return {"types": list(lexicon.types), "width": lexicon.width, "dim": config.lexicon_dim, "at": config.lexicon_at,
            "entries": len(lexicon), "sources": list(config.lexicon), "from_train": config.lexicon_from_train,
            "folds": config.lexicon_folds, "words": words, "from_base": from_base}


def _meta(config: TrainConfig, labels: list[str], lexicon: Lexicon | None, taxonomy: Path | None,
          best_epoch: int, best_scores: Scores | None, stopped: str, samples_per_second: float | None,
          cpu_seconds: float, weak_titles: int = 0, from_base: list[str] | None = None) -> dict:
    """The checkpoint's tagger.json: what loading, exporting and reporting need to know."""
    return {
        "name": config.name,
        "labels": labels,
        "max_length": config.max_length,
        "stride": config.stride,
        "units": config.units,
        "dropout": config.dropout,
        "head": config.head,
        "bigrams": config.bigrams,
        "lexicon": _lexicon_meta(config, lexicon, from_base) if lexicon is not None else None,
        "taxonomy": str(taxonomy) if taxonomy else None,
        "cpu_seconds": round(cpu_seconds, 1),
        "base_model": str(config.base_model) if config.base_model else None,
        "train_files": list(config.train),
        "weak": {"files": list(config.weak), "titles": weak_titles,
                 "unmatched": config.weak_unmatched, "teacher": config.weak_teacher,
                 "weight": config.weak_weight} if config.weak else None,
        "training_data_sha256": data_hash([*config.train, *config.weak]),
        "best_epoch": best_epoch,
        "dev": best_scores.to_json() if best_scores else None,
        "train_samples_per_second": samples_per_second,
        "stopped": stopped,
        "config": asdict(config),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _record_epoch(out: Path, epoch: int, losses: list[float], scores: Scores, seconds: float,
                  samples_per_second: float | None, log: Callable[[str], None]) -> dict:
    """One epoch's record, appended to the checkpoint's epoch log and logged."""
    record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
              "dev_micro_f1": scores.micro.f1, "dev": scores.to_json(), "seconds": round(seconds, 2),
              "train_samples_per_second": samples_per_second}
    with (out / EPOCH_LOG).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    log(f"epoch {epoch}: loss {record['train_loss']:.4f}  dev micro-F1 {scores.micro.f1:.4f}  "
        f"({samples_per_second} samples/s)")
    return record


def _describe_lexicon(config: TrainConfig, lexicon: Lexicon | None) -> str:
    if lexicon is None:
        return ""
    words = f", words: {lexicon.words.source} ({len(lexicon.words)})" if lexicon.words is not None else ""
    return f"; lexicon ({config.lexicon_at}): {len(lexicon)} entries, {len(lexicon.types)} types{words}"


def _describe_unknown(config: TrainConfig, examples: Sequence[Example], o_prior: float | None,
                      repeats: dict | None) -> str:
    """The train log's word on units the loss leaves unknown: weak titles' and unlabelled repeats'."""
    out = ""
    if any(e.partial for e in examples):
        out += (f"; partial texts: {sum(e.partial for e in examples)} (unmatched: {config.weak_unmatched}"
                + (f", P(O) {o_prior:.3f}" if o_prior is not None else "") + ")")
    if repeats is not None:
        out += f"; unlabelled repeats left unknown: {sum(map(len, repeats.values()))} in {len(repeats)} titles"
    return out


def _teacher_priors(config: TrainConfig, examples: Sequence[Example], labels: Sequence[str]) -> dict | None:
    """With ``--weak-teacher``: its posteriors per unit of each weak title's text (`unit_posteriors`)."""
    if not config.weak_teacher:
        return None
    return unit_posteriors(load_checkpoint(config.weak_teacher), [e.text for e in examples if e.partial], labels)


def _with_teacher(config: TrainConfig, log: Callable[[str], None]) -> TrainConfig:
    """Under ``--weak-unmatched teacher`` without ``--weak-teacher``: the teacher is trained first, on
    the gold titles alone with the same settings, into ``<out>/teacher``."""
    if config.weak_unmatched != "teacher" or config.weak_teacher is not None:
        return config
    teacher = str(Path(config.out) / "teacher")
    log(f"teacher: training on the gold titles alone into {teacher}")
    train(replace(config, weak=(), weak_unmatched="prior", out=teacher), log=log)
    return replace(config, weak_teacher=teacher)


def train(config: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    config = _with_teacher(config, log)
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    taxonomy = checkpoint_taxonomy(config)
    train_examples, dev, labels, weak_titles = _split(config, log)
    priors = _teacher_priors(config, train_examples, labels)

    tokenizer, encoder_module = _encoder(config, train_examples)
    text_encoder = TextEncoder(tokenizer, config.max_length, config.stride, units=config.units)
    repeats = unlabelled_repeats(train_examples) if config.unlabelled_repeats == "unknown" else None
    samples, snapped, lexicon = training_samples(config, text_encoder, train_examples, labels, priors, repeats)
    o_prior = weak_o_prior(config, samples)
    text_encoder = text_encoder.with_lexicon(lexicon)
    swapper = mention_swapper(config, text_encoder, train_examples, labels, priors)
    model = _model(config, encoder_module, labels, lexicon)
    from_base = start_projection(model, config, lexicon, log)

    log(f"train: {len(train_examples)} texts -> {len(samples)} windows, {len(labels)} tags; "
        f"dev: {len(dev)} texts; spans snapped to token edges: {snapped}"
        + _describe_unknown(config, train_examples, o_prior, repeats) + _describe_lexicon(config, lexicon)
        + (f"; taxonomy {taxonomy} goes with the checkpoint" if taxonomy else ""))

    optimizer = _optimizer(config, model)
    schedule = BudgetSchedule(config, steps_per_epoch=math.ceil(len(samples) / config.batch_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)

    out = Path(config.out)
    _start_checkpoint(out, tokenizer, lexicon, taxonomy)
    rng = random.Random(config.seed)
    started, cpu_started = time.monotonic(), time.process_time()
    best_f1, best_epoch, best_scores, stale = -1.0, 0, None, 0
    epochs: list[dict] = []
    seen, train_time, stopped, last_epochs = 0, 0.0, "epochs", LastEpochs(config.average_last)
    for epoch in range(1, config.epochs + 1):
        model.train()
        epoch_start, losses = time.monotonic(), []
        samples = swapper.samples(rng) if swapper is not None else samples
        bar = tqdm(bucketed_batches(samples, config.batch_size, rng), desc=f"epoch {epoch}", unit="batch",
                   leave=False, disable=None)
        for batch_ids in bar:
            batch = collate([samples[i] for i in batch_ids], text_encoder, len(labels), o_prior)
            losses.append(_step(model, batch, optimizer, scheduler, config.clip))
            seen += len(batch_ids)
            if scheduler.last_epoch == 20:
                schedule.observe(20, time.monotonic() - started, time.process_time() - cpu_started)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if _over_budget(config, time.monotonic() - started, time.process_time() - cpu_started):
                stopped = "time budget"
                break
        train_time += time.monotonic() - epoch_start
        scores = evaluate_model(model, text_encoder, labels, dev)
        schedule.observe(scheduler.last_epoch, time.monotonic() - started, time.process_time() - cpu_started)
        epochs.append(_record_epoch(out, epoch, losses, scores, time.monotonic() - epoch_start,
                                    round(seen / train_time, 1) if train_time else None, log))
        last_epochs.add(model)
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
    averaged = last_epochs.keep_average_if_better(model, lambda: evaluate_model(model, text_encoder, labels, dev),
                                                  best_f1, out, log)
    best_scores = averaged or best_scores
    meta = _meta(config, labels, lexicon, taxonomy, best_epoch, best_scores, stopped, round(seen / train_time, 1)
                 if train_time else None, time.process_time() - cpu_started, weak_titles, from_base)
    meta["averaged_epochs"] = len(last_epochs.states) if averaged else None
    if meta["weak"] is not None:
        meta["weak"]["o_prior"] = o_prior
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
    taxonomy: Path | None = None      # the taxonomy its bundles ship by default; None: trained without one


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
    # Checkpoints from before the input form lack "at": theirs is the output form.
    width = lexicon.width if lexicon is not None else 0
    model = bert_crf.load(path, len(meta["labels"]), meta.get("dropout", 0.1), width,
                          lexicon_meta["dim"] if lexicon_meta else 32,
                          lexicon_meta.get("at", "output") if lexicon_meta else "output", meta.get("head", "crf"),
                          meta.get("bigrams", 0))
    # Checkpoints from before sub-token units lack "units": theirs are words.
    encoder = TextEncoder.from_file(path / TOKENIZER, meta["max_length"], meta["stride"], lexicon,
                                    meta.get("units", "words"))
    taxonomy = path / TAXONOMY
    return Checkpoint(model, encoder, meta["labels"], meta, path, taxonomy if taxonomy.is_file() else None)
