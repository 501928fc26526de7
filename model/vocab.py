"""Tokenizers for training: a WordPiece vocabulary built from the data, or a base model's own.

Both get NFKC in front of BERT's normaliser, so full-width ＸＬ and half-width XL are one token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from model.data import DataError
from stream.tagging.tokenization import SPECIAL_TOKENS


def _normalizer(lowercase: bool = True) -> normalizers.Normalizer:
    return normalizers.Sequence([
        normalizers.NFKC(),
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                   lowercase=lowercase),
    ])


def build_wordpiece(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 1) -> Tokenizer:
    """A BERT-style WordPiece tokenizer trained on ``texts``; every CJK character is its own token."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = _normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def read_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer.json saved with an earlier checkpoint (``--tokenizer``), so a from-scratch model
    reads the very ids another one read; refused with what is wrong when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such tokenizer file")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:   # the tokenizers library raises a bare Exception for a malformed file
        raise DataError(f"{path}: not a tokenizer.json ({err})") from None
    missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
    if missing:
        raise DataError(f"{path}: the tokenizer lacks the special tokens {missing}")
    return tokenizer


def base_model_tokenizer(base_model: str | Path) -> Tokenizer:
    """The tokenizer shipped with a local BERT-family checkpoint (tokenizer.json or vocab.txt)."""
    base = Path(base_model)
    if (base / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    elif (base / "vocab.txt").is_file():
        tokenizer = Tokenizer(models.WordPiece.from_file(str(base / "vocab.txt"), unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
    else:
        raise FileNotFoundError(f"{base}: no tokenizer.json or vocab.txt in the base model folder")
    lowercase = True
    existing = tokenizer.normalizer
    if existing is not None and "lowercase=False" in repr(existing):
        lowercase = False
    tokenizer.normalizer = _normalizer(lowercase)
    tokenizer.post_processor = None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer
