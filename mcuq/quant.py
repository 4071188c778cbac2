"""Post-training quantization of a float graph to an int8-only graph (Jacob et al., TF Lite scheme).

Activations: per-tensor asymmetric int8 from calibration min/max (observed after fused
activations, widened to include 0). Weights: per-channel symmetric int8 ([-127, 127]) on the
axis TFLM's kernels read (conv 0, depthwise 3, fully connected 0). Bias: int32 with scale
s_in * s_w[c] and zero point 0. Every TFLM kernel constraint is met by construction: softmax
and logistic output 1/256 zp -128, tanh 1/128 zp 0, pooling/reshape/pad outputs and all
concatenation operands share one quantization. Scales are float32 values, as a .tflite holds
them, so the written model gets exactly the multipliers our simulator derives.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Callable, Protocol, Sequence

import numpy as np

from mcuq.errors import CalibrationError, ModelError, UnsupportedOpError
from mcuq.fixedpoint import quantize_real, round_half_away, round_half_away_array
from mcuq.ir import NO_TENSOR, Graph, Node, Op, Quant, Tensor
from mcuq.simulate import prepare_graph, run_integer
from mcuq.simulate.floating import dequantize, real_constant, run_float

BIAS_LIMIT = 1 << 30  # |int32 bias| bound: leaves the accumulator room for 33k int8 products
MIN_CALIB_SAMPLES = 4  # min/max of fewer samples says little about real inputs
DEFAULT_CALIB_SAMPLES = 32
DEFAULT_INPUT_RANGE = (-1.0, 1.0)
DEFAULT_SEED = 0

Warn = Callable[[str], None]
Progress = Callable[[str, int, int], None]  # (phase, done, total)

# Weight tensor axis that holds the output channels, per op (TFLM hard-codes these).
_CHANNEL_AXIS = {Op.CONV_2D: 0, Op.DEPTHWISE_CONV_2D: 3, Op.FULLY_CONNECTED: 0}
# Ops whose output is the input's bytes rearranged: TFLM needs in and out quantization equal.
_SHARED_QUANT = (Op.AVERAGE_POOL_2D, Op.MAX_POOL_2D, Op.RESHAPE, Op.PAD)
# Output quantization the TFLM int8 kernels assume (scale, zero point).
_FIXED_OUTPUT = {Op.SOFTMAX: (1 / 256, -128), Op.LOGISTIC: (1 / 256, -128), Op.TANH: (1 / 128, 0)}
_INT8 = np.iinfo(np.int8)


class Scheme(StrEnum):
    """How scales are chosen: TF Lite's free float32 scales, or power-of-two (shift-only) scales."""

    TFLITE = "tflite"
    POW2 = "pow2"


class _Rules(Protocol):
    """What a scheme decides: activation quantization from a range, weight scales from |w| max."""

    def activation(self, lo: float, hi: float) -> Quant: ...

    def weight_scales(self, absmax: np.ndarray, floor: np.ndarray) -> np.ndarray: ...


class _TfliteRules:
    """Jacob et al. as TF Lite does it: scale = range / 255, zero point rounded into int8."""

    def activation(self, lo: float, hi: float) -> Quant:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if hi == lo:  # an all-zero tensor: any scale represents it exactly
            hi = 1.0
        scale = _f32((hi - lo) / (_INT8.max - _INT8.min))
        zp = min(max(round_half_away(_INT8.min - lo / scale), _INT8.min), _INT8.max)
        return Quant((scale,), (zp,))

    def weight_scales(self, absmax: np.ndarray, floor: np.ndarray) -> np.ndarray:
        return np.maximum(absmax / _INT8.max, floor).astype(np.float32)


_RULES: dict[Scheme, _Rules] = {Scheme.TFLITE: _TfliteRules()}


@dataclass(frozen=True)
class OutputAgreement:
    """How well one integer output reproduces the float one over a set of samples."""

    name: str
    sqnr_db: float  # 10 log10(sum f^2 / sum (f - dequant(q))^2); inf when equal
    max_abs_error: float
    top1_agreement_pct: float | None  # classification outputs (softmax, > 1 class) only


