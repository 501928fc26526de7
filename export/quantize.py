"""fp32 ONNX -> int8: dynamic quantisation of the weights (activations stay float)."""

from __future__ import annotations

import logging
from pathlib import Path


def quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("root").setLevel(logging.ERROR)  # the quantizer warns about pre-processing on every call
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
