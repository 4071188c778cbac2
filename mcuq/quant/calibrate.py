"""The float graph the quantizer works on, calibration and evaluation data, and what calibration observes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from mcuq.errors import CalibrationError, ModelError, UnsupportedOpError
from mcuq.ir import NO_TENSOR, Graph, Node, Op, Tensor
from mcuq.quant.ranges import TensorStats
from mcuq.simulate.floating import real_constant, run_float

MIN_CALIB_SAMPLES = 4  # min/max of fewer samples says little about real inputs
DEFAULT_CALIB_SAMPLES = 32
DEFAULT_INPUT_RANGE = (-1.0, 1.0)
DEFAULT_SEED = 0
INT8_RANGE = (-128, 127)

# Weight tensor axis that holds the output channels, per op (TFLM hard-codes these).
CHANNEL_AXIS = {Op.CONV_2D: 0, Op.DEPTHWISE_CONV_2D: 3, Op.FULLY_CONNECTED: 0}

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class EvalData:
    """Labelled evaluation samples: one [N, *shape] array per graph input and N integer labels."""

    inputs: tuple[np.ndarray, ...]
    labels: np.ndarray


def float_graph(graph: Graph) -> Graph:
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


def check_quantizable(fg: Graph) -> set[int]:
    """Refuse what has no int8 TFLM kernel (before calibrating); return the weight and bias tensors."""
    out = set()
    for n in fg.nodes:
        act = n.attrs.get("activation", "NONE")
        if act not in ("NONE", "RELU", "RELU6", "RELU_N1_TO_1"):
            raise UnsupportedOpError(f"{fg.name}: node {n.index} ({n.op}) has fused activation {act}, "
                                     "which no int8 TFLM kernel applies")
        if n.op not in CHANNEL_AXIS:
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


def check_samples(graph: Graph, calib: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
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


def check_labels(graph: Graph, samples: list[np.ndarray], labels: np.ndarray | None, what: str) -> np.ndarray:
    """Labels as N int64 class indices within the first output's classes, or a CalibrationError."""
    n = samples[0].shape[0]
    if labels is None:
        raise CalibrationError(f"{what}: labels missing (an array 'labels' of {n} class indices)")
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise CalibrationError(f"{what}: labels have shape {list(y.shape)}, expected [{n}] "
                               f"(one class index per sample)")
    classes = graph.output_tensors()[0].shape[-1] if graph.output_tensors()[0].shape else 1
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
        raise CalibrationError(f"{what}: labels must be integer class indices, got {y.dtype}")
    y = y.astype(np.int64)
    if classes < 2 or y.min() < 0 or y.max() >= classes:
        raise CalibrationError(f"{what}: labels span [{y.min()}, {y.max()}], the first output "
                               f"'{graph.output_tensors()[0].name}' has {classes} class(es)")
    return y


def load_eval_data(path: str | Path, graph: Graph) -> EvalData:
    """EvalData from an .npz holding in0, in1, ... ([N, *shape] each) and ``labels`` ([N])."""
    try:
        with np.load(path) as npz:
            arrays: Mapping[str, np.ndarray] = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise CalibrationError(f"{path}: no such file") from None
    except Exception as e:  # np.load raises many types on a bad file
        raise CalibrationError(f"{path}: not a readable .npz ({type(e).__name__})") from None
    missing = [f"in{i}" for i in range(len(graph.inputs)) if f"in{i}" not in arrays]
    if missing:
        raise CalibrationError(f"{path}: evaluation data need array(s) {', '.join(missing)} "
                               f"(found {', '.join(sorted(arrays)) or 'none'})")
    inputs = tuple(arrays[f"in{i}"] for i in range(len(graph.inputs)))
    if "labels" not in arrays:
        raise CalibrationError(f"{path}: labels missing (an array 'labels' of class indices, one per sample)")
    return EvalData(inputs, arrays["labels"])


def default_samples(graph: Graph) -> tuple[list[np.ndarray], str]:
    """Seeded uniform random samples over each input's declared range (or the default range)."""
    rng = np.random.default_rng(DEFAULT_SEED)
    out, ranges = [], []
    for t in graph.input_tensors():
        lo, hi = DEFAULT_INPUT_RANGE
        if t.quant is not None:
            s, zp = t.quant.scale[0], t.quant.zero_point[0]
            lo, hi = s * (INT8_RANGE[0] - zp), s * (INT8_RANGE[1] - zp)
        out.append(rng.uniform(lo, hi, (DEFAULT_CALIB_SAMPLES, *t.shape)).astype(np.float32))
        ranges.append(f"[{lo:.4g}, {hi:.4g}]")
    how = (f"{DEFAULT_CALIB_SAMPLES} seeded uniform random samples in {', '.join(ranges)} "
           f"(seed {DEFAULT_SEED})")
    return out, how


def observe(graph: Graph, samples: list[np.ndarray], progress: Progress | None
            ) -> tuple[dict[int, TensorStats], list[list[np.ndarray]]]:
    """Per-tensor statistics over the calibration set (activations and float constants), float outputs."""
    stats: dict[int, TensorStats] = {}
    outs = []
    rng = np.random.default_rng(DEFAULT_SEED)
    n = samples[0].shape[0]
    for s in range(n):
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite values are refused just below
            values = run_float(graph, [a[s] for a in samples], all_tensors=True)
        for i, v in values.items():
            if v.dtype.kind == "f" and not np.isfinite(v).all():
                raise ModelError(f"{graph.name}: tensor '{graph.tensor(i).name}' takes NaN or infinite values "
                                 f"on calibration sample {s} (weights too large?)")
            stats.setdefault(i, TensorStats()).add(v, rng)
        outs.append([values[i] for i in graph.outputs])
        if progress:
            progress("calibrate", s + 1, n)
    for t in graph.tensors:
        if t.is_const and t.data.dtype.kind == "f" and t.size:
            stats[t.index] = TensorStats(float(t.data.min()), float(t.data.max()))
    return stats, outs