@dataclass(frozen=True)
class QuantReport:
    """Float vs integer agreement of a quantized model on a sample set (quantize: its calibration set)."""

    model: str
    scheme: Scheme
    samples: int
    calibration: str
    outputs: tuple[OutputAgreement, ...]

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "scheme": str(self.scheme),
            "samples": self.samples,
            "calibration": self.calibration,
            "outputs": [
                {"name": o.name, "sqnr_db": _json_float(o.sqnr_db), "max_abs_error": o.max_abs_error,
                 "top1_agreement_pct": o.top1_agreement_pct}
                for o in self.outputs
            ],
        }

    def format(self) -> str:
        lines = [f"quantization ({self.scheme}) of {self.model}: {self.samples} samples, {self.calibration}",
                 f"  {'output':<28} {'SQNR dB':>8} {'max |err|':>10} {'top-1 agree':>12}"]
        for o in self.outputs:
            top1 = "-" if o.top1_agreement_pct is None else f"{o.top1_agreement_pct:.1f} %"
            lines.append(f"  {o.name[:28]:<28} {o.sqnr_db:>8.2f} {o.max_abs_error:>10.4g} {top1:>12}")
        return "\n".join(lines)


@dataclass(frozen=True)
class QuantResult:
    """The int8-only graph and its agreement report."""

    graph: Graph
    report: QuantReport


