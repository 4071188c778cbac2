"""From calibration statistics to the integer graph: activation quantizations, then weights per layer.

Activations: per-tensor int8 chosen by the range method and the scheme (mcuq.quant.ranges).
Weights: symmetric, per channel on the axis TFLM's kernels read (conv 0, depthwise 3, fully
connected 0), 8 bits ([-127, 127]) or 4 bits ([-7, 7], dtype "int4", held unpacked in an int8
array; fully connected int4 is per-tensor, as TFLM requires). Bias: int32 with scale
s_in * s_w[c] and zero point 0. Every TFLM kernel constraint is met by construction: softmax and
logistic output 1/256 zp -128, tanh 1/128 zp 0, pooling/reshape/pad outputs and all
concatenation operands share one quantization. Scales are float32 values, as a .tflite holds
them, so the written model gets exactly the multipliers our simulator derives.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping

import numpy as np

from mcuq.errors import ModelError, UnsupportedOpError
from mcuq.fixedpoint import INT32_MAX, quantize_real, round_half_away_array
from mcuq.ir import NO_TENSOR, Graph, Node, Op, Quant, Tensor
from mcuq.quant.calibrate import CHANNEL_AXIS
from mcuq.quant.ranges import RangeMethod, TensorStats, best_channel_scales, choose_activation, merged
from mcuq.quant.scheme import F32_TINY, INT8_MAX, INT8_MIN, Rules, Scheme, f32

BIAS_LIMIT = 1 << 30  # |int32 bias| bound: leaves the accumulator room for 33k int8 products
WEIGHT_QMAX = {8: 127, 4: 7}
INT4_OPS = (Op.CONV_2D, Op.DEPTHWISE_CONV_2D, Op.FULLY_CONNECTED)
INT4_SHRINK = (0.9, 0.8, 0.7, 0.6, 0.5)  # tflite int4: fractions of |w| max tried as the clip

# Ops whose output is the input's bytes rearranged: TFLM needs in and out quantization equal.
_SHARED_QUANT = (Op.AVERAGE_POOL_2D, Op.MAX_POOL_2D, Op.RESHAPE, Op.PAD)
# Output quantization the TFLM int8 kernels assume (scale, zero point).
_FIXED_OUTPUT = {Op.SOFTMAX: (1 / 256, -128), Op.LOGISTIC: (1 / 256, -128), Op.TANH: (1 / 128, 0)}

Warn = Callable[[str], None]


@dataclass(frozen=True)
class Layer:
    """A node with constant weights: the quantizer chooses their bitwidth."""

    node: int
    op: Op
    name: str  # the node's output tensor
    weights: int
    bias: int | None


@dataclass(frozen=True)
class Plan:
    """Everything the integer graph follows from, except the weights' bitwidths."""

    fg: Graph
    scheme: Scheme
    rules: Rules
    acts: Mapping[int, Quant]  # float-graph tensor index -> int8 quantization
    layers: tuple[Layer, ...]
    input_means: Mapping[int, np.ndarray | None]  # layer node -> mean float input (None: no bias correction)


def make_plan(fg: Graph, stats: dict[int, TensorStats], scheme: Scheme, rules: Rules, method: RangeMethod,
              weights: set[int], bias_correction: bool) -> Plan:
    """Activation quantizations of every float activation and activation constant, and the layers."""
    layers = tuple(
        Layer(n.index, n.op, fg.tensor(n.outputs[0]).name, n.inputs[1],
              n.inputs[2] if len(n.inputs) > 2 and n.inputs[2] != NO_TENSOR else None)
        for n in fg.nodes if n.op in CHANNEL_AXIS)
    acts = _activation_quants(fg, stats, rules, method, weights)
    means = {layer.node: stats[fg.nodes[layer.node].inputs[0]].mean() if bias_correction else None
             for layer in layers}
    return Plan(fg, scheme, rules, acts, layers, means)


def _activation_quants(fg: Graph, stats: dict[int, TensorStats], rules: Rules, method: RangeMethod,
                       weights: set[int]) -> dict[int, Quant]:
    """Per-tensor int8 quantization of every float activation and activation constant.

    Tensors that TFLM needs to share one quantization (pool/reshape/pad in and out, all
    concatenation operands) form groups whose range and error are those of all their values;
    a softmax, logistic or tanh output fixes its whole group. Constants keep their min/max.
    """
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.get(i, i) != i:
            i = parent[i]
        return i

    def join(a: int, b: int) -> None:
        parent[root(a)] = root(b)

    fixed: dict[int, tuple[Quant, Node]] = {}
    for n in fg.nodes:
        out = n.outputs[0]
        if n.op in _SHARED_QUANT:
            join(n.inputs[0], out)
        elif n.op == Op.CONCATENATION:
            for i in n.inputs:
                join(i, out)
        elif n.op in _FIXED_OUTPUT:
            s, zp = _FIXED_OUTPUT[n.op]
            fixed[out] = (Quant((f32(s),), (zp,)), n)
    members: dict[int, list[int]] = {}
    for t in fg.tensors:
        if t.dtype == "float32" and t.index not in weights and t.index in stats:
            members.setdefault(root(t.index), []).append(t.index)
    quants: dict[int, Quant] = {}
    for group in members.values():
        pinned = {fixed[i][0]: fixed[i][1] for i in group if i in fixed}
        if len(pinned) > 1:
            names = ", ".join(f"node {n.index} ({n.op})" for n in pinned.values())
            raise UnsupportedOpError(f"{fg.name}: {names} need different output quantizations but "
                                     "share one tensor quantization (TFLM cannot requantize there)")
        if pinned:
            q = next(iter(pinned))
        else:
            const = all(fg.tensor(i).is_const for i in group)
            q = choose_activation(merged([stats[i] for i in group]), rules,
                                  RangeMethod.MINMAX if const else method)
        quants.update((i, q) for i in group)
    return quants


