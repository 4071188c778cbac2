"""Float32 reference executor of the IR: real-valued numpy kernels for every ``ir.Op``.

It computes the real values a graph stands for: float tensors as they are, quantized constants
and integer graph inputs dequantized, QUANTIZE/DEQUANTIZE as identities. Calibration runs it
to collect activation ranges, and the agreement report holds integer results against it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mcuq.errors import CalibrationError, ModelError, UnsupportedOpError
from mcuq.ir import NO_TENSOR, Graph, Node, Op, Quant, Tensor

Kernel = Callable[[Node, list], np.ndarray]


def run_float(
    graph: Graph, inputs: Sequence[np.ndarray], all_tensors: bool = False
) -> list[np.ndarray] | dict[int, np.ndarray]:
    """Run one sample (arrays shaped like the graph inputs) in float32.

    Returns the graph outputs, or with ``all_tensors`` every non-constant tensor by index.
    """
    if len(inputs) != len(graph.inputs):
        raise CalibrationError(f"{graph.name}: {len(inputs)} input arrays given, "
                               f"the graph has {len(graph.inputs)}")
    values: dict[int, np.ndarray] = {}
    for t, x in zip(graph.input_tensors(), inputs):
        values[t.index] = _input_value(t, np.asarray(x))
    consts: dict[int, np.ndarray] = {}

    def value(i: int) -> np.ndarray | None:
        if i == NO_TENSOR:
            return None
        if i in values:
            return values[i]
        t = graph.tensor(i)
        if not t.is_const:
            raise ModelError(f"{graph.name}: tensor '{t.name}' is read before any node writes it")
        if i not in consts:
            consts[i] = real_constant(t)
        return consts[i]

    for node in graph.nodes:
        kernel = _KERNELS.get(node.op)
        if kernel is None:
            raise UnsupportedOpError(f"{graph.name}: node {node.index} is {node.op}, "
                                     "which the float executor does not run")
        out = graph.tensor(node.outputs[0])
        operands = [value(i) for i in node.inputs]
        try:
            y = kernel(node, operands)
        except (ValueError, IndexError) as e:  # operands whose shapes do not fit the op (a corrupt model)
            shapes = ", ".join("absent" if a is None else str(list(a.shape)) for a in operands)
            raise ModelError(f"{graph.name}: node {node.index} ({node.op}) cannot run on operands of shapes "
                             f"{shapes} ({e})") from None
        if node.op in _DECLARED_SHAPE and y.size == out.size:
            y = y.reshape(out.shape)
        if y.shape != out.shape:
            raise ModelError(f"{graph.name}: node {node.index} ({node.op}) computes shape {list(y.shape)}, "
                             f"the model declares {list(out.shape)} for '{out.name}'")
        values[out.index] = y.astype(np.float32, copy=False)
    if all_tensors:
        return values
    return [values[i] if i in values else value(i) for i in graph.outputs]


def real_constant(t: Tensor) -> np.ndarray:
    """A constant's real value: float as float32, quantized integers dequantized, others raw."""
    data = t.data
    if data.dtype.kind == "f":
        return data.astype(np.float32)
    if t.quant is None:
        return data
    return dequantize(data, t.quant)


def dequantize(q: np.ndarray, quant: Quant) -> np.ndarray:
    """scale * (q - zero_point) in float32, per tensor or along ``quant.axis``."""
    shape = [1] * q.ndim
    if quant.per_channel:
        shape[quant.axis] = len(quant.scale)
    scale = np.asarray(quant.scale, np.float64).reshape(shape)
    zp = np.asarray(quant.zero_point, np.int64).reshape(shape)
    return (scale * (q.astype(np.int64) - zp)).astype(np.float32)


