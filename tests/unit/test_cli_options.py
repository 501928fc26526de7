"""The CLI's options come from the config dataclasses: every field is an option with its help and
default, parsing gives back the config, and every verb's --help works without PyTorch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import fields
from pathlib import Path

import pytest

from export.config import ExportConfig, RetrainConfig
from model.config import PretrainConfig, TrainConfig
from stream.cli import build_parser
from stream.cli.options import from_args
from stream.cli.training import training_config
from stream.service.demo import DemoConfig
from stream.service.drift import DriftConfig
from stream.service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
VERBS = [["synth"], ["convert"], ["check-data"], ["train"], ["pretrain"], ["evaluate"], ["export"], ["retrain"],
         ["rollback"], ["tag"], ["worker"], ["produce"], ["tail"], ["demo"], ["taxonomy", "validate"],
         ["taxonomy", "stats"], ["taxonomy", "diff"], ["taxonomy", "suggest"], ["taxonomy", "apply"],
         ["drift", "report"]]


def _help(capsys, *verb: str) -> str:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*verb, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("verb, configs, skip", [
    ("train", [TrainConfig], ()),
    ("pretrain", [PretrainConfig], ()),
    ("export", [ExportConfig], ()),
    ("retrain", [RetrainConfig, TrainConfig], ("training", "out", "taxonomy")),  # --taxonomy: the retrain one
    ("demo", [DemoConfig], ()),
    ("worker", [Settings], ()),
])
def test_every_config_field_is_an_option_with_its_help(capsys, verb, configs, skip):
    text = " ".join(_help(capsys, verb).split())
    for config in configs:
        for f in fields(config):
            if f.name not in skip and f.metadata.get("cli") is not False:
                assert f"--{f.name.replace('_', '-')}" in text, (verb, f.name)
                assert f.metadata.get("help") and " ".join(f.metadata["help"].split())[:30] in text, (verb, f.name)


def test_parsing_gives_back_the_config_with_its_defaults():
    args = build_parser().parse_args(["train", "--train", "a.jsonl", "b.jsonl", "--out", "ck", "--lexicon", "t.json",
                                      "--lexicon", "brand=b.txt", "c.txt", "--dropout", "0.2"])
    assert training_config(args) == TrainConfig(train=("a.jsonl", "b.jsonl"), out="ck", dropout=0.2,
                                                lexicon=("t.json", "brand=b.txt", "c.txt"))
    args = build_parser().parse_args(["pretrain", "--texts", "a.txt", "--texts", "b.txt", "--out", "base"])
    assert from_args(args, PretrainConfig) == PretrainConfig(texts=("a.txt", "b.txt"), out="base")
    args = build_parser().parse_args(["demo"])
    assert from_args(args, DemoConfig) == DemoConfig()
    assert (DemoConfig().kafka_bootstrap, DemoConfig().metrics_port) == (Settings().kafka_bootstrap,
                                                                         Settings().metrics_port)


def test_a_recipe_fills_the_settings_left_at_their_defaults_and_a_given_flag_wins():
    args = build_parser().parse_args(["train", "--train", "a.bioes", "--out", "ck", "--recipe", "zh"])
    config = training_config(args)
    assert (config.words, config.lexicon_at, config.recipe) == ("jieba", "input", "zh")
    assert (config.lexicon_from_train, config.lexicon_folds) == (True, 8)
    # A switch the recipe turns on can be turned off, its folds then unused; folds given without it are refused.
    args = build_parser().parse_args(["train", "--train", "a.bioes", "--out", "ck", "--recipe", "zh",
                                      "--no-lexicon-from-train"])
    assert (training_config(args).lexicon_from_train, training_config(args).words) == (False, "jieba")
    args = build_parser().parse_args(["train", "--train", "a.bioes", "--out", "ck", "--recipe", "zh",
                                      "--no-lexicon-from-train", "--lexicon-folds", "4"])
    with pytest.raises(ValueError, match="--lexicon-folds is for --lexicon-from-train"):
        training_config(args)
    args = build_parser().parse_args(["train", "--train", "a.jsonl", "--out", "ck", "--recipe", "en", "--lr", "1e-4"])
    config = training_config(args)
    assert (config.lr, config.max_length, config.stride, config.units, config.head) == (1e-4, 64, 16, "tokens",
                                                                                         "softmax")
    assert (config.lexicon_from_train, config.lexicon_folds, config.lexicon_at) == (True, 8, "output")
    # A softmax head cannot train on partial titles: the recipe says which flag to give.
    weak = ["train", "--train", "a.jsonl", "--out", "ck", "--recipe", "en", "--weak", "w.jsonl"]
    args = build_parser().parse_args(weak)
    with pytest.raises(ValueError, match="--head crf; --recipe en picks softmax"):
        training_config(args)
    args = build_parser().parse_args(weak + ["--head", "crf"])
    assert training_config(args).head == "crf"
    # A flag that names the default value wins too.
    args = build_parser().parse_args(["train", "--train", "a.jsonl", "--out", "ck", "--recipe", "en", "--units", "words"])
    assert training_config(args).units == "words"
    args = build_parser().parse_args(["train", "--train", "a.bioes", "--out", "ck", "--recipe", "zh",
                                      "--lexicon-at", "output"])
    assert (training_config(args).lexicon_at, training_config(args).words) == ("output", "jieba")
    with pytest.raises(ValueError, match="recipe must be one of zh, en"):
        TrainConfig(train=("a",), out="b", recipe="fr")


def test_retrain_keeps_its_own_taxonomy_apart_from_the_training_config():
    args = build_parser().parse_args(["retrain", "--train", "t.jsonl", "--store", "s", "--held-out", "h.jsonl",
                                      "--taxonomy", "new.json", "--epochs", "2"])
    training = training_config(args, ("out", *(f.name for f in fields(RetrainConfig))), out="")
    config = from_args(args, RetrainConfig, training=training)
    assert (config.taxonomy, config.held_out, training.taxonomy, training.epochs) == ("new.json", ("h.jsonl",), None, 2)


@pytest.mark.parametrize("argv, needle", [
    (["train", "--train", "a", "--out", "o", "--layers", "0"], "positive integer"),
    (["train", "--train", "a", "--out", "o", "--warmup", "1"], "a number in [0, 1)"),
    (["pretrain", "--texts", "a", "--out", "o", "--max-length", "4"], "an integer of at least 8"),
    (["pretrain", "--texts", "a", "--out", "o", "--mask-prob", "0"], "a number in (0, 1)"),
    (["export", "--checkpoint", "c", "--out", "o", "--atol", "x"], "expected a positive number, got 'x'"),
    (["tag", "--bundle", "b", "--variant", "int4"], "invalid choice"),
])
def test_a_value_out_of_range_is_refused_by_the_parser(capsys, argv, needle):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(argv)
    assert done.value.code == 2 and needle in capsys.readouterr().err


def test_drift_defaults_are_the_settings_defaults():
    assert DriftConfig() == DriftConfig.from_settings(Settings())
    changed = Settings(drift_min_texts=7, candidate_min_share=0.5)
    assert (DriftConfig.from_settings(changed).min_texts, DriftConfig.from_settings(changed).candidate_min_share) \
        == (7, 0.5)


def test_every_help_works_without_torch():
    script = textwrap.dedent(f"""
        import contextlib, io, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {{'torch', 'transformers', 'torchcrf', 'onnx', 'onnxscript'}}:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        sys.meta_path.insert(0, Block())
        from stream.cli import main
        for verb in {VERBS!r}:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
                main([*verb, "--help"])
            assert out.getvalue().startswith("usage: tagstream " + " ".join(verb)), (verb, out.getvalue())
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
