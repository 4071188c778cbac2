"""Helpers shared by the integer kernels: error lines, tensor quantization, padding, clamps.

Prepare functions use them to turn a node's float32 scales and attributes into the integer
parameters TFLM's reference kernels derive (../shared/TFLM-INTEGER.md sections 3-4).
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import numpy as np

from mcuq.errors import UnsupportedOpError
from mcuq.fixedpoint import round_half_away
from mcuq.ir import NO_TENSOR, Graph, Node, Tensor

INT_BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}
MAX_DIMS = 6  # rank of the fixed-size dims tuples (broadcasting, PAD, MEAN): TFLM's broadcast limit
HOST_ONLY = {"host_only": True}  # dataclass field metadata: simulator-only, the packer leaves it out


def host_only() -> Any:
    """A Params field the host simulator needs (e.g. the output's exact rank) and C does not."""
    return field(metadata=HOST_ONLY)


def fixed_dims(shape: tuple[int, ...], fill: int = 1) -> tuple[int, ...]:
    """``shape`` padded in front to MAX_DIMS entries (the C kernels' fixed rank)."""
    return (fill,) * (MAX_DIMS - len(shape)) + tuple(int(d) for d in shape)


def unsupported(graph: Graph, node: Node, what: str) -> UnsupportedOpError:
    """One-line error naming node index, op and output tensor."""
    out = graph.tensor(node.outputs[0]).name if node.outputs else "?"
    return UnsupportedOpError(f"node {node.index} {node.op} (output '{out}'): {what}")


def node_input(graph: Graph, node: Node, k: int) -> Tensor | None:
    """The k-th input tensor, or None when absent (index -1 or fewer inputs)."""
    if k >= len(node.inputs) or node.inputs[k] == NO_TENSOR:
        return None
    return graph.tensor(node.inputs[k])


def node_output(graph: Graph, node: Node) -> Tensor:
    return graph.tensor(node.outputs[0])


def expect_dtype(graph: Graph, node: Node, t: Tensor, allowed: tuple[str, ...]) -> None:
    if t.dtype not in allowed:
        raise unsupported(graph, node, f"tensor '{t.name}' is {t.dtype}, supported: {', '.join(allowed)}")


def quant(graph: Graph, node: Node, t: Tensor) -> tuple[float, int]:
    """(scale[0], zero_point[0]) as TFLM's params fill them, even for per-channel tensors."""
    if t.quant is None:
        raise unsupported(graph, node, f"tensor '{t.name}' ({t.dtype}) has no quantization parameters")
    return t.quant.scale[0], t.quant.zero_point[0]


def const_data(graph: Graph, node: Node, t: Tensor) -> np.ndarray:
    if t.data is None:
        raise unsupported(graph, node, f"tensor '{t.name}' must be constant")
    return t.data


def type_range(dtype: str) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def activation_range(graph: Graph, node: Node, dtype: str, scale: float, zp: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: fused activation as an integer clamp [min, max]."""
    act = node.attrs.get("activation", "NONE")
    qmin, qmax = type_range(dtype)

    def q(f: float) -> int:
        return zp + round_half_away(float(np.float32(f) / np.float32(scale)))

    if act == "NONE":
        return qmin, qmax
    if act == "RELU":
        return max(qmin, zp), qmax
    if act == "RELU6":
        return max(qmin, zp), min(qmax, q(6.0))
    if act == "RELU_N1_TO_1":
        return max(qmin, q(-1.0)), min(qmax, q(1.0))
    raise unsupported(graph, node, f"fused activation {act} is not supported")


def output_size_and_padding(
    size: int, kernel: int, stride: int, dilation: int, padding: str
) -> tuple[int, int]:
    """(output size, padding before) as tensorflow/lite/kernels/padding.h computes them."""
    k_eff = (kernel - 1) * dilation + 1
    if padding == "SAME":
        out = (size + stride - 1) // stride
    else:
        out = (size + stride - k_eff) // stride
    total = max(0, (out - 1) * stride + k_eff - size)
    return out, total // 2


def windows(
    x: np.ndarray, kh: int, kw: int, strides: tuple[int, int], dilations: tuple[int, int],
    pads: tuple[int, int], out_hw: tuple[int, int], fill: int,
) -> np.ndarray:
    """Read-only view [N, OH, OW, KH, KW, C] of the NHWC input's windows, padded with ``fill``.

    Out-of-image taps read ``fill``; callers choose a value that makes them contribute nothing,
    which is how TFLM's kernels skip them.
    """
    n, h, w, c = x.shape
    (sh, sw), (dh, dw), (pt, pl), (oh, ow) = strides, dilations, pads, out_hw
    bottom = max(0, (oh - 1) * sh + (kh - 1) * dh + 1 - pt - h)
    right = max(0, (ow - 1) * sw + (kw - 1) * dw + 1 - pl - w)
    xp = np.pad(x, ((0, 0), (pt, bottom), (pl, right), (0, 0)), constant_values=fill)
    s_n, s_h, s_w, s_c = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (n, oh, ow, kh, kw, c), (s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c), writeable=False
    )
