"""Post-training quantization of float graphs to integer-only graphs, with accuracy reports.

Modules: scheme (tflite / pow2 scale rules), ranges (activation clipping from calibration),
calibrate (float graph, data checks, observation), build (the integer graph), search (per-layer
weight bitwidths under a budget), accumulator (worst-case accumulator bits), report (SQNR,
accuracy, plot), core (quantize, evaluate).
"""

from mcuq.quant.accumulator import LayerAccumulator, accumulator_bits, check_accumulators
from mcuq.quant.build import BIAS_LIMIT, weight_bytes
from mcuq.quant.calibrate import DEFAULT_CALIB_SAMPLES, MIN_CALIB_SAMPLES, EvalData, load_eval_data
from mcuq.quant.core import QuantResult, evaluate, quantize
from mcuq.quant.ranges import DEFAULT_RANGE_METHOD, RangeMethod
from mcuq.quant.report import Accuracy, BitwidthSearch, LayerReport, OutputAgreement, QuantReport, plot_sqnr
from mcuq.quant.scheme import Scheme
from mcuq.quant.search import Budget

__all__ = [
    "BIAS_LIMIT", "DEFAULT_CALIB_SAMPLES", "DEFAULT_RANGE_METHOD", "MIN_CALIB_SAMPLES", "Accuracy",
    "BitwidthSearch", "Budget", "EvalData", "LayerAccumulator", "LayerReport", "OutputAgreement",
    "QuantReport", "QuantResult", "RangeMethod", "Scheme", "accumulator_bits", "check_accumulators",
    "evaluate", "load_eval_data", "plot_sqnr", "quantize", "weight_bytes",
]
