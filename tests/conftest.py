"""Shared fixtures: small tokenizers and data paths; no network, no model hub."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = ROOT.parent / "shared" / "data" / "ecommerce-ner"
DEMO_TAXONOMY = ROOT / "model" / "resources" / "demo_taxonomy.json"

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
