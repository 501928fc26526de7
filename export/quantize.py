"""fp32 ONNX -> int8. Static by default: per-channel int8 weights and activation scales fixed at
export from the held-out texts, so a text's tags never depend on what else is in its batch (a
replay gives the same record), with the activations' outlier channels first moved into the
weights (SmoothQuant). Dynamic (scales per batch at run time) is kept as an option."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.config import INT8_SMOOTHING
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


def channel_ranges(model: onnx.ModelProto, tensors: Sequence[str],
                   feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per channel (last axis), the lowest and highest value of each tensor over the real tokens of
    ``feeds`` (padded positions are computed, never read)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    lows: dict[str, np.ndarray] = {}
    highs: dict[str, np.ndarray] = {}
    for feed in feeds:
        real = feed["attention_mask"].astype(bool)
        for name, value in zip(tensors, session.run(list(tensors), dict(feed))):
            # shape: (batch, seq, features) -> (real tokens, features)
            value = value[real] if value.ndim == 3 and value.shape[:2] == real.shape else value
            value = value.reshape(-1, value.shape[-1])
            low, high = value.min(axis=0), value.max(axis=0)
            lows[name] = np.minimum(lows[name], low) if name in lows else low
            highs[name] = np.maximum(highs[name], high) if name in highs else high
    return {name: (lows[name], highs[name]) for name in tensors}


def activation_ranges(model: onnx.ModelProto, tensors: Sequence[str],
                      feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """(low, high) of each tensor over the real tokens of ``feeds``, widened to hold 0 so that zero
    is exact. Min and max, not a percentile: BERT's [CLS] and [SEP] carry a few huge activations
    that attention relies on, and they are rare enough for a percentile to clip (at the 99.99th,
    -4.9 F1 points on ae-110k titles; min/max -0.4)."""
    return {name: (min(0.0, float(low.min())), max(0.0, float(high.max())))
            for name, (low, high) in channel_ranges(model, tensors, feeds).items()}


def smoothing_scales(low: np.ndarray, high: np.ndarray, weights: Sequence[np.ndarray], alpha: float) -> np.ndarray:
    """SmoothQuant's s_j for one input tensor (its channels' ranges) and the weights it multiplies
    (each (in, out)): a channel with huge activations is divided down and its weight rows scaled
    up, so the input's one uint8 scale no longer spends its steps on a few channels. A channel
    that is all zero in the activations or the weights keeps s = 1."""
    # shape: (in,)
    act = np.maximum(np.abs(low), np.abs(high)).astype(np.float64)
    weight = np.max([np.abs(w).max(axis=1) for w in weights], axis=0).astype(np.float64)
    live = (act > 0) & (weight > 0)
    scales = np.ones_like(act)
    scales[live] = act[live] ** alpha / weight[live] ** (1.0 - alpha)
    return np.clip(scales, 1e-4, 1e4).astype(np.float32)


def _smooth(model: onnx.ModelProto, matmuls: Sequence[onnx.NodeProto],
            ranges: Mapping[str, tuple[np.ndarray, np.ndarray]], alpha: float) -> dict[str, tuple[float, float]]:
    """Rewrite ``model`` in place so that each MatMul reads its input divided by s (one Mul per
    input tensor, after the node that makes it) and multiplies it by diag(s) @ W, the same product
    in exact arithmetic. Returns the (low, high) of each tensor the MatMuls now read."""
    inits = {init.name: init for init in model.graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in matmuls:
        readers[node.input[0]].append(node)
    after: dict[str, onnx.NodeProto] = {}      # the Mul to place after the node that outputs the key
    smoothed_ranges = {}
    for x, nodes in readers.items():
        weights = [numpy_helper.to_array(inits[node.input[1]]).astype(np.float32) for node in nodes]
        scales = smoothing_scales(*ranges[x], weights, alpha)
        for node, weight in zip(nodes, weights):
            name = f"{node.output[0]}_weight_smoothed"     # outputs are unique; a weight could be shared
            model.graph.initializer.append(numpy_helper.from_array(weight * scales[:, None], name))
            node.input[0], node.input[1] = f"{x}_smoothed", name
        model.graph.initializer.append(numpy_helper.from_array(1.0 / scales, f"{x}_smoothing"))
        after[x] = helper.make_node("Mul", [x, f"{x}_smoothing"], [f"{x}_smoothed"], name=f"{x}_Smooth")
        low, high = (bound / scales for bound in ranges[x])
        smoothed_ranges[f"{x}_smoothed"] = (min(0.0, float(low.min())), max(0.0, float(high.max())))
    nodes = [after.pop(i.name) for i in model.graph.input if i.name in after]
    for node in model.graph.node:
        nodes.append(node)
        nodes.extend(after.pop(out) for out in node.output if out in after)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return smoothed_ranges


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


def quantize_int8_static(src: Path, dst: Path, feeds: Sequence[Mapping[str, np.ndarray]],
                         smoothing: float = INT8_SMOOTHING) -> None:
    """Static int8: each weight MatMul becomes a QuantizeLinear with the scale calibrated on
    ``feeds`` and a MatMulIntegerToFloat with per-column int8 weights and the bias folded in;
    with ``smoothing`` > 0 (SmoothQuant's alpha) a Mul by fixed per-channel constants before the
    QuantizeLinear moves the input's outlier channels into the weights first.

    The product stays float. Requantising it too (QDQ's QLinearMatMul, then a DequantizeLinear
    before the bias and residual adds) lost 2.4 F1 points on the fine-tuned MiniLM of
    bench/inference.py; this form under half a point there and on ae-110k titles, and runs 1.3x
    as fast."""
    if not feeds:
        raise ValueError("static int8 needs calibration texts; none had a token")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing (SmoothQuant's alpha) must lie in [0, 1), not {smoothing}")
    model = onnx.load(str(src))
    matmuls = weight_matmuls(model)
    inputs = sorted({node.input[0] for node in matmuls})
    if smoothing > 0:
        ranges = _smooth(model, matmuls, channel_ranges(model, inputs, feeds), smoothing)
    else:
        ranges = activation_ranges(model, inputs, feeds)
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
