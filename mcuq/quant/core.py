"""Post-training quantization of a float graph to an int8-only graph, and its evaluation.

Schemes (mcuq.quant.scheme): ``tflite`` (Jacob et al., free float32 scales) and ``pow2``
(every scale 2^-n, so every requantization multiplier is an exact power of two: TFLM's
QuantizeMultiplier gives M = 2^30 and the multiply-by-quantized-multiplier is a rounding shift).
Activation clipping ranges come from calibration by a range method (mcuq.quant.ranges); weights
are 8-bit, or 8/4-bit per layer under an accuracy budget (mcuq.quant.search).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from mcuq.errors import ModelError
from mcuq.ir import Graph
from mcuq.quant.accumulator import LayerAccumulator, accumulator_bits
from mcuq.quant.build import build, make_plan, weight_bytes
from mcuq.quant.calibrate import (
    EvalData, Progress, check_labels, check_quantizable, check_samples, default_samples, float_graph, observe,
)
from mcuq.quant.ranges import DEFAULT_RANGE_METHOD, RangeMethod, range_method_of
from mcuq.quant.report import QuantReport, measure
from mcuq.quant.scheme import RULES, Scheme, scheme_of
from mcuq.quant.search import Budget, search_bitwidths

Warn = Callable[[str], None]


@dataclass(frozen=True)
class QuantResult:
    """The int8-only graph, its report, and the worst-case accumulator of every weighted layer."""

    graph: Graph
    report: QuantReport
    accumulators: tuple[LayerAccumulator, ...] = ()


def _warn_default(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def quantize(
    graph: Graph,
    calib: Sequence[np.ndarray] | None,
    scheme: Scheme | str = Scheme.TFLITE,
    warn: Warn = _warn_default,
    progress: Progress | None = None,
    *,
    range_method: RangeMethod | str = DEFAULT_RANGE_METHOD,
    eval_data: EvalData | None = None,
    budget: Budget | None = None,
    bias_correction: bool = True,
) -> QuantResult:
    """Quantize a float graph to int8 with calibration data (one [N, *shape] array per input).

    Without ``calib`` it calibrates on DEFAULT_CALIB_SAMPLES seeded uniform random samples over
    each input's own quantization range if the float model declares one, else
    DEFAULT_INPUT_RANGE, and says so through ``warn``. With ``eval_data`` the report (accuracy,
    per-layer SQNR) is measured on it, else on the calibration samples. With ``budget`` the
    weights of each layer are 8 or 4 bits, searched on the calibration samples.
    ``bias_correction`` subtracts the mean effect of weight rounding from conv/depthwise biases.
    """
    scheme = scheme_of(scheme)
    method = range_method_of(range_method)
    fg = float_graph(graph)
    weights = check_quantizable(fg)
    if calib is None:
        samples, how = default_samples(fg)
        warn(f"no calibration data for {graph.name}: calibrating on {how}; "
             "activation ranges will not match real inputs")
    else:
        samples, how = check_samples(fg, calib, "calibration data"), "user calibration data"
    labels = None
    if eval_data is not None:
        eval_samples = check_samples(fg, eval_data.inputs, "evaluation data")
        labels = check_labels(fg, eval_samples, eval_data.labels, "evaluation data")
    stats, float_outs = observe(fg, samples, progress)
    plan = make_plan(fg, stats, scheme, RULES[scheme], method, weights, bias_correction)
    search = None
    if budget is None:
        qg = build(plan, {}, warn)
    else:
        qg, search = search_bitwidths(plan, samples, float_outs, budget, warn, progress)
    if eval_data is not None:
        samples, how = eval_samples, f"{eval_samples[0].shape[0]} labelled evaluation samples; calibrated on {how}"
    report = measure(fg, qg, samples, labels, scheme, how, progress, range_method=str(method),
                     bitwidth=search, weight_bytes=weight_bytes(qg))
    return QuantResult(qg, report, accumulator_bits(qg))


def evaluate(graph: Graph, qgraph: Graph, data: Sequence[np.ndarray], label: str = "evaluation data",
             scheme: Scheme | str = Scheme.TFLITE, progress: Progress | None = None,
             labels: np.ndarray | None = None) -> QuantReport:
    """Agreement of an integer graph with the float ``graph`` it came from, on other data.

    ``data`` has the layout of calibration data; ``qgraph`` needs int8 inputs and outputs
    (a graph from quantize, or an int8 model of the same network). Per-layer SQNR compares node
    by node when both graphs have the same ops in the same order. With ``labels``, accuracy too.
    """
    for t in qgraph.input_tensors() + qgraph.output_tensors():
        if t.dtype != "int8" or t.quant is None:
            raise ModelError(f"{qgraph.name}: evaluate needs int8 graph inputs and outputs, "
                             f"'{t.name}' is {t.dtype}")
    fg = float_graph(graph)
    samples = check_samples(fg, data, "evaluation data")
    y = None if labels is None else check_labels(fg, samples, labels, "evaluation data")
    same_nodes = len(qgraph.nodes) == len(fg.nodes) and all(a.op == b.op for a, b in zip(fg.nodes, qgraph.nodes))
    return measure(fg, qgraph, samples, y, scheme_of(scheme), label, progress, per_layer=same_nodes,
                   weight_bytes=weight_bytes(qgraph))
