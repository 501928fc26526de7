"""PyTorch -> ONNX: the emission graph, and its fp16 variant. The CRF stays outside the graph
(Viterbi runs in numpy; its parameters ship in crf.npz)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch


def export_onnx(model: torch.nn.Module, path: Path, opset: int) -> None:
    """The emission graph; a model with lexicon features takes them as a third input."""
    model.eval()
    ids = torch.ones((2, 12), dtype=torch.long)
    mask = torch.ones((2, 12), dtype=torch.long)
    args, names = (ids, mask), ["input_ids", "attention_mask"]
    width = getattr(model, "lexicon_width", 0)
    if width:
        args, names = (ids, mask, torch.zeros((2, 12, width))), [*names, "lexicon"]
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "emissions"]}
    # Attention exported in its plain form (matmul, mask add, softmax): the SDPA form adds NaN
    # guards (IsNaN, Where) to every layer, and the static int8 model ran 3.7% slower with them.
    # An ensemble (model.ensemble) has one encoder per member.
    encoders = [getattr(m, "encoder", None) for m in getattr(model, "members", [model])]
    switched = [(e, e.config._attn_implementation) for e in encoders
                if getattr(getattr(e, "config", None), "_attn_implementation", "eager") != "eager"
                and hasattr(e, "set_attn_implementation")]
    for encoder, _ in switched:
        encoder.set_attn_implementation("eager")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(model, args, str(path), input_names=names, output_names=["emissions"],
                              opset_version=opset, dynamo=False, dynamic_axes=axes)
    finally:
        for encoder, before in switched:
            encoder.set_attn_implementation(before)


def convert_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # Inputs and outputs stay int64/float32 so callers do not care which variant runs.
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
