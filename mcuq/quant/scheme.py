"""How a scheme picks scales: TF Lite's free float32 scales or power-of-two (shift-only) scales.

A scheme maps a clipping range [lo, hi] to candidate per-tensor int8 activation quantizations
and maps per-channel |w| bounds to weight scales. Which range is clipped is the range method's
business (mcuq.quant.ranges); which candidate wins is decided there by measured error.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Protocol

import numpy as np

from mcuq.errors import UnsupportedOpError
from mcuq.fixedpoint import round_half_away
from mcuq.ir import Quant

INT8_MIN, INT8_MAX = -128, 127
F32_TINY = float(np.finfo(np.float32).tiny)


class Scheme(StrEnum):
    """How scales are chosen: TF Lite's free float32 scales, or power-of-two (shift-only) scales."""

    TFLITE = "tflite"
    POW2 = "pow2"


class Rules(Protocol):
    """What a scheme decides: activation candidates from a range, weight scales from |w| bounds."""

    def activation(self, lo: float, hi: float) -> list[Quant]:
        """Candidate int8 quantizations covering [lo, hi] (0 included), the canonical one first."""
        ...

    def weight_scales(self, bound: np.ndarray, qmax: int, floor: np.ndarray) -> np.ndarray:
        """float32 scales mapping |w| <= bound onto [-qmax, qmax], never below ``floor``."""
        ...


def f32(v: float) -> float:
    return float(np.float32(v))


def is_pow2(v: float) -> bool:
    """True when v is exactly 2^k for an integer k."""
    m, _ = math.frexp(v)
    return v > 0 and m == 0.5


def pow2_at_least(v: float) -> float:
    """The smallest power of two >= v (v > 0), exact."""
    m, e = math.frexp(v)
    return math.ldexp(1.0, e - 1 if m == 0.5 else e)


class TfliteRules:
    """Jacob et al. as TF Lite does it: scale = range / 255, zero point rounded into int8."""

    def activation(self, lo: float, hi: float) -> list[Quant]:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if hi == lo:  # an all-zero tensor: any scale represents it exactly
            hi = 1.0
        scale = f32((hi - lo) / (INT8_MAX - INT8_MIN))
        zp = min(max(round_half_away(INT8_MIN - lo / scale), INT8_MIN), INT8_MAX)
        return [Quant((scale,), (zp,))]

    def weight_scales(self, bound: np.ndarray, qmax: int, floor: np.ndarray) -> np.ndarray:
        return np.maximum(bound / qmax, floor).astype(np.float32)


class Pow2Rules:
    """Every scale 2^-n: the smallest power of two whose int8 grid covers the range.

    Asymmetric candidate: zero point places the slack of the coarser grid evenly around [lo, hi]
    (and keeps 0 at the bottom of a non-negative range, so a fused ReLU clamps at zp). A signed
    range also gets the symmetric candidate (zero point 0); the caller keeps the one with less error.
    """

    def activation(self, lo: float, hi: float) -> list[Quant]:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if hi == lo:
            hi = 1.0
        scale = pow2_at_least((hi - lo) / (INT8_MAX - INT8_MIN))
        if lo == 0.0:
            zp = INT8_MIN
        else:
            slack = (INT8_MAX - INT8_MIN) * scale - (hi - lo)
            zp = round_half_away(INT8_MIN - (lo - slack / 2) / scale)
        out = [Quant((scale,), (min(max(zp, INT8_MIN), INT8_MAX),))]
        if lo < 0.0 < hi:
            out.append(Quant((pow2_at_least(max(-lo, hi) / INT8_MAX),), (0,)))
        return out

    def weight_scales(self, bound: np.ndarray, qmax: int, floor: np.ndarray) -> np.ndarray:
        need = np.maximum(bound / qmax, floor)
        return np.array([pow2_at_least(v) if v > 0 else 1.0 for v in need], np.float32)


RULES: dict[Scheme, Rules] = {Scheme.TFLITE: TfliteRules(), Scheme.POW2: Pow2Rules()}


def scheme_of(scheme: Scheme | str) -> Scheme:
    """The Scheme named by ``scheme``, or an UnsupportedOpError listing the schemes."""
    try:
        return Scheme(scheme)
    except ValueError:
        raise UnsupportedOpError(f"unknown quantization scheme '{scheme}'; "
                                 f"schemes: {', '.join(s.value for s in Scheme)}") from None