def _input_value(t: Tensor, x: np.ndarray) -> np.ndarray:
    if x.shape != t.shape:
        raise CalibrationError(f"input '{t.name}' needs shape {list(t.shape)}, got {list(x.shape)}")
    if x.dtype.kind == "f":
        return x.astype(np.float32)
    if x.dtype.kind in "iu" and t.quant is not None:
        return dequantize(x, t.quant)
    raise CalibrationError(f"input '{t.name}' needs float values (or quantized integers), got {x.dtype}")


def _activation(x: np.ndarray, node: Node) -> np.ndarray:
    act = node.attrs.get("activation", "NONE")
    if act == "NONE":
        return x
    if act == "RELU":
        return np.maximum(x, np.float32(0))
    if act == "RELU6":
        return np.clip(x, np.float32(0), np.float32(6))
    if act == "RELU_N1_TO_1":
        return np.clip(x, np.float32(-1), np.float32(1))
    if act == "TANH":
        return np.tanh(x)
    raise UnsupportedOpError(f"node {node.index} ({node.op}): fused activation {act} is not supported")


def _same_or_valid(node: Node, size: int, k: int, stride: int, dilation: int) -> tuple[int, int, int]:
    """(output size, padding before, padding after) as TF Lite's padding rules compute them."""
    k_eff = (k - 1) * dilation + 1
    if node.attrs["padding"] == "SAME":
        out = (size + stride - 1) // stride
    else:
        out = (size + stride - k_eff) // stride
    total = max(0, (out - 1) * stride + k_eff - size)
    return out, total // 2, total - total // 2


def _windows(node: Node, x: np.ndarray, kh: int, kw: int, dh: int, dw: int, fill: float) -> np.ndarray:
    """Sliding windows [N, OH, OW, C, KH, KW] of the padded NHWC input (a view, no copy)."""
    sh, sw = node.attrs["stride_h"], node.attrs["stride_w"]
    oh, top, bottom = _same_or_valid(node, x.shape[1], kh, sh, dh)
    ow, left, right = _same_or_valid(node, x.shape[2], kw, sw, dw)
    if oh <= 0 or ow <= 0:
        raise ModelError(f"node {node.index} ({node.op}): window larger than its {list(x.shape)} input")
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    return win[:, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, :, ::dh, ::dw]


