"""Training verbs: `train`, `pretrain`, `evaluate`, `export`, `retrain`, `rollback`.

Their options come from the job configs (model/config.py, export/config.py: no PyTorch there, so
every `--help` works in a serving install). model/ and export/ are imported only inside functions,
PyTorch only once a verb runs, so a serving install says what to install instead of failing."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

from stream.cli.common import CliError, needs_training_extra, verb
from stream.cli.data import read_any
from stream.cli.options import add_options, from_args


def add_verbs(verbs) -> None:
    verb(verbs, "train", "train a BERT-CRF tagger (needs the train extra)", _training_options, cmd_train)
    verb(verbs, "pretrain", "masked-language-model pretraining of a small BERT on unlabelled texts: a base model "
                            "for `train --base-model` (needs the train extra)", _pretrain_options, cmd_pretrain)
    verb(verbs, "evaluate", "entity-level precision/recall/F1 of a checkpoint", _evaluate_options, cmd_evaluate)
    verb(verbs, "export", "export a checkpoint to a model bundle, gated on ONNX parity", _export_options, cmd_export)
    verb(verbs, "retrain", "train a challenger, export it, and promote it if it is not worse "
                           "(exit 0 promoted, 3 rejected, 1 failed)", _retrain_options, cmd_retrain)
    verb(verbs, "rollback", "point the model store back at the previous bundle", _rollback_options, cmd_rollback)


def _log(line: str) -> None:
    print(line, file=sys.stderr)


# ----------------------------------------------------------------------------- train

def _training_options(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    from model.config import RECIPE_SETTINGS, TrainConfig

    add_options(p, TrainConfig, skip=("base_model", *skip))
    # None marks a recipe setting the command line did not give (`_train_config`).
    p.set_defaults(**{name: None for name in RECIPE_SETTINGS if name not in skip})
    base = p.add_mutually_exclusive_group()
    add_options(base, TrainConfig, ("base_model",))
    base.add_argument("--scratch", action="store_true", help="build a vocabulary and a small BERT from the data "
                                                             "(what happens without --base-model)")


def training_config(args: argparse.Namespace, skip: tuple[str, ...] = (), **values):
    """The TrainConfig of the flags; a recipe setting given on the command line is pinned, so the
    recipe leaves it as given even where that is its default."""
    from model.config import RECIPE_SETTINGS, TrainConfig

    given = {name: getattr(args, name) for name in RECIPE_SETTINGS if getattr(args, name, None) is not None}
    return from_args(args, TrainConfig, skip=(*skip, *RECIPE_SETTINGS), **given, pinned=tuple(given), **values)


def _train_config(args: argparse.Namespace, verb_name: str, skip: tuple[str, ...] = (), **values):
    """The TrainConfig of the flags, its inputs checked before PyTorch is imported: a typo in a
    file costs a second, not ten."""
    config = training_config(args, skip, **values)
    for path in [*config.train, *([config.dev] if config.dev else [])]:
        read_any(path, config.repair)
    if config.base_model and not Path(config.base_model).is_dir():
        raise CliError(f"--base-model {config.base_model}: not a directory")
    if config.hidden % config.heads:
        raise CliError(f"--hidden {config.hidden} must be a multiple of --heads {config.heads}")
    _check_lexicon(config.lexicon, config.words)
    _quiet_threads()
    needs_training_extra(verb_name)
    return config


def _check_lexicon(specs: tuple[str, ...], words: str | None) -> None:
    """A bad lexicon source or word dictionary fails before PyTorch is imported (a dictionary read
    here is cached for the run)."""
    if specs:
        from stream.tagging.lexicon import LexiconError, read_specs

        try:
            read_specs(specs)
        except LexiconError as err:
            raise CliError(f"--lexicon: {err}") from None
    if words:
        from model.words import word_dictionary
        from stream.tagging.words import WordsError

        try:
            word_dictionary(words)
        except WordsError as err:
            raise CliError(f"--words: {err}") from None


def _quiet_threads() -> None:
    # Idle OpenMP threads spin by default: on shared cores the spinning counts as CPU time against
    # --max-cpu-seconds and slowed a small model ten-fold. Read once, when PyTorch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cmd_train(args: argparse.Namespace) -> int:
    config = _train_config(args, "train")
    from model.train import train

    result = train(config, log=_log)
    print(f"best epoch {result.best_epoch} ({result.stopped}); dev micro-F1 {result.dev.micro.f1:.4f}; "
          f"{result.samples_per_second} samples/s; checkpoint {result.out}")
    print(result.dev.table())
    return 0


# ----------------------------------------------------------------------------- pretrain

def _pretrain_options(p: argparse.ArgumentParser) -> None:
    from model.config import PretrainConfig

    add_options(p, PretrainConfig, required=("texts", "out"))


def cmd_pretrain(args: argparse.Namespace) -> int:
    from model.config import PretrainConfig
    from model.texts import read_texts

    config = from_args(args, PretrainConfig)
    read_texts(config.texts)  # as for `train`: a bad file fails before PyTorch is imported
    _check_lexicon(config.lexicon, config.words)
    _quiet_threads()
    needs_training_extra("pretrain")
    from model.pretrain import pretrain

    result = pretrain(config, log=_log)
    after = result.held_out_after
    print(f"{result.steps} steps ({result.stopped}), {result.cpu_seconds} CPU-s; MLM loss {result.first_loss:.3f} -> "
          f"{result.final_loss:.3f}" + (f"; held-out masked-token accuracy {after.accuracy:.1%}" if after else "")
          + f"; base model {result.out} (next: tagstream train --base-model {result.out} --lr 1e-3"
          + (" --lexicon-at input, with the same --lexicon/--words" if config.lexicon or config.words else "")
          + "; train's 5e-5 default suits large base models)")
    return 0


# ----------------------------------------------------------------------------- evaluate

def _evaluate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument("--data", nargs="+", required=True, help="labelled JSONL or CoNLL files")
    p.add_argument("--json", help="also write the scores as JSON here")
    p.add_argument("--repair", action="store_true", help="repair I- without B- in CoNLL input")


def cmd_evaluate(args: argparse.Namespace) -> int:
    needs_training_extra("evaluate")
    from model.train import evaluate_model, load_checkpoint, load_examples

    checkpoint = load_checkpoint(args.checkpoint)
    examples = load_examples(args.data, repair=args.repair)
    # Types the checkpoint never learnt stay in the gold (misses) and are listed.
    scores = evaluate_model(checkpoint.model, checkpoint.encoder, checkpoint.labels, examples)
    print(scores.table())
    if args.json:
        Path(args.json).write_text(json.dumps(scores.to_json(), indent=1), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


# ----------------------------------------------------------------------------- export, retrain, rollback

def _export_options(p: argparse.ArgumentParser) -> None:
    from export.config import ExportConfig

    add_options(p, ExportConfig)


def cmd_export(args: argparse.Namespace) -> int:
    from export.config import ExportConfig, ExportError

    config = from_args(args, ExportConfig)
    needs_training_extra("export")
    from export.bundle import export_bundle

    try:
        out = export_bundle(config, log=_log)
    except ExportError as err:
        raise CliError(str(err)) from None
    print(f"bundle written: {out}")
    return 0


def _retrain_options(p: argparse.ArgumentParser) -> None:
    from export.config import RetrainConfig

    add_options(p, RetrainConfig, skip=("training",))
    # The challenger's training options; its checkpoint goes into the store, not to --out.
    _training_options(p, skip=_retrain_names())


def _retrain_names() -> tuple[str, ...]:
    """The TrainConfig fields retrain leaves out: out, and those RetrainConfig sets itself."""
    from export.config import RetrainConfig

    return ("out", *(f.name for f in fields(RetrainConfig)))


def cmd_retrain(args: argparse.Namespace) -> int:
    from export.config import RetrainConfig

    training = _train_config(args, "retrain", skip=_retrain_names(), out="")
    from export.retrain import describe, retrain

    outcome = retrain(from_args(args, RetrainConfig, training=training), log=_log)
    print(describe(outcome))
    return outcome.exit_code


def _rollback_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="model store: bundles plus the CURRENT pointer workers watch")


def cmd_rollback(args: argparse.Namespace) -> int:
    from stream.tagging.bundle import rollback

    before, after = rollback(args.store)
    print(f"{args.store}: live bundle {before} -> {after}")
    return 0
