"""Training and pretraining settings, importable without PyTorch: the CLI derives its options from
these fields (stream/cli/options.py).

Field metadata: ``help``, and where a value has bounds ``minimum`` (inclusive), ``above`` or
``below`` (exclusive); ``metavar``. A field without a default is a required input.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from stream.tagging.tokenization import UNITS

DEFAULT_EPOCHS = 10       # pretraining epochs when no budget is given at all
LEXICON_AT = ("input", "output")
HEADS = ("crf", "softmax")
AUGMENT_FROM = ("train", "lexicon")
LEXICON_TRAIN_TYPES = ("shared", "own")
UNLABELLED_REPEATS = ("o", "unknown")
WEAK_UNMATCHED = ("prior", "unknown", "teacher", "o")
WHOLE_WORDS = ("chars", "jieba")
# What `bench/accuracy.py` found best per language (README, "Recipes"); a recipe fills only the
# settings left at their defaults, so a flag given beside it still wins.
RECIPES = {
    "zh": {"words": "jieba", "lexicon_at": "input", "lr": 1e-3, "lexicon_from_train": True, "lexicon_folds": 8},
    "en": {"lr": 2e-4, "max_length": 64, "stride": 16, "units": "tokens", "head": "softmax", "lexicon_from_train": True,
           "lexicon_folds": 8},
}
RECIPE_SETTINGS = tuple(sorted({name for recipe in RECIPES.values() for name in recipe}))


def option(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, **meta})


def required(help: str, **meta: Any) -> Any:
    return field(metadata={"help": help, **meta})


@dataclass(frozen=True)
class TrainConfig:
    train: tuple[str, ...] = required("labelled JSONL or CoNLL files")
    out: str = required("checkpoint directory")
    dev: str | None = option(None, "dev file for early stopping (default: dev_fraction of the training data)")
    base_model: str | None = option(None, "local folder of a BERT-family checkpoint (default: a small BERT "
                                          "trained from scratch)")
    layers: int = option(2, "encoder layers of a from-scratch model", above=0)
    hidden: int = option(128, "hidden size of a from-scratch model (a multiple of heads)", above=0)
    heads: int = option(4, "attention heads of a from-scratch model", above=0)
    vocab_size: int = option(8000, "WordPiece vocabulary size of a from-scratch model", above=0)
    tokenizer: str | None = option(None, "tokenizer.json a from-scratch model reads instead of a vocabulary built "
                                         "from the data (building one is not repeatable: two runs differ in about 150 "
                                         "of 8,000 entries); e.g. another seed's, so the two can form an ensemble",
                                 metavar="FILE")
    max_length: int = option(128, "sub-tokens per window", above=0)
    stride: int = option(32, "sub-tokens shared by overlapping windows", minimum=0)
    units: str = option("words", "what a tag sits on: 'words' (a pre-tokenised word, read from its first sub-token) "
                                 "or 'tokens' (every sub-token, so a value may end inside a word: 'Men' in 'Mens'). "
                                 "Shipped in the bundle", choices=UNITS)
    epochs: int = option(20, "most passes over the training data", above=0)
    batch_size: int = option(16, "windows per training step", above=0)
    lr: float | None = option(None, "encoder learning rate (default 5e-5 pretrained, 1e-3 scratch)", above=0)
    # The emission and CRF layers learn from zero, so faster than the encoder.
    head_lr: float = option(5e-3, "emission and CRF learning rate", above=0)
    warmup: float = option(0.1, "share of steps spent warming up", minimum=0, below=1)
    weight_decay: float = option(0.01, "AdamW weight decay of the encoder's matrices", minimum=0)
    clip: float = option(1.0, "gradient norm clip", above=0)
    dropout: float = option(0.1, "dropout before the emission layer", minimum=0, below=1)
    patience: int = option(3, "epochs without dev improvement before stopping", above=0)
    average_last: int = option(0, "at the end, average the weights of the last N epochs' models, and keep the "
                                   "average where its dev F1 beats the best single epoch (0 or 1: off)", minimum=0)
    seed: int = option(13, "random seed")
    max_seconds: float | None = option(None, "training time budget (wall clock)", above=0)
    max_cpu_seconds: float | None = option(None, "training budget in process CPU time (the same compute on a "
                                                 "busy machine)", above=0)
    lexicon: tuple[str, ...] = option((), "lexicon features from taxonomy JSON files or TYPE=FILE word lists",
                                      metavar="SOURCE")
    lexicon_from_train: bool = option(False, "add the training set's entity strings to the lexicon (the training "
                                             "titles are split into --lexicon-folds folds, each flagged by the "
                                             "other folds' strings; serving gets them all)", negatable=True)
    lexicon_folds: int = option(2, "with --lexicon-from-train: folds of the training titles; each is flagged by "
                                   "the entity strings of the others, so with more folds training sees nearly "
                                   "the coverage serving gets", minimum=2)
    lexicon_min_ratio: float = option(0.0, "keep a lexicon entry (given, or a training mention) only where the "
                                           "training titles label it in at least this share of the places it "
                                           "occurs; entries they never contain stay (0: off; at most 1; counted "
                                           "out of fold like --lexicon-from-train)", minimum=0)
    lexicon_train_types: str = option("shared", "with --lexicon-from-train: 'shared' flags the training mentions "
                                                "under their labels' lexicon types, beside the given sources; 'own' "
                                                "under types of their own (HP@train), so the model weighs them apart",
                                      choices=LEXICON_TRAIN_TYPES)
    lexicon_fold_seed: bool = option(False, "deal the training titles into the lexicon folds at random by --seed "
                                            "instead of by position, so the members of a seed ensemble learn from "
                                            "different flags")
    lexicon_at: str = option("output", "where lexicon features join the model: input adds a learnt vector per "
                                       "active flag to the token embeddings, so attention sees them; output "
                                       "concatenates their embedding to the encoder's output vectors",
                             choices=LEXICON_AT)
    lexicon_dim: int = option(32, "size of the lexicon feature embedding at the output (at the input it is the "
                                  "token embedding size)", above=0)
    bigrams: int = option(0, "hashed bigram embeddings: each token's input embedding also gets a learnt vector for the "
                             "pair it forms with its left and with its right neighbour, hashed into this many "
                             "buckets (0: off; e.g. 32768 for Chinese characters). Computed inside the model, so "
                             "serving feeds nothing new", minimum=0)
    augment_mentions: float = option(0.0, "mention replacement: every epoch, swap each entity mention of a gold "
                                          "training title, with this probability, for another mention of its type "
                                          "(see --augment-from); 0: off", minimum=0, below=1)
    augment_from: str = option("train", "where --augment-mentions draws its mentions: 'train' the training set's "
                                        "own mentions (as often as they occur); 'lexicon' those and every --lexicon "
                                        "entry of the type (a swapped-in lexicon entry is always flagged, so the model "
                                        "learns to trust the flags more than real titles bear out)",
                               choices=AUGMENT_FROM)
    unlabelled_repeats: str = option("o", "a string that is an entity in some training title but occurs in another "
                                          "with no span on it: 'o' trains it as O, as labelled; 'unknown' leaves its "
                                          "units to the partial-annotation CRF (any tag; see --weak-unmatched for how "
                                          "unknown units are weighed), since an annotator may have missed it",
                                     choices=UNLABELLED_REPEATS)
    head: str = option("crf", "output layer: 'crf' (a linear-chain CRF, Viterbi at serving) or 'softmax' (each unit "
                              "on its own, cross-entropy; decoded as the best path BIOES allows)", choices=HEADS)
    words: str | None = option(None, "untyped word-boundary features from a word dictionary: 'jieba' (the installed "
                                      "jieba package's, about 350,000 Chinese words) or a file of 'word frequency' "
                                      "lines; per character, the frequency-weighted share of words that begin, "
                                      "continue, end or form it. Shipped in the bundle", metavar="DICT")
    weak: tuple[str, ...] = option((), "weakly labelled JSONL (e.g. from `tagstream autolabel`): training data whose "
                                       "unmatched positions are unknown; never dev", metavar="FILE")
    weak_unmatched: str = option("prior", "what weak (partial) examples' positions outside their spans are, to the "
                                          "partial-annotation CRF (marginal likelihood over every tag sequence that "
                                          "agrees with the known spans): 'prior' unknown, O with probability "
                                          "--weak-o-prior and the entity tags sharing the rest; 'unknown' every tag "
                                          "equally possible; 'teacher' unknown, weighted by the tag posteriors of "
                                          "--weak-teacher; 'o' O (the naive baseline)", choices=WEAK_UNMATCHED)
    weak_o_prior: float | None = option(None, "with --weak-unmatched prior: how likely an unknown position is O "
                                              "(default: the share of O units in the gold training titles)",
                                        above=0, below=1)
    weak_weight: float = option(1.0, "weight of each weak title in the loss, against 1 for a gold title (below 1: "
                                     "the gold titles' word counts for more than the dictionary's)", above=0)
    weak_teacher: str | None = option(None, "with --weak-unmatched teacher: a checkpoint trained on the gold titles "
                                            "(same base model), whose CRF posteriors weigh each unknown position "
                                            "(default: one is trained first, with these settings, into OUT/teacher)",
                                      metavar="CHECKPOINT")
    taxonomy: str | None = option(None, "taxonomy JSON saved with the checkpoint, which its bundles ship "
                                        "(default: the lexicon's taxonomy JSON when exactly one is given)")
    threads: int | None = option(None, "CPU threads for PyTorch", above=0)
    repair: bool = option(False, "repair I- without B- in CoNLL input")
    dev_fraction: float = option(0.1, "share of the training data held out as dev when no dev file is given",
                                 above=0, below=1)
    name: str = option("tagstream-tagger", "model name recorded in the checkpoint")
    recipe: str | None = option(None, "the measured best settings for a language, for every setting left at its default: "
                                      + "; ".join(f"{k}: " + ", ".join(f"{n}={v}" for n, v in r.items())
                                                  for k, r in RECIPES.items()), choices=tuple(RECIPES))
    # Not a flag: the CLI lists here the recipe settings given on its command line, so that
    # `--recipe en --units words` keeps words although words is the default.
    pinned: tuple[str, ...] = option((), "settings a recipe leaves as they are, even at their default", cli=False)

    def __post_init__(self) -> None:
        if self.recipe is not None:
            if self.recipe not in RECIPES:
                raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
            defaults = {f.name: f.default for f in fields(self)}
            for name, value in RECIPES[self.recipe].items():
                if getattr(self, name) == defaults[name] and name not in self.pinned:
                    object.__setattr__(self, name, value)
        if self.lexicon_at not in LEXICON_AT:
            raise ValueError(f"lexicon_at must be one of {', '.join(LEXICON_AT)}, got {self.lexicon_at!r}")
        if self.weak_unmatched not in WEAK_UNMATCHED:
            raise ValueError(f"weak_unmatched must be one of {', '.join(WEAK_UNMATCHED)}, got {self.weak_unmatched!r}")
        if self.units not in UNITS:
            raise ValueError(f"units must be one of {', '.join(UNITS)}, got {self.units!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.tokenizer is not None and self.base_model is not None:
            raise ValueError("--tokenizer is for models trained from scratch: a base model reads its own")
        if self.weak_teacher is not None and self.weak_unmatched != "teacher":
            raise ValueError("--weak-teacher is for --weak-unmatched teacher")
        if self.augment_from not in AUGMENT_FROM:
            raise ValueError(f"augment_from must be one of {', '.join(AUGMENT_FROM)}, got {self.augment_from!r}")
        if self.unlabelled_repeats not in UNLABELLED_REPEATS:
            raise ValueError(f"unlabelled_repeats must be one of {', '.join(UNLABELLED_REPEATS)}, "
                             f"got {self.unlabelled_repeats!r}")
        if self.augment_mentions and self.unlabelled_repeats != "o":
            raise ValueError("--augment-mentions and --unlabelled-repeats unknown are not built to go together "
                             "(a swapped title's ranges move)")
        if self.head != "crf" and self.unlabelled_repeats != "o":
            raise ValueError("--unlabelled-repeats unknown needs the CRF head (--head crf; --recipe en picks "
                             "softmax): the partial-annotation loss sums over tag sequences")
        if self.augment_mentions and self.lexicon_from_train:
            raise ValueError("--augment-mentions swaps in training mentions, which --lexicon-from-train would flag "
                             "wherever they land: use one or the other (--no-lexicon-from-train turns off a "
                             "recipe's)")
        in_folds = self.lexicon_from_train or self.lexicon_min_ratio   # the settings that split training into folds
        if self.lexicon_fold_seed and not in_folds:
            raise ValueError("--lexicon-fold-seed is for --lexicon-from-train (or --lexicon-min-ratio)")
        if self.lexicon_folds != 2 and not in_folds and (self.recipe is None or "lexicon_folds" in self.pinned):
            raise ValueError("--lexicon-folds is for --lexicon-from-train (or --lexicon-min-ratio)")
        if not 0 <= self.lexicon_min_ratio <= 1:
            raise ValueError(f"--lexicon-min-ratio is a share of an entry's occurrences, from 0 to 1, got "
                             f"{self.lexicon_min_ratio:g}")
        if self.lexicon_train_types not in LEXICON_TRAIN_TYPES:
            raise ValueError(f"lexicon_train_types must be one of {', '.join(LEXICON_TRAIN_TYPES)}, "
                             f"got {self.lexicon_train_types!r}")
        if self.lexicon_min_ratio and not (self.lexicon or self.lexicon_from_train):
            raise ValueError("--lexicon-min-ratio prunes a lexicon: give --lexicon or --lexicon-from-train")
        if self.lexicon_train_types != "shared" and not self.lexicon_from_train:
            raise ValueError("--lexicon-train-types is for --lexicon-from-train")
        if self.head != "crf" and self.weak:
            raise ValueError("--weak needs the CRF head (--head crf; --recipe en picks softmax): the "
                             "partial-annotation loss sums over tag sequences")

    @property
    def encoder_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 5e-5 if self.base_model else 1e-3


@dataclass(frozen=True)
class PretrainConfig:
    texts: tuple[str, ...] = option((), "plain text (one per line), product events or `tail` dumps of the input "
                                        "topic (JSONL), labelled JSONL or CoNLL")
    out: str = option("pretrained", "base model directory to write")
    layers: int = option(2, "encoder layers", above=0)
    hidden: int = option(128, "hidden size (a multiple of heads)", above=0)
    heads: int = option(4, "attention heads", above=0)
    vocab_size: int = option(8000, "WordPiece vocabulary size", above=0)
    max_length: int = option(128, "sub-tokens per text; longer texts are cut", minimum=8)
    batch_size: int = option(32, "texts per step", above=0)
    # On the real titles 1e-3 beat 5e-4 (2,000 steps) and 2e-3 (600).
    lr: float = option(1e-3, "peak learning rate", above=0)
    warmup: float = option(0.06, "share of the schedule spent warming up", minimum=0, below=1)
    weight_decay: float = option(0.01, "AdamW weight decay", minimum=0)
    clip: float = option(1.0, "gradient norm clip", above=0)
    mask_prob: float = option(0.15, "share of words predicted (all sub-tokens of a word; each CJK character is "
                                    "a word)", above=0, below=1)
    whole_words: str = option("chars", "what a masked word is: 'chars' (every CJK character, every space-separated "
                                       "word) or 'jieba' (Chinese words as jieba segments them; all characters of a "
                                       "word are masked together)", choices=WHOLE_WORDS)
    epochs: int | None = option(None, f"passes over the texts (default {DEFAULT_EPOCHS} when no budget is given)",
                                above=0)
    max_steps: int | None = option(None, "step budget", above=0)
    max_seconds: float | None = option(None, "wall-clock budget", above=0)
    max_cpu_seconds: float | None = option(None, "process CPU-time budget: the same compute on a busy machine",
                                           above=0)
    held_out: float = option(0.02, "share of texts kept aside for the final masked-token accuracy",
                             minimum=0, below=0.5)
    seed: int = option(13, "random seed")
    threads: int | None = option(None, "CPU threads for PyTorch", above=0)
    lexicon: tuple[str, ...] = option((), "lexicon flags at the input already while pretraining: taxonomy JSON files "
                                          "or TYPE=FILE word lists, summed into the token embeddings through a learnt "
                                          "projection saved beside the base model; `train --base-model --lexicon-at "
                                          "input` starts its own from it where types agree", metavar="SOURCE")
    words: str | None = option(None, "word-boundary flags at the input while pretraining, from a word dictionary "
                                      "('jieba' or a file of 'word frequency' lines), as `train --words` gives them",
                               metavar="DICT")

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden size {self.hidden} must be a multiple of heads {self.heads}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if not 0.0 <= self.held_out < 0.5:
            raise ValueError(f"held_out must be in [0, 0.5), got {self.held_out}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self.max_length}")

    @property
    def epoch_limit(self) -> int | None:
        if self.epochs is not None:
            return self.epochs
        budgets = (self.max_steps, self.max_seconds, self.max_cpu_seconds)
        return DEFAULT_EPOCHS if all(b is None for b in budgets) else None
