"""fp32 ONNX -> int8. Static by default: per-channel int8 weights and activation scales fixed at
export from the held-out texts, so a text's tags never depend on what else is in its batch (a
replay gives the same record). Dynamic (scales per batch at run time) is kept as an option."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import onnx

from stream.tagging.tokenization import TextEncoder

CALIBRATION_TEXTS = 128       # held-out texts whose activations set the scales
CALIBRATION_BATCH = 16
PERCENTILE = 99.99            # min/max scales let one outlier flatten every other value


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic quantisation: int8 weights, activation scales computed per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("root").setLevel(logging.ERROR)  # the quantizer warns about pre-processing on every call
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def calibration_feeds(encoder: TextEncoder, texts: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """The model's inputs for the first window of up to CALIBRATION_TEXTS texts, every batch padded
    to one sequence length (the calibrator stacks a tensor's values across batches)."""
    windows = [encoder.windows(u)[0] for u in encoder.units(list(texts[:CALIBRATION_TEXTS])) if len(u)]
    padded = encoder.pad(windows)
    feeds = []
    for start in range(0, len(windows), CALIBRATION_BATCH):
        rows = slice(start, start + CALIBRATION_BATCH)
        feed = {"input_ids": padded.input_ids[rows], "attention_mask": padded.attention_mask[rows]}
        if padded.lexicon is not None:
            feed["lexicon"] = padded.lexicon[rows]
        feeds.append(feed)
    return feeds


def _weight_matmuls_only(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes with no constant operand (attention's Q.K^T and weights.V): left in fp32, where
    quantising two activations against each other costs accuracy for little speed."""
    constants = {init.name for init in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and not any(i in constants for i in node.input)]


def quantize_int8_static(src: Path, dst: Path, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
    """QDQ int8: per-channel weights, activation scales from ``feeds`` (the 99.99th percentile)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    if not feeds:
        raise ValueError("static int8 needs calibration texts; none had a token")
    logging.getLogger("root").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):     # the calibrator prints its histogram settings
        quantize_static(str(src), str(dst), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul"],
                        nodes_to_exclude=_weight_matmuls_only(onnx.load(str(src))),
                        calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"CalibPercentile": PERCENTILE, "DedicatedQDQPair": True,
                                       "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}})