def int4_allowed(layer: Layer) -> bool:
    """int4 weights exist in TFLM for conv, depthwise and (per-tensor) fully connected."""
    return layer.op in INT4_OPS


def build(plan: Plan, bits: Mapping[int, int], warn: Warn) -> Graph:
    """The integer graph with each layer's weights at ``bits[node]`` (8 when absent), compacted."""
    fg = plan.fg
    tensors: dict[int, Tensor] = {}
    for layer in plan.layers:
        node = fg.nodes[layer.node]
        b = fg.tensor(layer.bias) if layer.bias is not None else None
        nbits = bits.get(layer.node, 8)
        if nbits not in WEIGHT_QMAX or (nbits == 4 and not int4_allowed(layer)):
            raise UnsupportedOpError(f"{fg.name}: node {layer.node} ({layer.op}) cannot take {nbits}-bit weights")
        w = fg.tensor(layer.weights)
        wq = _weights(w, node, plan, b, nbits, warn)
        _put(tensors, wq, node)
        if b is not None:
            shift = _bias_shift(node, w.data, wq, plan.input_means[layer.node])
            _put(tensors, _bias(b, b.data - shift, plan.acts[node.inputs[0]].scale[0], wq.quant), node)
    for t in fg.tensors:
        if t.index in tensors or t.index not in plan.acts:
            continue
        q = plan.acts[t.index]
        data = None
        if t.is_const:
            data = quantize_real(t.data, q.scale[0], q.zero_point[0], "int8")
            data.setflags(write=False)
        tensors[t.index] = replace(t, dtype="int8", quant=q, data=data)
    full = tuple(tensors.get(t.index, t) for t in fg.tensors)
    return _compact(Graph(full, fg.nodes, fg.inputs, fg.outputs, fg.name))


def _weights(w: Tensor, node: Node, plan: Plan, bias: Tensor | None, bits: int, warn: Warn) -> Tensor:
    """Symmetric weights in [-qmax, qmax], per channel (per tensor for int4 fully connected).

    A channel's scale never drops below what keeps its int32 bias within BIAS_LIMIT and the
    bias scale s_in * s_w a positive normal float32 (dead channels with ~1e-31 weights and a
    real bias would otherwise overflow the bias and flush their multiplier to zero), and is
    doubled while the worst-case accumulator of the channel could overflow int32.
    """
    axis = CHANNEL_AXIS[node.op]
    xq = plan.acts[node.inputs[0]]
    s_in = xq.scale[0]
    data = w.data.astype(np.float64)
    if data.ndim <= axis:
        raise ModelError(f"weights '{w.name}' of shape {list(w.shape)} have no channel axis {axis}")
    channels = w.shape[axis]
    if bias is not None and bias.shape != (channels,):
        raise ModelError(f"bias '{bias.name}' has shape {list(bias.shape)}, "
                         f"the weights have {channels} channels")
    per_channel = not (bits == 4 and node.op == Op.FULLY_CONNECTED)
    qmax = WEIGHT_QMAX[bits]
    other = tuple(k for k in range(data.ndim) if k != axis)
    absmax = np.abs(data).max(axis=other) if data.size else np.zeros(channels)
    b = np.abs(bias.data.astype(np.float64)) if bias is not None else np.zeros(channels)
    floor = np.maximum(b / (s_in * BIAS_LIMIT), F32_TINY / min(s_in, 1.0))
    if not per_channel:
        absmax, floor = absmax.max(initial=0.0, keepdims=True), floor.max(initial=0.0, keepdims=True)
    scales = _best_scales(data, None if not per_channel else axis, absmax, floor, qmax, plan)
    # A channel whose multiplier TFLM would flush to 0 (its weights are all ~0) gets scale s_out / s_in
    # instead: multiplier 1, weights 0, the bias passes through in output units.
    s_out = plan.acts[node.outputs[0]].scale[0]
    scales = np.where(scales.astype(np.float64) * s_in / s_out < 2.0 ** -31, np.float32(s_out / s_in), scales)
    x_max = max(INT8_MAX - xq.zero_point[0], xq.zero_point[0] - INT8_MIN)
    while True:
        shape = [1] * data.ndim
        if per_channel:
            shape[axis] = len(scales)
        q = np.clip(round_half_away_array(data / scales.astype(np.float64).reshape(shape)), -qmax, qmax)
        qb = np.round(b / (s_in * scales.astype(np.float64)))
        worst = np.abs(q).sum(axis=other) * x_max + qb if per_channel else np.abs(q).sum() * x_max + qb.max()
        over = worst > INT32_MAX
        if not over.any():
            break
        warn(f"node {node.index} ({node.op}) '{w.name}': int32 accumulator could overflow; "
             f"weight scale doubled on {int(over.sum())} channel(s)")
        scales = np.where(over, scales * 2, scales).astype(np.float32)
    q = q.astype(np.int8)
    q.setflags(write=False)
    quant = Quant(tuple(float(s) for s in scales), (0,) * len(scales), axis if per_channel else 0)
    return replace(w, dtype="int8" if bits == 8 else "int4", quant=quant, data=q)


