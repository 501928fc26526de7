"""Shared fixtures: small tokenizers and data paths; no network, no model hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.synth import DEMO_TAXONOMY  # noqa: F401  (re-exported: the tests take it from here)

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = ROOT.parent / "shared" / "data" / "ecommerce-ner"

SAMPLE_TEXTS = [
    "耐克 Nike Air Max 270 男士跑步鞋 黑色 42码 2026新款 包邮",
    "【正品】华为 HUAWEI Mate 60 Pro 手机 雅川青 12GB+512GB",
    "UNIQLO women's cotton T-shirt, white, size M — free shipping!",
    "ＮＩＫＥ 运动裤 ＸＬ 纯棉/涤纶 秋冬款 | hot sale",
    "Levi's 501 Original Fit Jeans Blue 32x34 denim",
]


@pytest.fixture(scope="session")
def wordpiece():
    from model.vocab import build_wordpiece

    return build_wordpiece(SAMPLE_TEXTS * 3, vocab_size=400)


def real_data_or_skip() -> Path:
    if not (REAL_DATA / "train.bioes").is_file():
        pytest.skip(f"real labelled data not found at {REAL_DATA} (it lives in ../shared/data, outside the repo)")
    return REAL_DATA


def write_synth(path: Path, n: int, seed: int, lang: str = "mixed") -> Path:
    """A synthetic labelled file from the demo taxonomy (deterministic)."""
    import json

    from model.synth import generate, load_taxonomy_json

    records = generate(load_taxonomy_json(DEMO_TAXONOMY), n, seed=seed, lang=lang)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def train_on_synthetic_titles(root: Path, *, titles: int, dev: int, layers: int, hidden: int, epochs: int,
                              vocab_size: int) -> Path:
    """A from-scratch BERT-CRF trained on synthetic titles (train seed 11, dev seed 12); its checkpoint
    carries the demo taxonomy the titles come from, so its bundles ship it."""
    from model.train import TrainConfig, train

    train_file = write_synth(root / "train.jsonl", titles, seed=11)
    dev_file = write_synth(root / "dev.jsonl", dev, seed=12)
    train(TrainConfig(train=(str(train_file),), dev=str(dev_file), out=str(root / "checkpoint"), layers=layers,
                      hidden=hidden, heads=2, epochs=epochs, batch_size=16, threads=2, vocab_size=vocab_size,
                      taxonomy=str(DEMO_TAXONOMY)),
          log=lambda _: None)
    return root / "checkpoint"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A small from-scratch BERT-CRF trained for a few seconds on synthetic titles."""
    pytest.importorskip("torch")
    return train_on_synthetic_titles(tmp_path_factory.mktemp("tiny"), titles=300, dev=220, layers=1, hidden=32,
                                     epochs=3, vocab_size=2000)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint exported (fp32 + int8) through the parity gate."""
    from export.bundle import export_bundle
    from export.config import ExportConfig

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    export_bundle(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(out), int8=True, version="1"),
                  log=lambda _: None)
    return out
