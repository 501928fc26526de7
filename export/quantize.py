"""fp32 ONNX -> int8. Static by default: per-channel int8 weights and activation scales fixed at
export from the held-out texts, so a text's tags never depend on what else is in its batch (a
replay gives the same record). Dynamic (scales per batch at run time) is kept as an option."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from stream.tagging.tokenization import TextEncoder

CALIBRATION_TEXTS = 128       # held-out texts whose activations set the scales
CALIBRATION_BATCH = 16
MS_DOMAIN = "com.microsoft"


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic quantisation: int8 weights, activation scales computed per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("root").setLevel(logging.ERROR)  # the quantizer warns about pre-processing on every call
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def calibration_feeds(encoder: TextEncoder, texts: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """The model's inputs for the first window of up to CALIBRATION_TEXTS texts, in batches of
    CALIBRATION_BATCH; their attention masks keep padding out of the ranges."""
    windows = [encoder.windows(u)[0] for u in encoder.units(list(texts[:CALIBRATION_TEXTS])) if len(u)]
    feeds = []
    for start in range(0, len(windows), CALIBRATION_BATCH):
        padded = encoder.pad(windows[start:start + CALIBRATION_BATCH])
        feed = {"input_ids": padded.input_ids, "attention_mask": padded.attention_mask}
        if padded.lexicon is not None:
            feed["lexicon"] = padded.lexicon
        feeds.append(feed)
    return feeds


def weight_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMul nodes whose second operand is a constant matrix. Attention's Q.K^T and weights.V
    multiply two activations: they stay fp32, where quantising both costs accuracy for little speed."""
    matrices = {init.name for init in model.graph.initializer if len(init.dims) == 2}
    return [node for node in model.graph.node if node.op_type == "MatMul" and node.input[1] in matrices]