def _best_scales(data: np.ndarray, axis: int | None, absmax: np.ndarray, floor: np.ndarray, qmax: int,
                 plan: Plan) -> np.ndarray:
    """The scheme's scale, or a finer candidate (clipping the largest weights) when it errs less."""
    base = plan.rules.weight_scales(absmax, qmax, floor)
    if plan.scheme == Scheme.POW2:
        cands = [base] + [np.where(base / k >= floor, base / k, base).astype(np.float32) for k in (2, 4)]
    elif qmax < INT8_MAX:
        cands = [base] + [plan.rules.weight_scales(absmax * f, qmax, floor) for f in INT4_SHRINK]
    else:
        return base
    return best_channel_scales(data, axis, cands, qmax)


def _bias_shift(node: Node, w: np.ndarray, wq: Tensor, mean: np.ndarray | None) -> np.ndarray:
    """Expected output shift the weights' rounding causes, (Wq - W) . E[x] per output channel.

    Subtracted from the bias (bias correction): the rounding error of a channel's weights is the
    same at every position, so its mean effect is systematic, and averaging layers (pooling,
    mean) would otherwise keep it. E[x] per input channel over all positions and calibration
    samples (padding ignored). Fully connected layers are left alone: their per-element means
    come from as many values as there are samples and overfit small calibration sets.
    """
    q = wq.data.astype(np.float64)
    scales = np.asarray(wq.quant.scale, np.float64)
    if mean is None or node.op == Op.FULLY_CONNECTED:
        return np.zeros(q.shape[CHANNEL_AXIS[node.op]])
    mu = mean.reshape(-1, mean.shape[-1]).mean(axis=0)  # per input channel (NHWC)
    if node.op == Op.DEPTHWISE_CONV_2D:
        dw = q * scales - w
        return dw.sum(axis=(0, 1, 2)) * np.repeat(mu, w.shape[3] // len(mu))
    if w.shape[3] != len(mu):  # grouped convolution: left uncorrected
        return np.zeros(w.shape[0])
    dw = q * scales[:, None, None, None] - w
    return dw.sum(axis=(1, 2)) @ mu


def _bias(b: Tensor, real: np.ndarray, s_in: float, wq: Quant) -> Tensor:
    """int32 bias holding ``real`` with scale float32(s_in * s_w[c]), zero point 0."""
    scales = np.array([f32(s_in * s) for s in wq.scale], np.float64)
    info = np.iinfo(np.int32)
    q = round_half_away_array(real.astype(np.float64) / scales)
    q = np.clip(q, info.min, info.max).astype(np.int32)
    q.setflags(write=False)
    quant = Quant(tuple(float(s) for s in scales), (0,) * len(scales), 0)
    return replace(b, dtype="int32", quant=quant, data=q)


def _put(tensors: dict[int, Tensor], t: Tensor, n: Node) -> None:
    old = tensors.get(t.index)
    if old is not None and (old.quant != t.quant or not np.array_equal(old.data, t.data)):
        raise UnsupportedOpError(f"node {n.index} ({n.op}) shares tensor '{t.name}' with another node that "
                                 "needs it quantized differently")
    tensors[t.index] = t


def _compact(g: Graph) -> Graph:
    """Drop tensors no node or graph I/O uses; renumber the rest in order."""
    used = set(g.inputs) | set(g.outputs)
    for n in g.nodes:
        used.update(i for i in (*n.inputs, *n.outputs) if i != NO_TENSOR)
    new = {old: k for k, old in enumerate(sorted(used))}

    def m(ids: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(NO_TENSOR if i == NO_TENSOR else new[i] for i in ids)

    tensors = tuple(replace(g.tensor(old), index=k) for old, k in new.items())
    nodes = tuple(replace(n, inputs=m(n.inputs), outputs=m(n.outputs)) for n in g.nodes)
    return Graph(tensors, nodes, m(g.inputs), m(g.outputs), g.name)


def weight_bytes(graph: Graph) -> int:
    """Bytes of all constant tensors, int4 packed two per byte (per tensor, rounded up)."""
    total = 0
    for t in graph.tensors:
        if t.is_const:
            total += (t.size + 1) // 2 if t.dtype == "int4" else t.size * np.dtype(t.dtype).itemsize
    return total
