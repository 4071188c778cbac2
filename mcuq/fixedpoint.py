"""Integer arithmetic rules shared by the simulator, the quantizer and the firmware.

This is the Python twin of the firmware's requantize header: saturating rounding doubling
high multiply, rounding divide by a power of two, the multiplier+shift requantization and
its derivation from a real multiplier, exactly as TFLM's reference kernels do them (double
rounding; see ../shared/TFLM-INTEGER.md sections 1-2). All functions take and return numpy
int64 arrays (or scalars) holding int32 values; int32 wrap-around is emulated where C wraps.
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def wrap32(x):
    """Two's-complement int32 wrap of int64 values (C int32 addition overflow)."""
    x = np.asarray(x, np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def round_half_away(v: float) -> int:
    """C round(): half away from zero, exact for every double (Python round() is half-even)."""
    r = math.trunc(v)
    if abs(v - r) >= 0.5:
        r += 1 if v > 0 else -1
    return int(r)


def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul: floor((a*b + 2^30) / 2^31), INT32_MAX for MIN*MIN."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    prod = a * b
    nudge = np.where(prod >= 0, 1 << 30, 1 - (1 << 30))
    # C truncating division of (prod + nudge) by 2^31
    s = prod + nudge
    q = np.where(s >= 0, s >> 31, -((-s) >> 31))
    return np.where(overflow, INT32_MAX, q)


def rdbpot(x, exponent):
    """RoundingDivideByPOT: x / 2^exponent rounded half away from zero (0 <= exponent <= 31)."""
    x = np.asarray(x, np.int64)
    e = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (x < 0)
    return (x >> e) + (rem > thr)


def sat_shl(x, exponent: int):
    """SaturatingRoundingMultiplyByPOT for a left shift (exponent > 0), else rdbpot."""
    x = np.asarray(x, np.int64)
    if exponent <= 0:
        return rdbpot(x, -exponent)
    thr = (1 << (31 - exponent)) - 1
    return np.where(x > thr, INT32_MAX, np.where(x < -thr, INT32_MIN, x << exponent))


def mbqm(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier (TFLM double rounding): rdbpot(srdhm(x << l, M), r).

    ``shift`` > 0 shifts left; multiplier and shift may be per-channel arrays broadcasting
    against ``x``. The left shift wraps like C int32 arithmetic.
    """
    x = np.asarray(x, np.int64)
    s = np.asarray(shift, np.int64)
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    return rdbpot(srdhm(wrap32(x << left), multiplier), right)


def requantize_pow2(x, shift):
    """mbqm(x, 2^30, shift) without a multiplication: the requantization of power-of-two scales.

    With the multiplier 2^30 (a scale 2^(shift - 1)), SRDHM(a, 2^30) = floor((a + 1) / 2), computed
    as (a >> 1) + (a & 1) so that a = INT32_MAX cannot overflow; RDBPOT(t, r) for r >= 1 is then
    ((v >> 1) + 2^(r-2)) >> (r - 1) with v = t - [t < 0] (r >= 2), or (v >> 1) + (v & 1) (r = 1),
    which keeps every intermediate within int32 (the C twin, mcuq_requantize_pow2(), does the
    same). Bit-identical to mbqm for every int32 x and shift in [-31, 30], so shift-only networks
    stay runnable by TFLM's double-rounding kernels.
    """
    x = np.asarray(x, np.int64)
    s = np.asarray(shift, np.int64)
    a = wrap32(x << np.maximum(s, 0))
    r = np.maximum(-s, 0)
    t = (a >> 1) + (a & 1)
    v = t - (t < 0)
    wide = ((v >> 1) + (np.int64(1) << np.maximum(r - 2, 0))) >> np.maximum(r - 1, 0)
    return np.where(r == 0, t, np.where(r == 1, (v >> 1) + (v & 1), wide))


def quantize_multiplier(m: float) -> tuple[int, int]:
    """Real multiplier -> (M, shift) with m ~= M * 2^(shift - 31), M a Q31 in [2^30, 2^31)."""
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    mant = round_half_away(q * (1 << 31))
    if mant == (1 << 31):
        mant //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return mant, shift


def saturate(x, dtype: str):
    """Clamp to the range of an integer numpy dtype and cast to it."""
    info = np.iinfo(dtype)
    return np.clip(x, info.min, info.max).astype(dtype)


def round_half_away_array(v) -> np.ndarray:
    """Vectorized round_half_away over float arrays (exact: no floor(|v| + 0.5) trap)."""
    v = np.asarray(v, np.float64)
    r = np.trunc(v)
    return (r + np.where(np.abs(v - r) >= 0.5, np.sign(v), 0)).astype(np.int64)


def quantize_real(x, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    """TFLM AffineQuantize: clamp(round_half_away(float32(x) / float32(scale)) + zp).

    Out-of-range values (and infinities) saturate like the C kernel; NaN gives the type minimum.
    """
    q = np.asarray(x, np.float32) / np.float32(scale)
    q = np.nan_to_num(np.clip(q, -(2.0 ** 40), 2.0 ** 40), nan=-(2.0 ** 40))
    return saturate(round_half_away_array(q) + zero_point, dtype)
