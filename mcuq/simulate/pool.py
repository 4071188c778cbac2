"""AVERAGE_POOL_2D and MAX_POOL_2D on raw int8/int16 values (TFLM pooling.h, no requantization).

Padding taps are excluded from both the sum and the count (../shared/TFLM-INTEGER.md section 10).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcuq.ir import Graph, Node
from mcuq.simulate.common import (
    activation_range, expect_dtype, node_input, node_output, output_size_and_padding, quant,
    type_range, unsupported, windows,
)


@dataclass(frozen=True)
class PoolParams:
    """Window geometry and clamp over input [batches, input_h, input_w, channels] and output
    [batches, output_h, output_w, channels] (NHWC); input and output share scale and zero point."""

    batches: int
    input_h: int
    input_w: int
    channels: int
    output_h: int
    output_w: int
    filter_h: int
    filter_w: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_left: int
    act_min: int
    act_max: int


def _prepare_pool(graph: Graph, node: Node) -> PoolParams:
    x, y = node_input(graph, node, 0), node_output(graph, node)
    if x is None:
        raise unsupported(graph, node, "needs an input tensor")
    expect_dtype(graph, node, x, ("int8", "int16"))
    expect_dtype(graph, node, y, (x.dtype,))
    if len(x.shape) != 4:
        raise unsupported(graph, node, f"input {list(x.shape)} must be 4-D (NHWC)")
    s_in, zp_in = quant(graph, node, x)
    s_out, zp_out = quant(graph, node, y)
    if abs(s_in - s_out) > 1e-6 or zp_in != zp_out:
        raise unsupported(graph, node, "input and output quantization must be equal (no requantizing pool)")
    a = node.attrs
    n, h, w, c = x.shape
    oh, pt = output_size_and_padding(h, a["filter_h"], a["stride_h"], 1, a["padding"])
    ow, pl = output_size_and_padding(w, a["filter_w"], a["stride_w"], 1, a["padding"])
    if y.shape != (n, oh, ow, c):
        raise unsupported(graph, node, f"output shape {list(y.shape)} differs from computed {[n, oh, ow, c]}")
    lo, hi = activation_range(graph, node, y.dtype, s_out, zp_out)
    return PoolParams(
        n, h, w, c, oh, ow, a["filter_h"], a["filter_w"], a["stride_h"], a["stride_w"], pt, pl, lo, hi,
    )


def prepare_average_pool2d(graph: Graph, node: Node) -> PoolParams:
    """Derive AVERAGE_POOL_2D's parameters."""
    return _prepare_pool(graph, node)


def prepare_max_pool2d(graph: Graph, node: Node) -> PoolParams:
    """Derive MAX_POOL_2D's parameters."""
    return _prepare_pool(graph, node)


def _valid_taps(size: int, out: int, k: int, stride: int, pad: int) -> np.ndarray:
    """Number of in-image taps per output position along one axis."""
    start = np.arange(out) * stride - pad
    return np.minimum(start + k, size) - np.maximum(start, 0)


def _win(p: PoolParams, x: np.ndarray, fill: int) -> np.ndarray:
    return windows(x, p.filter_h, p.filter_w, (p.stride_h, p.stride_w), (1, 1),
                   (p.pad_top, p.pad_left), (p.output_h, p.output_w), fill)


def average_pool2d(p: PoolParams, inputs: list[np.ndarray | None]) -> np.ndarray:
    """Sum of raw values over in-image taps, divided by their count rounding half away from zero."""
    x = inputs[0]
    total = _win(p, x.astype(np.int64), 0).sum(axis=(3, 4))
    count = (_valid_taps(p.input_h, p.output_h, p.filter_h, p.stride_h, p.pad_top)[:, None]
             * _valid_taps(p.input_w, p.output_w, p.filter_w, p.stride_w, p.pad_left)[None, :]
             )[None, :, :, None]
    count = np.maximum(count, 1)
    half = count // 2
    avg = np.where(total > 0, (total + half) // count, -((half - total) // count))
    return np.clip(avg, p.act_min, p.act_max).astype(x.dtype)


def max_pool2d(p: PoolParams, inputs: list[np.ndarray | None]) -> np.ndarray:
    """Maximum over in-image taps (padding reads the type minimum, TFLM's start value)."""
    x = inputs[0]
    lowest = type_range(x.dtype.name)[0]
    m = _win(p, x, lowest).max(axis=(3, 4))
    return np.clip(m, p.act_min, p.act_max).astype(x.dtype)
