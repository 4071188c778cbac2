"""Activation clipping ranges from calibration data (Bounded ReLU, Zhao et al.; Goyal et al.).

Calibration keeps, per tensor, its exact min/max and a seeded sample of its values. A range
method turns those into candidate clipping bounds; the scheme turns each bound into candidate
quantizations; the candidate with the least mean squared quantization error on the sampled
values wins. Weight scales are chosen the same way, per channel, among a few candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from mcuq.errors import UnsupportedOpError
from mcuq.ir import Quant
from mcuq.quant.scheme import INT8_MAX, INT8_MIN, Rules

VALUES_PER_SAMPLE = 4096  # values of each tensor kept per calibration sample
PERCENTILES = (99.0, 99.9, 99.99)
SHRINK = tuple(float(f) for f in np.linspace(1.0, 0.2, 33))  # fractions of min/max the MSE grid tries


class RangeMethod(StrEnum):
    """How an activation's clipping bound is chosen from calibration data.

    minmax: the observed min and max (Jacob et al.). percentile: the 0.01 / 99.99 percentiles.
    mse: among min/max, percentiles 99 / 99.9 / 99.99 and min/max shrunk on a grid, the bound
    whose quantization has the least mean squared error on the calibration values.
    """

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    MSE = "mse"


DEFAULT_RANGE_METHOD = RangeMethod.MSE


def range_method_of(method: RangeMethod | str) -> RangeMethod:
    try:
        return RangeMethod(method)
    except ValueError:
        raise UnsupportedOpError(f"unknown range method '{method}'; "
                                 f"methods: {', '.join(m.value for m in RangeMethod)}") from None


@dataclass
class TensorStats:
    """Running min/max and elementwise sum of one tensor over the calibration set, and a sample of
    its values."""

    lo: float = math.inf
    hi: float = -math.inf
    chunks: list[np.ndarray] | None = None
    total: np.ndarray | None = None
    count: int = 0

    def add(self, v: np.ndarray, rng: np.random.Generator) -> None:
        self.total = v.astype(np.float64) if self.total is None else self.total + v
        self.count += 1
        flat = v.reshape(-1)
        self.lo = min(self.lo, float(flat.min()))
        self.hi = max(self.hi, float(flat.max()))
        if flat.size > VALUES_PER_SAMPLE:
            flat = flat[rng.choice(flat.size, VALUES_PER_SAMPLE, replace=False)]
        if self.chunks is None:
            self.chunks = []
        self.chunks.append(flat.astype(np.float32))

    def mean(self) -> np.ndarray | None:
        """The tensor's elementwise mean over the calibration samples (None for constants)."""
        return None if self.total is None else self.total / self.count

    def values(self) -> np.ndarray:
        """The sampled values, the exact extremes included."""
        chunks = self.chunks or []
        return np.concatenate([*chunks, np.array([self.lo, self.hi], np.float32)])


def merged(stats: list[TensorStats]) -> TensorStats:
    """One TensorStats over several tensors (operands that must share a quantization)."""
    chunks = [c for s in stats for c in (s.chunks or [])]
    return TensorStats(min(s.lo for s in stats), max(s.hi for s in stats), chunks)


def quant_mse(values: np.ndarray, q: Quant, qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> float:
    """Mean squared error of quantizing then dequantizing ``values`` with per-tensor ``q``."""
    s, zp = q.scale[0], q.zero_point[0]
    v = values.astype(np.float64)
    back = (np.clip(np.round(v / s) + zp, qmin, qmax) - zp) * s
    return float(np.mean((v - back) ** 2))


def bounds(stats: TensorStats, method: RangeMethod) -> list[tuple[float, float]]:
    """Candidate clipping ranges for ``method`` (min/max first for minmax and mse)."""
    out = [(stats.lo, stats.hi)]
    if method == RangeMethod.MINMAX:
        return out
    v = stats.values()
    if method == RangeMethod.PERCENTILE:
        return [(float(np.percentile(v, 0.01)), float(np.percentile(v, 99.99)))]
    out += [(float(np.percentile(v, 100 - p)), float(np.percentile(v, p))) for p in PERCENTILES]
    out += [(stats.lo * f, stats.hi * f) for f in SHRINK[1:]]
    return out


def choose_activation(stats: TensorStats, rules: Rules, method: RangeMethod) -> Quant:
    """The scheme's candidate quantization with the least error over the method's bounds."""
    cands: list[Quant] = []
    for lo, hi in bounds(stats, method):
        cands += [q for q in rules.activation(lo, hi) if q not in cands]
    if len(cands) == 1:
        return cands[0]
    v = stats.values()
    return min(cands, key=lambda q: quant_mse(v, q))


def best_channel_scales(w: np.ndarray, axis: int | None, cands: list[np.ndarray], qmax: int) -> np.ndarray:
    """Per channel along ``axis`` (or per tensor when None), the candidate scale of least squared error.

    ``cands`` holds candidate scale vectors (one entry per channel, or one entry); ties keep
    the earliest candidate.
    """
    w = w.astype(np.float64)
    if axis is None:
        moved = w.reshape(1, -1)
    else:
        moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    errs = []
    for s in cands:
        s64 = s.astype(np.float64)[:, None]
        back = np.clip(np.round(moved / s64), -qmax, qmax) * s64
        errs.append(((moved - back) ** 2).sum(axis=1))
    pick = np.argmin(np.stack(errs), axis=0)
    return np.stack(cands)[pick, np.arange(len(pick))].astype(np.float32)
