"""Integer SOFTMAX, LOGISTIC and TANH exactly as TFLM's reference kernels compute them.

TFLM evaluates these with gemmlowp's 32-bit fixed-point math (exp on negative values,
Newton-Raphson 1/(1+x)), not with lookup tables; ../shared/TFLM-INTEGER.md sections 12-13.
``prepare_*`` turns a node's float32 scales and beta into integer parameters once (the packer
writes them into flash unchanged); the eval functions use nothing but integer arithmetic on
int64 numpy arrays that hold int32 values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mcuq.errors import UnsupportedOpError
from mcuq.fixedpoint import (
    INT32_MAX, mbqm, quantize_multiplier, rdbpot, round_half_away, sat_shl, srdhm, wrap32,
)
from mcuq.ir import Graph, Node, Tensor
from mcuq.simulate.common import unsupported

SOFTMAX_DIFF_INT_BITS = 5  # exp() input is Q5.26
SOFTMAX_ACCUM_INT_BITS = 12  # sum of exponentials is Q12.19
SIGMOID_INPUT_INT_BITS = 4  # LOGISTIC / TANH input is Q4.27

# exp(-2^j) in Q0.31 for the barrel shifter of exp_on_negative_values, j = -2 .. 4.
_EXP_NEG_POT = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                (2, 39332535), (3, 720401), (4, 242))
_EXP_MINUS_ONE_EIGHTH = 1895147668  # exp(-1/8) in Q0.31
_ONE_THIRD = 715827883  # 1/3 in Q0.31
_NR_48_OVER_17 = 1515870810  # 48/17 in Q2.29
_NR_NEG_32_OVER_17 = -1010580540  # -32/17 in Q2.29
_Q2_29_ONE = 1 << 29


@dataclass(frozen=True)
class SoftmaxParams:
    """Softmax over ``rows`` rows of ``depth`` (the last axis): beta*scale as Q31 multiplier and
    left shift, and diff_min.

    Input differences below ``diff_min`` contribute nothing; the output is int``output_bits``
    with zero point -2^(output_bits-1) and scale 2^-output_bits.
    """

    rows: int
    depth: int
    input_multiplier: int
    input_left_shift: int
    diff_min: int
    output_bits: int


@dataclass(frozen=True)
class LogisticParams:
    """int8 -> int8 on ``size`` elements: (x - zp) becomes Q4.27 by multiplier/shift unless
    |x - zp| >= radius."""

    size: int
    input_zero_point: int
    input_multiplier: int
    input_left_shift: int
    input_range_radius: int


@dataclass(frozen=True)
class TanhParams(LogisticParams):
    """Same input rescaling as LOGISTIC; the output is read as scale 1/128, zero point 0."""


def _io(graph: Graph, node: Node) -> tuple[Tensor, Tensor]:
    """The input and output tensor, both quantized integer tensors."""
    if len(node.inputs) != 1 or len(node.outputs) != 1:
        counts = f"{len(node.inputs)} inputs, {len(node.outputs)} outputs"
        raise unsupported(graph, node, f"needs 1 input and 1 output, has {counts}")
    x, y = graph.tensor(node.inputs[0]), graph.tensor(node.outputs[0])
    for t in (x, y):
        if t.dtype not in ("int8", "int16"):
            raise unsupported(graph, node, f"tensor '{t.name}' is {t.dtype}, only int8 is integer-simulated")
        if t.quant is None:
            raise unsupported(graph, node, f"tensor '{t.name}' has no quantization parameters")
    return x, y


def prepare_softmax(graph: Graph, node: Node) -> SoftmaxParams:
    """TFLM SoftmaxPrepare for int8 input and int8 or int16 output."""
    x, y = _io(graph, node)
    if x.dtype != "int8":
        raise unsupported(graph, node, f"input '{x.name}' is int16 (TFLM uses float-built LUTs there)")
    s_out, zp_out = np.float32(y.quant.scale[0]), y.quant.zero_point[0]
    if y.dtype == "int8" and (zp_out != -128 or s_out != np.float32(1.0 / 256)):
        raise unsupported(graph, node, f"int8 output '{y.name}' needs scale 1/256 and zero point -128")
    if y.dtype == "int16":
        unit = np.float32(1.0) / np.float32(65536)
        if zp_out != -32768 or abs(s_out - unit) > np.float32(0.001) * unit:
            raise unsupported(graph, node, f"int16 output '{y.name}' needs scale 1/65536, zero point -32768")
    beta = float(node.attrs.get("beta", 1.0))
    real = min(beta * float(x.quant.scale[0]) * (1 << (31 - SOFTMAX_DIFF_INT_BITS)), (1 << 31) - 1.0)
    if not real > 1.0:
        raise unsupported(graph, node, f"beta * scale of '{x.name}' too small (multiplier {real} <= 1)")
    multiplier, shift = quantize_multiplier(real)
    radius = math.floor(
        1.0 * ((1 << SOFTMAX_DIFF_INT_BITS) - 1) * (1 << (31 - SOFTMAX_DIFF_INT_BITS)) / (1 << shift)
    )
    depth = x.shape[-1] if x.shape else 1
    rows = x.size // depth if depth else 0
    return SoftmaxParams(rows, depth, multiplier, shift, -radius, 16 if y.dtype == "int16" else 8)


def softmax(params: SoftmaxParams, inputs: list[np.ndarray | None]) -> np.ndarray:
    """reference_ops::Softmax (int8 input) along the last axis."""
    x = np.asarray(inputs[0])
    rows = x.astype(np.int64).reshape(params.rows, params.depth)
    diff = rows - rows.max(axis=1, keepdims=True)
    valid = diff >= params.diff_min
    scaled = srdhm(np.where(valid, diff, 0) << params.input_left_shift, params.input_multiplier)
    exps = _exp_on_negative_values(scaled, SOFTMAX_DIFF_INT_BITS)
    # Rescale<12> (Q0.31 -> Q12.19) and the int32 row sum, wrapping like C.
    total = wrap32(np.where(valid, rdbpot(exps, SOFTMAX_ACCUM_INT_BITS), 0).sum(axis=1, keepdims=True))

    # GetReciprocal: normalise the Q12.19 sum to [1, 2) and take 1/(1 + (sum - 1)).
    unsigned = total & 0xFFFFFFFF
    headroom = 32 - np.frexp(unsigned.astype(np.float64))[1].astype(np.int64)
    shifted_minus_one = wrap32(((unsigned << headroom) & 0xFFFFFFFF) - (1 << 31))
    reciprocal = _one_over_one_plus_x(shifted_minus_one)
    exponent = SOFTMAX_ACCUM_INT_BITS - headroom + 31 - params.output_bits
    if np.any((exponent < 0) | (exponent > 31)):
        raise UnsupportedOpError(
            f"SOFTMAX: a row's sum of exponentials needs shift {int(exponent.max())} > 31 (TFLM aborts here)"
        )
    lowest = -(1 << (params.output_bits - 1))
    out = rdbpot(srdhm(reciprocal, exps), exponent) + lowest
    out = np.where(valid, np.clip(out, lowest, -lowest - 1), lowest)
    return out.astype(f"int{params.output_bits}").reshape(x.shape)


def _prepare_sigmoid_input(graph: Graph, node: Node) -> tuple[int, int, int, int, int]:
    """(size, zero point, multiplier, left shift, radius) taking int8 input to Q4.27 (raw frexp,
    no fix-up)."""
    x, y = _io(graph, node)
    if x.dtype != "int8" or y.dtype != "int8":
        what = f"'{x.name}' is {x.dtype} -> {y.dtype}: only int8 -> int8 (int16 uses TFLM's sigmoid LUT)"
        raise unsupported(graph, node, what)
    q, shift = math.frexp(float(x.quant.scale[0]) * (1 << (31 - SIGMOID_INPUT_INT_BITS)))
    if shift < 0:
        raise unsupported(graph, node, f"input scale of '{x.name}' is below 2^-28")
    radius = math.floor(
        1.0 * ((1 << SIGMOID_INPUT_INT_BITS) - 1) * (1 << (31 - SIGMOID_INPUT_INT_BITS)) / (1 << shift)
    )
    return x.size, x.quant.zero_point[0], round_half_away(q * (1 << 31)), shift, radius


def prepare_logistic(graph: Graph, node: Node) -> LogisticParams:
    """TFLM LogisticPrepare for int8; the output zero point must be -128 (scale 1/256 is assumed)."""
    size, zp, multiplier, shift, radius = _prepare_sigmoid_input(graph, node)
    y = graph.tensor(node.outputs[0])
    zp_out = y.quant.zero_point[0]
    if zp_out != -128:
        raise unsupported(graph, node, f"output '{y.name}' needs zero point -128 (has {zp_out})")
    return LogisticParams(size, zp, multiplier, shift, radius)


def prepare_tanh(graph: Graph, node: Node) -> TanhParams:
    """TFLM TanhPrepare for int8 (the output's scale and zero point are not read)."""
    return TanhParams(*_prepare_sigmoid_input(graph, node))


def _sigmoid_input(params: LogisticParams, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Q4.27 input, mask input <= -radius, mask input >= radius)."""
    v = np.asarray(x, np.int64) - params.input_zero_point
    low = v <= -params.input_range_radius
    high = v >= params.input_range_radius
    inside = np.where(low | high, 0, v)
    return mbqm(inside, params.input_multiplier, params.input_left_shift), low, high


def logistic(params: LogisticParams, inputs: list[np.ndarray | None]) -> np.ndarray:
    """reference_integer_ops::Logistic (int8) with gemmlowp::logistic on Q4.27."""
    a, low, high = _sigmoid_input(params, inputs[0])
    positive = _one_over_one_plus_x(_exp_on_negative_values(-np.abs(a), SIGMOID_INPUT_INT_BITS))
    q0 = np.where(a == 0, 1 << 30, np.where(a > 0, positive, INT32_MAX - positive))
    out = np.clip(rdbpot(q0, 31 - 8) - 128, -128, 127)
    return np.where(low, -128, np.where(high, 127, out)).astype(np.int8)


def tanh(params: TanhParams, inputs: list[np.ndarray | None]) -> np.ndarray:
    """reference_integer_ops::Tanh (int8) with gemmlowp::tanh on Q4.27."""
    a, low, high = _sigmoid_input(params, inputs[0])
    # exp(-2|a|): the Q4.27 raw value read as Q5.26 is 2*(-|a|).
    e = _exp_on_negative_values(-np.abs(a), SIGMOID_INPUT_INT_BITS + 1)
    magnitude = sat_shl(wrap32(_newton_one_over_one_plus_x(e) - _Q2_29_ONE), 2)
    q0 = np.where(a == 0, 0, np.where(a < 0, -magnitude, magnitude))
    out = np.clip(rdbpot(q0, 31 - 7), -128, 127)
    return np.where(low, -128, np.where(high, 127, out)).astype(np.int8)


def _exp_on_negative_values(a: np.ndarray, int_bits: int) -> np.ndarray:
    """gemmlowp exp_on_negative_values: Q(int_bits).(31-int_bits) a <= 0 -> exp(a) in Q0.31.

    Only int_bits <= 5 occurs here, so gemmlowp's clamp to zero below -32 never applies.
    """
    frac_bits = 31 - int_bits
    quarter = 1 << (frac_bits - 2)
    a = np.asarray(a, np.int64)
    a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter
    result = _exp_on_quarter_interval(sat_shl(a_mod_quarter_minus_quarter, int_bits))
    remainder = wrap32(a_mod_quarter_minus_quarter - a)
    for exponent, multiplier in _EXP_NEG_POT:
        if int_bits > exponent:
            bit = (remainder >> (frac_bits + exponent)) & 1
            result = np.where(bit == 1, srdhm(result, multiplier), result)
    return np.where(a == 0, INT32_MAX, result)


def _exp_on_quarter_interval(a: np.ndarray) -> np.ndarray:
    """exp(a) for Q0.31 a in [-1/4, 0): Taylor series around -1/8, all in Q0.31."""
    x = wrap32(a + (1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    poly = rdbpot(wrap32(srdhm(wrap32(x4_over_4 + x3), _ONE_THIRD) + x2), 1)
    return wrap32(_EXP_MINUS_ONE_EIGHTH + srdhm(_EXP_MINUS_ONE_EIGHTH, wrap32(x + poly)))


def _newton_one_over_one_plus_x(a: np.ndarray) -> np.ndarray:
    """Newton-Raphson estimate of 1/((1+a)/2) in Q2.29 for Q0.31 a in [0, 1) (three steps)."""
    s = np.asarray(a, np.int64) + INT32_MAX
    s = s + np.where(s >= 0, 1, -1)
    half_denominator = np.where(s >= 0, s // 2, -((-s) // 2))  # RoundingHalfSum(a, 1): C division
    x = wrap32(_NR_48_OVER_17 + srdhm(half_denominator, _NR_NEG_32_OVER_17))
    for _ in range(3):
        one_minus = wrap32(_Q2_29_ONE - srdhm(half_denominator, x))
        x = wrap32(x + sat_shl(srdhm(x, one_minus), 2))
    return x


def _one_over_one_plus_x(a: np.ndarray) -> np.ndarray:
    """gemmlowp one_over_one_plus_x_for_x_in_0_1: Q0.31 in, Q0.31 out."""
    return sat_shl(_newton_one_over_one_plus_x(a), 1)