def _warn_default(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def quantize(
    graph: Graph,
    calib: Sequence[np.ndarray] | None,
    scheme: Scheme | str = Scheme.TFLITE,
    warn: Warn = _warn_default,
    progress: Progress | None = None,
) -> QuantResult:
    """Quantize a float graph to int8 with calibration data (one [N, *shape] array per input).

    Without ``calib`` it calibrates on DEFAULT_CALIB_SAMPLES seeded uniform random samples over
    each input's own quantization range if the float model declares one, else
    DEFAULT_INPUT_RANGE, and says so through ``warn``.
    """
    rules = _scheme_rules(scheme)
    fg = _float_graph(graph)
    weights = _check_quantizable(fg)
    if calib is None:
        samples, how = _default_samples(fg)
        warn(f"no calibration data for {graph.name}: calibrating on {how}; "
             "activation ranges will not match real inputs")
    else:
        samples, how = _check_calibration(fg, calib, "calibration data"), "user calibration data"
    lo, hi, float_outs = _observe(fg, samples, progress)
    qg = _integer_graph(fg, lo, hi, rules, weights)
    report = _agreement(fg, qg, samples, float_outs, Scheme(scheme), how, progress)
    return QuantResult(qg, report)


def evaluate(graph: Graph, qgraph: Graph, data: Sequence[np.ndarray], label: str = "evaluation data",
             scheme: Scheme | str = Scheme.TFLITE, progress: Progress | None = None) -> QuantReport:
    """Agreement of an integer graph with the float ``graph`` it came from, on other data.

    ``data`` has the layout of calibration data; ``qgraph`` needs int8 inputs and outputs
    (a graph from quantize, or an int8 model of the same network).
    """
    for t in qgraph.input_tensors() + qgraph.output_tensors():
        if t.dtype != "int8" or t.quant is None:
            raise ModelError(f"{qgraph.name}: evaluate needs int8 graph inputs and outputs, "
                             f"'{t.name}' is {t.dtype}")
    fg = _float_graph(graph)
    samples = _check_calibration(fg, data, "evaluation data")
    float_outs = [run_float(fg, [a[s] for a in samples]) for s in range(samples[0].shape[0])]
    return _agreement(fg, qgraph, samples, float_outs, Scheme(scheme), label, progress)


def _scheme_rules(scheme: Scheme | str) -> _Rules:
    try:
        scheme = Scheme(scheme)
    except ValueError:
        raise UnsupportedOpError(f"unknown quantization scheme '{scheme}'; "
                                 f"schemes: {', '.join(s.value for s in Scheme)}") from None
    if scheme not in _RULES:
        raise UnsupportedOpError(f"quantization scheme '{scheme}' comes in a later release; "
                                 f"use '{Scheme.TFLITE}'")
    return _RULES[scheme]


# --- the float graph the quantizer works on ----------------------------------------------------

def _float_graph(graph: Graph) -> Graph:
    """The same model without QUANTIZE/DEQUANTIZE nodes, every constant as float32 or raw int.

    DEQUANTIZE of a constant (int8/float16 weights) becomes a float constant; a QUANTIZE or
    DEQUANTIZE of an activation is bypassed. Refuses graphs whose activations are not float.
    """
    tensors = list(graph.tensors)
    alias: dict[int, int] = {}

    def resolve(i: int) -> int:
        while i in alias:
            i = alias[i]
        return i

    nodes: list[Node] = []
    for n in graph.nodes:
        if not n.supported:
            raise UnsupportedOpError(f"{graph.name}: node {n.index} is {n.op}; mcuq quantizes "
                                     f"{', '.join(op.value for op in Op)}")
        ins = tuple(NO_TENSOR if i == NO_TENSOR else resolve(i) for i in n.inputs)
        if n.op in (Op.QUANTIZE, Op.DEQUANTIZE):
            src, out = tensors[ins[0]], tensors[n.outputs[0]]
            if src.is_const:
                tensors[out.index] = _float_const(out, real_constant(src))
            else:
                alias[out.index] = src.index
            continue
        nodes.append(replace(n, index=len(nodes), inputs=ins))
    for t in tensors:
        if t.is_const and (t.quant is not None or t.data.dtype.kind == "f"):
            tensors[t.index] = _float_const(t, real_constant(t))
    outputs = tuple(resolve(i) for i in graph.outputs)
    fg = Graph(tuple(tensors), tuple(nodes), graph.inputs, outputs, graph.name)
    for t in fg.activation_tensors():
        if t.dtype != "float32":
            raise ModelError(f"{graph.name}: tensor '{t.name}' is {t.dtype}; quantize takes a float model "
                             "(this one is already quantized)")
    return fg


def _float_const(t: Tensor, data: np.ndarray) -> Tensor:
    data = np.asarray(data, np.float32)
    data.setflags(write=False)
    return replace(t, dtype="float32", quant=None, data=data)


def _check_quantizable(fg: Graph) -> set[int]:
    """Refuse what has no int8 TFLM kernel (before calibrating); return the weight and bias tensors."""
    out = set()
    for n in fg.nodes:
        act = n.attrs.get("activation", "NONE")
        if act not in ("NONE", "RELU", "RELU6", "RELU_N1_TO_1"):
            raise UnsupportedOpError(f"{fg.name}: node {n.index} ({n.op}) has fused activation {act}, "
                                     "which no int8 TFLM kernel applies")
        if n.op not in _CHANNEL_AXIS:
            continue
        for k, i in enumerate(n.inputs[1:3], start=1):
            if i == NO_TENSOR:
                continue
            if not fg.tensor(i).is_const:
                what = "weights" if k == 1 else "bias"
                raise UnsupportedOpError(f"{fg.name}: node {n.index} ({n.op}) has non-constant {what} "
                                         f"'{fg.tensor(i).name}'")
            out.add(i)
    return out


# --- calibration data --------------------------------------------------------------------------

def _check_calibration(graph: Graph, calib: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    """Sample arrays as [N, *input shape] float32, or a CalibrationError naming the input."""
    if isinstance(calib, np.ndarray) or len(calib) != len(graph.inputs):
        got = "a single array" if isinstance(calib, np.ndarray) else str(len(calib))
        raise CalibrationError(f"{graph.name}: {what} needs one array per graph input "
                               f"({len(graph.inputs)}), got {got}")
    out = []
    for t, a in zip(graph.input_tensors(), calib):
        a = np.asarray(a)
        shape = t.shape
        accepted = [shape] + ([shape[1:]] if shape and shape[0] == 1 else [])
        expected = " or ".join(f"[N, {', '.join(map(str, s))}]" for s in accepted)
        if a.ndim == 0 or a.shape[1:] not in accepted:
            raise CalibrationError(f"{what} for input '{t.name}': expected shape {expected}, "
                                   f"got {list(a.shape)}")
        if a.dtype.kind not in "fiu":
            raise CalibrationError(f"{what} for input '{t.name}': expected float or integer "
                                   f"values, got {a.dtype}")
        if a.shape[0] < MIN_CALIB_SAMPLES:
            raise CalibrationError(f"{what} for input '{t.name}': {a.shape[0]} samples, "
                                   f"need at least {MIN_CALIB_SAMPLES}")
        a = a.astype(np.float32).reshape((a.shape[0], *shape))
        if not np.isfinite(a).all():
            raise CalibrationError(f"{what} for input '{t.name}' holds NaN or infinite values")
        out.append(a)
    counts = [a.shape[0] for a in out]
    if len(set(counts)) > 1:
        raise CalibrationError(f"{graph.name}: {what} inputs hold different sample counts {counts}")
    return out


def _default_samples(graph: Graph) -> tuple[list[np.ndarray], str]:
    """Seeded uniform random samples over each input's declared range (or the default range)."""
    rng = np.random.default_rng(DEFAULT_SEED)
    out, ranges = [], []
    for t in graph.input_tensors():
        lo, hi = DEFAULT_INPUT_RANGE
        if t.quant is not None:
            s, zp = t.quant.scale[0], t.quant.zero_point[0]
            lo, hi = s * (_INT8.min - zp), s * (_INT8.max - zp)
        out.append(rng.uniform(lo, hi, (DEFAULT_CALIB_SAMPLES, *t.shape)).astype(np.float32))
        ranges.append(f"[{lo:.4g}, {hi:.4g}]")
    how = (f"{DEFAULT_CALIB_SAMPLES} seeded uniform random samples in {', '.join(ranges)} "
           f"(seed {DEFAULT_SEED})")
    return out, how


def _observe(graph: Graph, samples: list[np.ndarray], progress: Progress | None
             ) -> tuple[dict[int, float], dict[int, float], list[list[np.ndarray]]]:
    """Per-tensor min and max over the calibration set (activations and constants), float outputs."""
    lo: dict[int, float] = {}
    hi: dict[int, float] = {}
    outs = []
    n = samples[0].shape[0]
    for s in range(n):
        values = run_float(graph, [a[s] for a in samples], all_tensors=True)
        for i, v in values.items():
            lo[i] = min(lo.get(i, math.inf), float(v.min()))
            hi[i] = max(hi.get(i, -math.inf), float(v.max()))
        outs.append([values[i] for i in graph.outputs])
        if progress:
            progress("calibrate", s + 1, n)
    for t in graph.tensors:
        if t.is_const and t.data.dtype.kind == "f" and t.size:
            lo[t.index], hi[t.index] = float(t.data.min()), float(t.data.max())
    return lo, hi, outs


# --- the integer graph -------------------------------------------------------------------------

def _integer_graph(fg: Graph, lo: dict[int, float], hi: dict[int, float], rules: _Rules,
                   weights: set[int]) -> Graph:
    """int8 activations and activation constants, int8 weights, int32 biases; then compacted."""
    act = _activation_quants(fg, lo, hi, rules, weights)
    tensors: dict[int, Tensor] = {}
    for n in fg.nodes:
        if n.op in _CHANNEL_AXIS:
            s_in = act[n.inputs[0]].scale[0]
            b = fg.tensor(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] != NO_TENSOR else None
            wq = _weights(fg.tensor(n.inputs[1]), _CHANNEL_AXIS[n.op], rules, s_in, b)
            _put(tensors, wq, n)
            if b is not None:
                _put(tensors, _bias(b, s_in, wq.quant), n)
    for t in fg.tensors:
        if t.index in tensors or t.index not in act:
            continue
        q = act[t.index]
        data = None
        if t.is_const:
            data = quantize_real(t.data, q.scale[0], q.zero_point[0], "int8")
            data.setflags(write=False)
        tensors[t.index] = replace(t, dtype="int8", quant=q, data=data)
    full = tuple(tensors.get(t.index, t) for t in fg.tensors)
    return _compact(Graph(full, fg.nodes, fg.inputs, fg.outputs, fg.name))


def _activation_quants(fg: Graph, lo: dict[int, float], hi: dict[int, float], rules: _Rules,
                       weights: set[int]) -> dict[int, Quant]:
    """Per-tensor int8 quantization of every float activation and activation constant.

    Tensors that TFLM needs to share one quantization (pool/reshape/pad in and out, all
    concatenation operands) form groups with the union of their ranges; a softmax, logistic
    or tanh output fixes its whole group.
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
            fixed[out] = (Quant((_f32(s),), (zp,)), n)
    members: dict[int, list[int]] = {}
    for t in fg.tensors:
        if t.dtype == "float32" and t.index not in weights and t.index in lo:
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
            q = rules.activation(min(lo[i] for i in group), max(hi[i] for i in group))
        quants.update((i, q) for i in group)
    return quants


def _weights(w: Tensor, axis: int, rules: _Rules, s_in: float, bias: Tensor | None) -> Tensor:
    """Per-channel symmetric int8 weights in [-127, 127] along ``axis``.

    A channel's scale never drops below what keeps its int32 bias within BIAS_LIMIT and the
    bias scale s_in * s_w a positive normal float32 (dead channels with ~1e-31 weights and a
    real bias would otherwise overflow the bias and flush their multiplier to zero).
    """
    data = w.data.astype(np.float64)
    if data.ndim <= axis:
        raise ModelError(f"weights '{w.name}' of shape {list(w.shape)} have no channel axis {axis}")
    channels = w.shape[axis]
    if bias is not None and bias.shape != (channels,):
        raise ModelError(f"bias '{bias.name}' has shape {list(bias.shape)}, "
                         f"the weights have {channels} channels")
    other = tuple(k for k in range(data.ndim) if k != axis)
    absmax = np.abs(data).max(axis=other) if data.size else np.zeros(channels)
    b = np.abs(bias.data.astype(np.float64)) if bias is not None else np.zeros(channels)
    floor = np.maximum(b / (s_in * BIAS_LIMIT), np.finfo(np.float32).tiny / min(s_in, 1.0))
    scales = rules.weight_scales(absmax, floor)
    shape = [1] * data.ndim
    shape[axis] = len(scales)
    q = round_half_away_array(data / scales.astype(np.float64).reshape(shape))
    q = np.clip(q, -_INT8.max, _INT8.max).astype(np.int8)
    q.setflags(write=False)
    quant = Quant(tuple(float(s) for s in scales), (0,) * len(scales), axis)
    return replace(w, dtype="int8", quant=quant, data=q)


def _bias(b: Tensor, s_in: float, wq: Quant) -> Tensor:
    """int32 bias with scale float32(s_in * s_w[c]), zero point 0."""
    scales = np.array([_f32(s_in * s) for s in wq.scale], np.float64)
    info = np.iinfo(np.int32)
    q = round_half_away_array(b.data.astype(np.float64) / scales)
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


# --- agreement ---------------------------------------------------------------------------------

def _agreement(fg: Graph, qg: Graph, samples: list[np.ndarray], float_outs: list[list[np.ndarray]],
               scheme: Scheme, how: str, progress: Progress | None) -> QuantReport:
    """SQNR and top-1 agreement of the integer graph against the float one, sample by sample."""
    n = samples[0].shape[0]
    k = len(qg.outputs)
    signal, noise, max_err = np.zeros(k), np.zeros(k), np.zeros(k)
    agree, rows = np.zeros(k), np.zeros(k)
    classify = [_is_classification(fg, i) for i in fg.outputs]
    params = prepare_graph(qg)
    for s in range(n):
        xs = [quantize_real(a[s], t.quant.scale[0], t.quant.zero_point[0], "int8")
              for a, t in zip(samples, qg.input_tensors())]
        ys = run_integer(qg, xs, params=params)
        for o, (f, q, t) in enumerate(zip(float_outs[s], ys, qg.output_tensors())):
            f = f.astype(np.float64)
            d = dequantize(np.asarray(q), t.quant).astype(np.float64)
            signal[o] += float(np.sum(f * f))
            noise[o] += float(np.sum((f - d) ** 2))
            max_err[o] = max(max_err[o], float(np.abs(f - d).max(initial=0.0)))
            if classify[o]:
                agree[o] += int(np.sum(f.argmax(-1) == d.argmax(-1)))
                rows[o] += f.size // f.shape[-1]
        if progress:
            progress("compare", s + 1, n)
    outputs = tuple(
        OutputAgreement(t.name, _sqnr(signal[o], noise[o]), float(max_err[o]),
                        100.0 * agree[o] / rows[o] if classify[o] else None)
        for o, t in enumerate(qg.output_tensors())
    )
    return QuantReport(fg.name, scheme, n, how, outputs)


def _is_classification(g: Graph, i: int) -> bool:
    """A softmax output (possibly reshaped) over more than one class."""
    producers = g.producers()
    node = producers.get(i)
    while node is not None and node.op == Op.RESHAPE:
        node = producers.get(node.inputs[0])
    shape = g.tensor(i).shape
    return node is not None and node.op == Op.SOFTMAX and bool(shape) and shape[-1] > 1


def _sqnr(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)


def _json_float(v: float) -> float | str:
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")


def _f32(v: float) -> float:
    return float(np.float32(v))
