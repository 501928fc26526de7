"""Export and retrain settings, and how an export refuses; importable without PyTorch, so the CLI
derives its options from these fields (help in ``metadata["help"]``; no default: required)."""

from __future__ import annotations

from dataclasses import dataclass

from model.config import TrainConfig, option, required

MIN_PARITY_TEXTS = 200
# SmoothQuant's migration strength alpha (Xiao et al., 2023) for static int8: channel j of a
# MatMul's input is divided by s_j = max|x_j|^alpha / max|w_j|^(1 - alpha) and row j of its weight
# multiplied by it; 0 turns it off. Chosen on held-out emissions (README, "Model bundles").
INT8_SMOOTHING = 0.8


class ExportError(RuntimeError):
    """The export did not pass its gate; nothing was written."""


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: str = required("checkpoint directory to export")
    out: str = required("bundle directory to create")
    held_out: tuple[str, ...] = option((), "labelled texts for parity and F1 (default: the checkpoint's dev file)")
    members: tuple[str, ...] = option((), "more checkpoints trained like CHECKPOINT (same tokenizer, labels, units "
                                          "and lexicon; e.g. other seeds): the bundle's model is their seed ensemble, "
                                          "the mean of every member's emissions and CRF, in one graph; each member "
                                          "adds one model's inference", metavar="CHECKPOINT")
    taxonomy: str | None = option(None, "taxonomy JSON shipped in the bundle (default: the checkpoint's; "
                                        "without one, an empty taxonomy of the label types)")
    int8: bool = option(False, "also write an int8 model, static: activation scales calibrated on the held-out "
                               "texts, so a text's tags do not depend on its batch")
    int8_dynamic: bool = option(False, "with --int8: quantise dynamically instead (scales per batch at run "
                                       "time; tags can depend on the batch)")
    int8_smoothing: float = option(INT8_SMOOTHING, "with static --int8: SmoothQuant's alpha, how much of the "
                                                   "activations' outlier channels is moved into the weights before "
                                                   "quantising (0: none)", minimum=0, below=1)
    fp16: bool = option(False, "also write an fp16 model (for GPUs)")
    opset: int = option(17, "ONNX opset", above=0)
    atol: float = option(1e-4, "emission parity tolerance", above=0)
    max_parity_texts: int = option(1000, "most held-out texts the parity gate runs on", minimum=MIN_PARITY_TEXTS)
    version: str | None = option(None, "model version (default: UTC timestamp)")
    force: bool = option(False, "replace an existing bundle directory")


@dataclass(frozen=True)
class RetrainConfig:
    store: str = required("model store: bundles plus the CURRENT pointer workers watch")
    held_out: tuple[str, ...] = required("labelled texts both models are judged on")
    training: TrainConfig = required("how the challenger is trained (its out is ignored: the job keeps "
                                     "checkpoints in the store)")
    tolerance: float = option(0.005, "allowed micro-F1 drop against the champion", minimum=0, below=1)
    int8: bool = option(False, "also write a static (calibrated) int8 model into the challenger bundle")
    members: int = option(1, "train this many challengers (seeds SEED, SEED+1, ...) and ship their seed ensemble as "
                             "one bundle (see `export --members`; each member adds one model's inference)", minimum=1)
    taxonomy: str | None = option(None, "taxonomy JSON the challenger ships (default: the champion's; with no "
                                        "champion, the checkpoint's)")
    reviewed: tuple[str, ...] = option((), "reviewed titles (`tagstream review pull` JSONL): extra training data; the "
                                           "report counts them and says what they changed on the held-out set",
                                       metavar="FILE")
    reviewed_baseline: bool = option(False, "with --reviewed: also train without them (same settings, seeds and "
                                            "members) and report the held-out F1 with and without")