def activation_ranges(model: onnx.ModelProto, tensors: Sequence[str],
                      feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """(low, high) of each tensor over the real tokens of ``feeds`` (padded positions are computed,
    never read), widened to hold 0 so that zero is exact. Min and max, not a percentile: BERT's
    [CLS] and [SEP] carry a few huge activations that attention relies on, and they are rare enough
    for a percentile to clip (at the 99.99th, -4.9 F1 points on ae-110k titles; min/max -0.4)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    lows, highs = dict.fromkeys(tensors, 0.0), dict.fromkeys(tensors, 0.0)
    for feed in feeds:
        real = feed["attention_mask"].astype(bool)
        for name, value in zip(tensors, session.run(list(tensors), dict(feed))):
            # shape: (batch, seq, features) -> (real tokens, features)
            value = value[real] if value.ndim == 3 and value.shape[:2] == real.shape else value
            lows[name], highs[name] = min(lows[name], float(value.min())), max(highs[name], float(value.max()))
    return {name: (lows[name], highs[name]) for name in tensors}


def uint8_scale(low: float, high: float) -> tuple[float, int]:
    """Asymmetric uint8: the scale and zero point that map [low, high] (low <= 0 <= high) onto 0..255."""
    scale = (high - low) / 255.0 if high > low else 1.0
    return scale, int(np.clip(round(-low / scale), 0, 255))


def int8_per_column(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output column (-127..127, zero point 0): the values and a scale per column."""
    # shape: (in, out) -> (out,)
    scale = np.maximum(np.abs(weight).max(axis=0), 1e-12) / 127.0
    return np.clip(np.round(weight / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


@dataclass
class _Rewrite:
    """What replaces the quantised MatMuls: nodes by the output of the MatMul they replace, the
    outputs of the bias Adds they absorb, and the new constants (outputs are unique in a graph)."""
    nodes: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    absorbed: set[str] = field(default_factory=set)
    initializers: list[onnx.TensorProto] = field(default_factory=list)


def _bias_add(matmul: onnx.NodeProto, consumers: Mapping[str, list[onnx.NodeProto]],
              vectors: Mapping[str, int], columns: int) -> tuple[onnx.NodeProto, str] | None:
    """The Add of a constant vector of ``columns`` values that is the MatMul's only consumer, and
    that vector."""
    users = consumers.get(matmul.output[0], [])
    if len(users) != 1 or users[0].op_type != "Add":
        return None
    add = users[0]
    bias = add.input[1] if add.input[0] == matmul.output[0] else add.input[0]
    return (add, bias) if vectors.get(bias) == columns else None


def _integer_matmuls(model: onnx.ModelProto, matmuls: Sequence[onnx.NodeProto],
                     ranges: Mapping[str, tuple[float, float]]) -> _Rewrite:
    """Each MatMul as a MatMulIntegerToFloat fed by one QuantizeLinear per input tensor (placed
    before its first user), with per-column int8 weights and the bias Add that follows it."""
    inits = {init.name: init for init in model.graph.initializer}
    vectors = {name: init.dims[0] for name, init in inits.items() if len(init.dims) == 1}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    rewrite, quantized = _Rewrite(), set()      # quantized: the input and weight tensors done
    for node in matmuls:
        x, w = node.input[0], node.input[1]
        new = []
        if x not in quantized:
            scale, zero_point = uint8_scale(*ranges[x])
            rewrite.initializers += [numpy_helper.from_array(np.array(scale, np.float32), f"{x}_scale"),
                                     numpy_helper.from_array(np.array(zero_point, np.uint8), f"{x}_zero_point")]
            new.append(helper.make_node("QuantizeLinear", [x, f"{x}_scale", f"{x}_zero_point"], [f"{x}_uint8"],
                                        name=f"{x}_QuantizeLinear"))
            quantized.add(x)
        if w not in quantized:
            values, scales = int8_per_column(numpy_helper.to_array(inits[w]).astype(np.float32))
            rewrite.initializers += [numpy_helper.from_array(values, f"{w}_int8"),
                                     numpy_helper.from_array(scales, f"{w}_scale")]
            quantized.add(w)
        inputs, output = [f"{x}_uint8", f"{w}_int8", f"{x}_scale", f"{w}_scale", f"{x}_zero_point", ""], node.output[0]
        bias = _bias_add(node, consumers, vectors, inits[w].dims[1])
        if bias is not None:    # added in the kernel's float epilogue instead of a pass of its own
            output = bias[0].output[0]
            rewrite.absorbed.add(output)
            inputs.append(bias[1])
        new.append(helper.make_node("MatMulIntegerToFloat", inputs, [output], name=node.name, domain=MS_DOMAIN))
        rewrite.nodes[node.output[0]] = new
    return rewrite


def quantize_int8_static(src: Path, dst: Path, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
    """Static int8: each weight MatMul becomes a QuantizeLinear with the scale calibrated on
    ``feeds`` and a MatMulIntegerToFloat with per-column int8 weights and the bias folded in.

    The product stays float. Requantising it too (QDQ's QLinearMatMul, then a DequantizeLinear
    before the bias and residual adds) lost 2.4 F1 points on the fine-tuned MiniLM of
    bench/inference.py; this form under half a point there and on ae-110k titles, and runs 1.3x
    as fast."""
    if not feeds:
        raise ValueError("static int8 needs calibration texts; none had a token")
    model = onnx.load(str(src))
    matmuls = weight_matmuls(model)
    ranges = activation_ranges(model, sorted({node.input[0] for node in matmuls}), feeds)
    rewrite = _integer_matmuls(model, matmuls, ranges)
    nodes = [new for node in model.graph.node if node.output[0] not in rewrite.absorbed
             for new in rewrite.nodes.get(node.output[0], [node])]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + rewrite.initializers)
    # With shapes known, ONNX Runtime 1.31 fuses each residual Add + LayerNormalization into a
    # SkipLayerNormalization whose CPU kernel took several times as long as the pair (profiled).
    del model.graph.value_info[:]
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    onnx.save(model, str(dst))
