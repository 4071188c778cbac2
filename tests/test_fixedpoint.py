"""mcuq.fixedpoint (and the int64 MBQM of the conv kernels) against brute-force definitions.

The references below are written from ../shared/TFLM-INTEGER.md section 1 with Python's
unbounded integers and exact fractions, independently of the numpy implementations.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from mcuq.fixedpoint import (
    INT32_MAX, INT32_MIN, mbqm, quantize_multiplier, rdbpot, round_half_away, sat_shl, srdhm, wrap32,
)
from mcuq.simulate.conv import mbqm64

RNG = np.random.default_rng(1234)
EDGES = [INT32_MIN, INT32_MIN + 1, -(1 << 30), -3, -2, -1, 0, 1, 2, 3, 1 << 30, INT32_MAX - 1, INT32_MAX]


def ref_srdhm(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    return (a * b + (1 << 30)) // (1 << 31)  # floor division


def ref_rdbpot(x: int, e: int) -> int:
    if e == 0:
        return x
    sign = -1 if x < 0 else 1
    return sign * ((abs(x) + (1 << (e - 1))) >> e)


def ref_wrap32(x: int) -> int:
    return (x + (1 << 31)) % (1 << 32) - (1 << 31)


def ref_mbqm(x: int, m: int, s: int) -> int:
    return ref_rdbpot(ref_srdhm(ref_wrap32(x << max(s, 0)), m), max(-s, 0))


def ref_quantize_multiplier(m: float) -> tuple[int, int]:
    """Exact: s with 2^(s-1) <= m < 2^s, M = round half away(m * 2^(31-s)), then the fix-ups."""
    if m == 0:
        return 0, 0
    f = Fraction(m)
    s = math.floor(math.log2(m)) + 1
    while f >= Fraction(2) ** s:
        s += 1
    while f < Fraction(2) ** (s - 1):
        s -= 1
    v = f * Fraction(2) ** (31 - s)
    mant = math.floor(v + Fraction(1, 2))  # v > 0: half away from zero
    if mant == 1 << 31:
        mant, s = 1 << 30, s + 1
    if s < -31:
        return 0, 0
    return mant, s


def int32s(n: int) -> np.ndarray:
    return np.concatenate([np.array(EDGES, np.int64), RNG.integers(INT32_MIN, INT32_MAX, n, endpoint=True)])


def test_srdhm_matches_definition() -> None:
    a = int32s(4000)
    b = np.concatenate([a[len(EDGES):][::-1], np.array(EDGES[::-1], np.int64)])
    a, b = np.concatenate([a, np.repeat(EDGES, len(EDGES))]), np.concatenate([b, np.tile(EDGES, len(EDGES))])
    got = srdhm(a, b)
    assert [int(v) for v in got] == [ref_srdhm(int(x), int(y)) for x, y in zip(a, b)]


def test_srdhm_ties_round_toward_plus_infinity() -> None:
    # a*b = (2k + 1) * 2^30 lands exactly between two results
    assert int(srdhm(3, 1 << 30)) == 2 and int(srdhm(-3, 1 << 30)) == -1
    assert int(srdhm(INT32_MIN, INT32_MIN)) == INT32_MAX


@pytest.mark.parametrize("e", range(32))
def test_rdbpot_matches_definition(e: int) -> None:
    half = 1 << (e - 1) if e else 0
    ties = np.array([half, -half, 3 * half, -3 * half, half - 1, -half + 1, half + 1, -half - 1], np.int64)
    x = np.concatenate([int32s(500), np.clip(ties, INT32_MIN, INT32_MAX)])
    got = rdbpot(x, e)
    assert [int(v) for v in got] == [ref_rdbpot(int(v), e) for v in x]


def test_sat_shl_saturates_and_falls_back_to_rdbpot() -> None:
    x = int32s(500)
    for e in (1, 5, 30):
        want = [min(max(int(v) << e, INT32_MIN), INT32_MAX) for v in x]
        assert [int(v) for v in sat_shl(x, e)] == want
    assert [int(v) for v in sat_shl(x, -4)] == [ref_rdbpot(int(v), 4) for v in x]


def test_wrap32_is_twos_complement() -> None:
    x = RNG.integers(-(1 << 62), 1 << 62, 1000)
    assert [int(v) for v in wrap32(x)] == [ref_wrap32(int(v)) for v in x]


@pytest.mark.parametrize("shift", [-31, -20, -9, -1, 0, 1, 3, 7])
def test_mbqm_matches_double_rounding_definition(shift: int) -> None:
    x = RNG.integers(-(1 << 24), 1 << 24, 300) if shift > 0 else int32s(300)
    m = RNG.integers(1 << 30, 1 << 31, len(x))
    got = mbqm(x, m, shift)
    assert [int(v) for v in got] == [ref_mbqm(int(a), int(b), shift) for a, b in zip(x, m)]


def test_mbqm_per_channel_arrays_broadcast() -> None:
    x = RNG.integers(-(1 << 20), 1 << 20, (5, 4))
    m = RNG.integers(1 << 30, 1 << 31, 4)
    s = np.array([-12, -3, 0, 2])
    got = mbqm(x, m, s)
    want = [[ref_mbqm(int(x[i, c]), int(m[c]), int(s[c])) for c in range(4)] for i in range(5)]
    assert got.tolist() == want


def test_mbqm_rounds_twice_like_tflm() -> None:
    # 5 * 0.25 = 1.25: SRDHM(5, 2^30) = 3 (2.5 rounded up), then 3 / 2 = 1.5 rounds away to 2;
    # a single rounding would give 1. TFLM's default build rounds twice.
    assert int(mbqm(5, 1 << 30, -1)) == 2


def test_mbqm64_matches_definition() -> None:
    x = RNG.integers(-(1 << 47), 1 << 47, 2000)
    m = RNG.integers(1 << 30, 1 << 31, 2000)
    m[:5] = [0x7FFF0000 - 1, 0x7FFF0000, INT32_MAX, 1 << 30, (1 << 30) + (1 << 15)]
    s = RNG.integers(-31, 8, 2000)
    got = mbqm64(x, m, s)

    def ref(xi: int, mi: int, si: int) -> int:
        m16 = (mi + (1 << 15)) >> 16 if mi < 0x7FFF0000 else 32767
        t = 15 - si
        return ref_wrap32((xi * m16 + (1 << (t - 1))) >> t)

    assert [int(v) for v in got] == [ref(int(a), int(b), int(c)) for a, b, c in zip(x, m, s)]


def _multipliers() -> list[float]:
    vals = [0.0, 1.0, 0.5, 2.0, 0.75, 1 - 2.0**-40, 1 - 2.0**-33, 1 - 2.0**-31, 2.0**-31, 2.0**-32,
            2.0**-33 * 1.999, 3.0e-12, 1e-5, 0.0039215689, 255.0, 12345.678]
    vals += [float(np.float32(v)) for v in 10.0 ** RNG.uniform(-9, 4, 300)]
    vals += [float(v) for v in 10.0 ** RNG.uniform(-11, 3, 300)]
    return vals


def test_quantize_multiplier_matches_exact_definition() -> None:
    for m in _multipliers():
        assert quantize_multiplier(m) == ref_quantize_multiplier(m), m


def test_quantize_multiplier_fixups() -> None:
    assert quantize_multiplier(1 - 2.0**-40) == (1 << 30, 1)  # mantissa rounds up to 2^31
    assert quantize_multiplier(2.0**-33) == (0, 0)  # s = -32 flushes to zero
    assert quantize_multiplier(2.0**-32) == (1 << 30, -31)
    for m in _multipliers()[1:]:
        mant, s = quantize_multiplier(m)
        if mant:
            assert (1 << 30) <= mant < (1 << 31)
            assert abs(Fraction(mant) * Fraction(2) ** (s - 31) - Fraction(m)) <= Fraction(2) ** (s - 32)


def test_round_half_away_is_c_round() -> None:
    cases = {0.5: 1, -0.5: -1, 1.5: 2, 2.5: 3, -2.5: -3, 0.49999999999999994: 0, -0.49999999999999994: 0,
             4503599627370495.5: 4503599627370496, 2.0**53 + 2: 2**53 + 2, 0.0: 0, -1.25: -1}
    for v, want in cases.items():
        assert round_half_away(v) == want, v
