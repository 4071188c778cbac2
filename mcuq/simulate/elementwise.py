"""ADD, MUL (numpy broadcasting), QUANTIZE and DEQUANTIZE, bit-exact with TFLM reference kernels.

See ../shared/TFLM-INTEGER.md sections 7, 9 and 14. Float appears only in the host-side I/O
conversions (QUANTIZE from float32, DEQUANTIZE), never in the integer paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcuq.fixedpoint import mbqm, quantize_multiplier, quantize_real, saturate, wrap32
from mcuq.ir import Graph, Node
from mcuq.simulate.common import (
    INT_BITS, activation_range, expect_dtype, fixed_dims, host_only, node_input, node_output, quant,
    unsupported,
)


@dataclass(frozen=True)
class AddParams:
    """ADD: a = MBQM((x1 + input1_offset) << left_shift, input1_multiplier, input1_shift), b alike;
    y = clamp(MBQM(a + b, output_multiplier, output_shift) + output_offset, act_min, act_max).
    All shifts are <= 0 (right shifts). Inputs broadcast (numpy rules) over their MAX_DIMS-D
    ``input1_dims`` / ``input2_dims``: along each axis the sizes are equal or one of them is 1.
    ``shift_only``: all three multipliers are 2^30 (power-of-two scales), so the firmware may use
    the multiplication-free mcuq.fixedpoint.requantize_pow2 (same results)."""

    input1_dims: tuple[int, ...]
    input2_dims: tuple[int, ...]
    left_shift: int
    input1_offset: int
    input1_multiplier: int
    input1_shift: int
    input2_offset: int
    input2_multiplier: int
    input2_shift: int
    output_offset: int
    output_multiplier: int
    output_shift: int
    act_min: int
    act_max: int
    shift_only: bool
    output_shape: tuple[int, ...] = host_only()


@dataclass(frozen=True)
class MulParams:
    """MUL: y = clamp(MBQM((x1 + input1_offset) * (x2 + input2_offset), multiplier, shift)
    + output_offset, act_min, act_max), broadcasting as ADD does."""

    input1_dims: tuple[int, ...]
    input2_dims: tuple[int, ...]
    input1_offset: int
    input2_offset: int
    output_offset: int
    multiplier: int
    shift: int
    act_min: int
    act_max: int
    output_shape: tuple[int, ...] = host_only()


@dataclass(frozen=True)
class QuantizeParams:
    """QUANTIZE ``size`` elements to an ``output_bits`` integer type.

    Integer input (``scale`` 0): y = clamp(MBQM(x + input_offset, multiplier, shift) + output_offset).
    float32 input: ``scale`` is the output's float32 scale (host-only I/O conversion),
    y = clamp(round_half_away(float32(x) / scale) + output_offset); multiplier and shift are 0.
    The clamp is to the int``output_bits`` range.
    """

    size: int
    output_bits: int
    input_offset: int
    output_offset: int
    multiplier: int
    shift: int
    scale: float


@dataclass(frozen=True)
class DequantizeParams:
    """DEQUANTIZE ``size`` elements (I/O conversion): y = float32(scale * (x - zero_point)) in double."""

    size: int
    scale: float
    zero_point: int


def _binary(graph: Graph, node: Node, dtypes: tuple[str, ...]):
    x1, x2, y = node_input(graph, node, 0), node_input(graph, node, 1), node_output(graph, node)
    if x1 is None or x2 is None:
        raise unsupported(graph, node, "needs two inputs")
    expect_dtype(graph, node, x1, dtypes)
    expect_dtype(graph, node, x2, (x1.dtype,))
    expect_dtype(graph, node, y, (x1.dtype,))
    try:
        shape = np.broadcast_shapes(x1.shape, x2.shape)
    except ValueError:
        what = f"input shapes {list(x1.shape)} and {list(x2.shape)} do not broadcast"
        raise unsupported(graph, node, what) from None
    if shape != y.shape or len(shape) > 6:
        raise unsupported(graph, node, f"output shape {list(y.shape)} is not the (<= 6-D) broadcast "
                                       f"{list(shape)}")
    dims = (fixed_dims(x1.shape), fixed_dims(x2.shape))
    return quant(graph, node, x1), quant(graph, node, x2), quant(graph, node, y), y, dims


def _smaller_than_one(graph: Graph, node: Node, m: float, what: str) -> tuple[int, int]:
    """QuantizeMultiplierSmallerThanOneExp, which TFLM asserts on (0 < m < 1)."""
    if not 0.0 < m < 1.0:
        raise unsupported(graph, node, f"{what} multiplier {m} is outside (0, 1)")
    return quantize_multiplier(m)


def prepare_add(graph: Graph, node: Node) -> AddParams:
    """Derive ADD's multipliers in double (TFLM add_common.cc; int8 left shift 20, int16 15)."""
    (s1, z1), (s2, z2), (so, zo), y, dims = _binary(graph, node, ("int8", "int16"))
    left = 20 if y.dtype == "int8" else 15
    twice_max = 2.0 * max(s1, s2)
    m1, e1 = _smaller_than_one(graph, node, s1 / twice_max, "input1")
    m2, e2 = _smaller_than_one(graph, node, s2 / twice_max, "input2")
    mo, eo = _smaller_than_one(graph, node, twice_max / ((1 << left) * so), "output")
    lo, hi = activation_range(graph, node, y.dtype, so, zo)
    shift_only = m1 == m2 == mo == 1 << 30
    return AddParams(*dims, left, -z1, m1, e1, -z2, m2, e2, zo, mo, eo, lo, hi, shift_only, y.shape)


