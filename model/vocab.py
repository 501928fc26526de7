"""Tokenizers for training: a WordPiece vocabulary built from the data, or a base model's own.

Both get NFKC in front of BERT's normaliser, so full-width ＸＬ and half-width XL are one token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

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