def _conv2d(node: Node, args: list) -> np.ndarray:
    x, w, b = args[0], args[1], args[2] if len(args) > 2 else None
    oc, kh, kw, icf = w.shape
    groups = x.shape[3] // icf
    if groups * icf != x.shape[3] or oc % groups:
        raise ModelError(f"node {node.index} (CONV_2D): filter {list(w.shape)} "
                         f"does not fit input {list(x.shape)}")
    win = _windows(node, x, kh, kw, node.attrs["dilation_h"], node.attrs["dilation_w"], 0.0)
    n, oh, ow = win.shape[:3]
    win = win.reshape(n, oh, ow, groups, icf, kh, kw)
    wg = w.reshape(groups, oc // groups, kh, kw, icf)
    y = np.einsum("nhwgcij,goijc->nhwgo", win, wg, optimize=True).reshape(n, oh, ow, oc)
    if b is not None:
        y = y + b
    return _activation(y, node)


def _depthwise(node: Node, args: list) -> np.ndarray:
    x, w, b = args[0], args[1], args[2] if len(args) > 2 else None
    _, kh, kw, oc = w.shape
    mult = oc // x.shape[3]
    if mult * x.shape[3] != oc:
        raise ModelError(f"node {node.index} (DEPTHWISE_CONV_2D): filter {list(w.shape)} "
                         f"does not fit input {list(x.shape)}")
    win = _windows(node, x, kh, kw, node.attrs["dilation_h"], node.attrs["dilation_w"], 0.0)
    n, oh, ow, c = win.shape[:4]
    wm = w[0].reshape(kh, kw, c, mult)  # output channel ic * mult + m
    y = np.einsum("nhwcij,ijcm->nhwcm", win, wm, optimize=True).reshape(n, oh, ow, oc)
    if b is not None:
        y = y + b
    return _activation(y, node)


def _fully_connected(node: Node, args: list) -> np.ndarray:
    x, w, b = args[0], args[1], args[2] if len(args) > 2 else None
    if node.attrs.get("weights_format", "DEFAULT") != "DEFAULT":
        raise UnsupportedOpError(f"node {node.index} (FULLY_CONNECTED): "
                                 f"weights format {node.attrs['weights_format']}")
    y = x.reshape(-1, w.shape[1]) @ w.T
    if b is not None:
        y = y + b
    return _activation(y, node)


def _pool(node: Node, args: list) -> np.ndarray:
    x = args[0]
    kh, kw = node.attrs["filter_h"], node.attrs["filter_w"]
    if node.op == Op.MAX_POOL_2D:
        y = _windows(node, x, kh, kw, 1, 1, -np.inf).max(axis=(4, 5))
    else:
        total = _windows(node, x, kh, kw, 1, 1, 0.0).sum(axis=(4, 5), dtype=np.float32)
        ones = np.ones((1, x.shape[1], x.shape[2], 1), np.float32)
        count = _windows(node, ones, kh, kw, 1, 1, 0.0).sum(axis=(4, 5))  # padding taps excluded
        y = total / count
    return _activation(y, node)


def _binary(op: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Kernel:
    def kernel(node: Node, args: list) -> np.ndarray:
        return _activation(op(args[0], args[1]), node)

    return kernel


def _softmax(node: Node, args: list) -> np.ndarray:
    z = np.float32(node.attrs.get("beta", 1.0)) * (args[0] - args[0].max(axis=-1, keepdims=True))
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _pad(node: Node, args: list) -> np.ndarray:
    x, paddings = args[0], np.asarray(args[1], np.int64).reshape(-1, 2)
    if paddings.shape[0] != x.ndim or (paddings < 0).any():
        raise ModelError(f"node {node.index} (PAD): paddings {paddings.tolist()} "
                         f"do not fit input {list(x.shape)}")
    return np.pad(x, paddings)


def _mean(node: Node, args: list) -> np.ndarray:
    x = args[0]
    axes = tuple(sorted({int(a) % x.ndim for a in np.asarray(args[1]).reshape(-1)}))
    return x.mean(axis=axes, keepdims=bool(node.attrs.get("keep_dims", False)), dtype=np.float32)


def _concat(node: Node, args: list) -> np.ndarray:
    if node.attrs.get("activation", "NONE") != "NONE":  # TF Lite refuses it as well
        raise UnsupportedOpError(f"node {node.index} (CONCATENATION): "
                                 f"fused activation {node.attrs['activation']}")
    return np.concatenate(args, axis=node.attrs.get("axis", 0))


def _logistic(node: Node, args: list) -> np.ndarray:
    return np.exp(-np.logaddexp(np.float32(0), -args[0]))


def _identity(node: Node, args: list) -> np.ndarray:
    return args[0]


_KERNELS: dict[Op, Kernel] = {
    Op.CONV_2D: _conv2d,
    Op.DEPTHWISE_CONV_2D: _depthwise,
    Op.FULLY_CONNECTED: _fully_connected,
    Op.ADD: _binary(np.add),
    Op.MUL: _binary(np.multiply),
    Op.AVERAGE_POOL_2D: _pool,
    Op.MAX_POOL_2D: _pool,
    Op.RESHAPE: _identity,
    Op.SOFTMAX: _softmax,
    Op.QUANTIZE: _identity,
    Op.DEQUANTIZE: _identity,
    Op.PAD: _pad,
    Op.MEAN: _mean,
    Op.CONCATENATION: _concat,
    Op.LOGISTIC: _logistic,
    Op.TANH: lambda node, args: np.tanh(args[0]),
}
# Ops whose output shape is whatever the model declares (RESHAPE; FC's keep_num_dims).
_DECLARED_SHAPE = (Op.RESHAPE, Op.FULLY_CONNECTED)