def add(p: AddParams, inputs: list[np.ndarray | None]) -> np.ndarray:
    """ADD with numpy broadcasting."""
    x1, x2 = inputs[0].reshape(p.input1_dims), inputs[1].reshape(p.input2_dims)
    a = mbqm((x1.astype(np.int64) + p.input1_offset) << p.left_shift, p.input1_multiplier, p.input1_shift)
    b = mbqm((x2.astype(np.int64) + p.input2_offset) << p.left_shift, p.input2_multiplier, p.input2_shift)
    y = mbqm(wrap32(a + b), p.output_multiplier, p.output_shift) + p.output_offset
    return np.clip(y, p.act_min, p.act_max).astype(x1.dtype).reshape(p.output_shape)


def prepare_mul(graph: Graph, node: Node) -> MulParams:
    """Derive MUL's multiplier s1*s2/s_out (TFLM mul_common.cc); int16 needs zero points 0."""
    (s1, z1), (s2, z2), (so, zo), y, dims = _binary(graph, node, ("int8", "int16"))
    if y.dtype == "int16" and (z1, z2, zo) != (0, 0, 0):
        raise unsupported(graph, node, "int16 MUL needs zero points 0")
    m, s = quantize_multiplier(s1 * s2 / so)
    lo, hi = activation_range(graph, node, y.dtype, so, zo)
    return MulParams(*dims, -z1, -z2, zo, m, s, lo, hi, y.shape)


def mul(p: MulParams, inputs: list[np.ndarray | None]) -> np.ndarray:
    """MUL with numpy broadcasting."""
    x1, x2 = inputs[0].reshape(p.input1_dims), inputs[1].reshape(p.input2_dims)
    prod = (x1.astype(np.int64) + p.input1_offset) * (x2.astype(np.int64) + p.input2_offset)
    y = mbqm(wrap32(prod), p.multiplier, p.shift) + p.output_offset
    return np.clip(y, p.act_min, p.act_max).astype(x1.dtype).reshape(p.output_shape)


_REQUANTIZE = {
    "int8": ("int8", "int16", "int32"),
    "int16": ("int8", "int16", "int32"),
    "int32": ("int8", "int16"),
    "float32": ("int8", "int16"),
}


def prepare_quantize(graph: Graph, node: Node) -> QuantizeParams:
    """Derive QUANTIZE's parameters (TFLM quantize_common.cc): float->int or integer requantize."""
    x, y = node_input(graph, node, 0), node_output(graph, node)
    if x is None:
        raise unsupported(graph, node, "needs an input tensor")
    expect_dtype(graph, node, x, tuple(_REQUANTIZE))
    expect_dtype(graph, node, y, _REQUANTIZE[x.dtype])
    if y.quant is None or y.quant.per_channel:
        raise unsupported(graph, node, f"output '{y.name}' needs exactly one scale")
    s_out, zp_out = quant(graph, node, y)
    if x.dtype == "float32":
        return QuantizeParams(x.size, INT_BITS[y.dtype], 0, zp_out, 0, 0, s_out)
    s_in, zp_in = quant(graph, node, x)
    m, s = quantize_multiplier(s_in / s_out)
    return QuantizeParams(x.size, INT_BITS[y.dtype], -zp_in, zp_out, m, s, 0.0)


def quantize(p: QuantizeParams, inputs: list[np.ndarray | None]) -> np.ndarray:
    """QUANTIZE: AffineQuantize from float32 or Requantize between integer types."""
    x = inputs[0]
    dtype = f"int{p.output_bits}"
    if p.scale:
        return quantize_real(x, p.scale, p.output_offset, dtype)
    q = mbqm(wrap32(x.astype(np.int64) + p.input_offset), p.multiplier, p.shift)
    return saturate(wrap32(q + p.output_offset), dtype)


def prepare_dequantize(graph: Graph, node: Node) -> DequantizeParams:
    """Derive DEQUANTIZE's scale and zero point (int8/int16 -> float32)."""
    x, y = node_input(graph, node, 0), node_output(graph, node)
    if x is None:
        raise unsupported(graph, node, "needs an input tensor")
    expect_dtype(graph, node, x, ("int8", "int16"))
    expect_dtype(graph, node, y, ("float32",))
    s, zp = quant(graph, node, x)
    return DequantizeParams(x.size, s, zp)


def dequantize(p: DequantizeParams, inputs: list[np.ndarray | None]) -> np.ndarray:
    """DEQUANTIZE: the product in double, then rounded to float32."""
    return (p.scale * (inputs[0].astype(np.float64) - p.zero_point)).astype(np.float32)
