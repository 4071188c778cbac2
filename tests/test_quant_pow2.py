"""Power-of-two (shift-only) quantization, range methods, int4 weights, accumulator bits, reports.

Bit-exactness is the strong check again: every pow2 or int4 graph, written as .tflite and run
by tflite-micro, gives every tensor np.array_equal to mcuq.simulate.run_integer.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from mcuq.errors import CalibrationError, UnsupportedOpError
from mcuq.fixedpoint import mbqm, quantize_multiplier, rdbpot
from mcuq.ir import Graph, Op
from mcuq.quant import (
    Budget, EvalData, QuantResult, RangeMethod, Scheme, accumulator_bits, check_accumulators, load_eval_data,
    plot_sqnr, quantize, weight_bytes,
)
from mcuq.quant.ranges import TensorStats, choose_activation, quant_mse
from mcuq.quant.scheme import RULES, is_pow2
from mcuq.reader import read_model
from mcuq.simulate import prepare_graph
from test_quant import (
    MODELS, SHARED, assert_bit_exact_in_tflm, calibration, int8_inputs, ok_calib, two_input_graph, zoo_graph,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import digits_cnn  # noqa: E402

M_POW2 = 1 << 30  # QuantizeMultiplier of any exact power of two


def all_scales_pow2(qg: Graph) -> bool:
    return all(is_pow2(s) for t in qg.tensors if t.quant is not None for s in t.quant.scale)


def multipliers(qg: Graph) -> list[tuple[str, int]]:
    """Every requantization multiplier the prepared kernels use, named by node and field."""
    out = []
    for node, p in zip(qg.nodes, prepare_graph(qg)):
        for k, v in vars(p).items():
            if k.endswith("multiplier") and k != "depth_multiplier":
                out += [(f"{node.index} {node.op} {k}", int(m)) for m in np.atleast_1d(v)]
    return out


# --- the shift-only rounding rule -----------------------------------------------------------------

def shift_only(x: np.ndarray, e: int) -> np.ndarray:
    """x * 2^e as MBQM(x, 2^30, e + 1) computes it: x << e for e >= 0, else rdbpot((x + 1) >> 1, -e - 1)."""
    x = np.asarray(x, np.int64)
    if e >= 0:
        return x << e
    return rdbpot((x + 1) >> 1, -e - 1)


@pytest.mark.parametrize("e", [-31, -20, -9, -2, -1, 0, 1, 5])
def test_power_of_two_multiplier_is_the_shift_only_rule(e: int) -> None:
    m, s = quantize_multiplier(math.ldexp(1.0, e))
    assert (m, s) == (M_POW2, e + 1)
    rng = np.random.default_rng(e + 40)
    lim = 1 << (30 - e) if e >= 0 else 1 << 31  # beyond, TFLM's x << (e + 1) overflows int32 (C UB)
    x = np.concatenate([rng.integers(-lim, lim, 20000), np.arange(-70, 70), [-lim, lim - 1]])
    assert np.array_equal(mbqm(x, m, s), shift_only(x, e))


def test_shift_only_rule_is_double_rounding_not_nearest() -> None:
    """The rule rounds twice: 1 / 4 gives 1 (nearest would give 0); ties go away from zero."""
    assert shift_only(np.array([1, 2, -2, 3, -3, 6, -6]), -2).tolist() == [1, 1, -1, 1, -1, 2, -2]


# --- pow2 on the synthetic zoo and the shared float models -----------------------------------------

@functools.cache
def zoo_pow2() -> tuple[Graph, list[np.ndarray], QuantResult]:
    g = zoo_graph()
    calib = calibration(g, -1.0, 1.0, n=16)
    return g, calib, quantize(g, calib, Scheme.POW2)


def test_pow2_zoo_has_power_of_two_scales_and_shift_multipliers() -> None:
    _, _, r = zoo_pow2()
    qg = r.graph
    assert all_scales_pow2(qg)
    for n in qg.nodes:
        if n.op in (Op.CONV_2D, Op.DEPTHWISE_CONV_2D, Op.FULLY_CONNECTED) and len(n.inputs) > 2:
            s_in = qg.tensor(n.inputs[0]).quant.scale[0]
            b, w = qg.tensor(n.inputs[2]), qg.tensor(n.inputs[1])
            assert b.quant.scale == tuple(s_in * s for s in w.quant.scale)
    # softmax/logistic/tanh have their own fixed-point pipelines; their input multipliers are pow2 too
    named = multipliers(qg)
    assert len(named) > 35 and {m for _, m in named} == {M_POW2}, [x for x in named if x[1] != M_POW2]
    assert r.report.scheme == Scheme.POW2 and min(o.sqnr_db for o in r.report.outputs) > 20.0, r.report.format()


def test_pow2_zoo_runs_bit_exact_in_tflm() -> None:
    _, calib, r = zoo_pow2()
    assert_bit_exact_in_tflm(r.graph, int8_inputs(r.graph, calib, seed=4))


@functools.cache
def shared_pow2(name: str) -> tuple[Graph, list[np.ndarray], QuantResult]:
    path = MODELS / f"{name}.tflite"
    if not path.exists():
        pytest.skip(f"shared model {path} absent")
    g = read_model(path)
    calib = calibration(g, *SHARED[name][0])
    return g, calib, quantize(g, calib, Scheme.POW2)


# pow2 output SQNR measured with these 12 calibration samples: hello_world 30.9, ad01 33.1,
# pretrainedResnet 19.8, vww_96 54.8 dB; floors about 3 dB below.
POW2_FLOOR = {"tflite-micro/hello_world_float": 28.0, "mlperf-tiny/ad01_fp32": 30.0,
              "mlperf-tiny/pretrainedResnet": 17.0, "mlperf-tiny/vww_96_float": 51.5}


@pytest.mark.parametrize("name", SHARED)
def test_pow2_shared_model_is_shift_only_and_bit_exact_in_tflm(name: str) -> None:
    _, calib, r = shared_pow2(name)
    assert all_scales_pow2(r.graph)
    assert all(m == M_POW2 for node, m in multipliers(r.graph) if "MEAN" not in node), name  # MEAN: 1/N
    (out,) = r.report.outputs
    assert out.sqnr_db >= POW2_FLOOR[name], r.report.format()
    assert_bit_exact_in_tflm(r.graph, int8_inputs(r.graph, calib, seed=7))


def test_pow2_add_aligns_operands_by_exact_shifts() -> None:
    """ADD operands keep their own pow2 scales; TFLM's ADD multipliers become exact shifts."""
    g = two_input_graph()
    a, b = ok_calib(16)
    calib = [a, b[:, None]]
    r = quantize(g, calib, Scheme.POW2)
    s1, s2, so = (r.graph.tensor(i).quant.scale[0] for i in (0, 1, 2))
    assert s2 == 2 * s1 or s2 == 4 * s1  # inputs in [-1, 1] and [-2, 2]: different formats, not one forced
    (p,) = prepare_graph(r.graph)
    assert (p.input1_multiplier, p.input2_multiplier, p.output_multiplier) == (M_POW2,) * 3
    assert 2.0 ** (p.input1_shift - 1) == s1 / (2 * max(s1, s2))
    assert_bit_exact_in_tflm(r.graph, int8_inputs(r.graph, calib, seed=3))


# --- range methods ---------------------------------------------------------------------------------

def stats_of(values: np.ndarray) -> TensorStats:
    rng = np.random.default_rng(0)
    s = TensorStats()
    for chunk in values.reshape(8, -1):
        s.add(chunk, rng)
    return s


@pytest.mark.parametrize("scheme", list(Scheme))
def test_mse_range_never_errs_more_than_the_other_methods(scheme: Scheme) -> None:
    """Its candidates include min/max and the percentiles (Laplace data: a heavy tail)."""
    stats = stats_of(np.random.default_rng(1).laplace(size=24000).astype(np.float32))
    v = stats.values()
    err = {m: quant_mse(v, choose_activation(stats, RULES[scheme], m)) for m in RangeMethod}
    assert err[RangeMethod.MSE] <= min(err.values()), err


def test_pow2_mse_takes_the_finer_power_when_a_thin_tail_wastes_a_bit() -> None:
    """Values in [-1, 1] and five in (1, 1.05]: min/max needs 2^-6 (the grid spans 4), the MSE method
    takes 2^-7 and clips the five: a quarter of the error."""
    rng = np.random.default_rng(2)
    v = np.concatenate([rng.uniform(-1, 1, 23995), np.linspace(1.01, 1.05, 5)]).astype(np.float32)
    stats = stats_of(rng.permutation(v))
    rules = RULES[Scheme.POW2]
    wide, fine = (choose_activation(stats, rules, m) for m in (RangeMethod.MINMAX, RangeMethod.MSE))
    assert wide.scale == (2.0 ** -6,) and fine.scale == (2.0 ** -7,)
    assert quant_mse(stats.values(), fine) < 0.3 * quant_mse(stats.values(), wide)


def test_pow2_rules_cover_the_range_and_pin_relu_zero() -> None:
    rules = RULES[Scheme.POW2]
    for lo, hi in [(0.0, 6.0), (-1.0, 3.0), (-0.3, 0.01), (-5.0, 5.0), (0.0, 0.0)]:
        for q in rules.activation(lo, hi):
            s, zp = q.scale[0], q.zero_point[0]
            assert is_pow2(s) and -128 <= zp <= 127
            assert s * (-128 - zp) <= min(lo, 0.0) + 1e-12 and s * (127 - zp) >= hi - s
    assert rules.activation(0.0, 6.0)[0].zero_point == (-128,)
    assert [q.zero_point[0] for q in rules.activation(-5.0, 5.0)][1:] == [0]  # symmetric candidate


def test_range_method_is_a_parameter_and_unknown_is_refused() -> None:
    g = zoo_graph()
    calib = calibration(g, -1.0, 1.0, n=16)
    a = quantize(g, calib, Scheme.TFLITE, range_method="minmax")
    b = quantize(g, calib, Scheme.TFLITE, range_method=RangeMethod.MSE)
    assert a.report.range_method == "minmax" and b.report.range_method == "mse"
    assert [t.quant for t in a.graph.tensors] != [t.quant for t in b.graph.tensors]
    with pytest.raises(UnsupportedOpError, match="unknown range method 'p99'; methods: minmax, percentile, mse"):
        quantize(g, calib, range_method="p99")


# --- int4 weights ---------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", list(Scheme))
def test_int4_weights_run_bit_exact_in_tflm(scheme: Scheme) -> None:
    """A budget anything meets puts every layer at 4 bits: conv and depthwise per channel, FC per tensor."""
    g = zoo_graph()
    calib = calibration(g, -1.0, 1.0, n=16)
    r = quantize(g, calib, scheme, budget=Budget(min_sqnr_db=-1e9))
    qg = r.graph
    four = {t.name: t for t in qg.tensors if t.dtype == "int4"}
    assert set(r.report.bitwidth.int4_layers) == {"c1", "d1", "fc"} and len(four) == 3
    for t in four.values():
        assert t.data.dtype == np.int8 and t.data.min() >= -7 and t.data.max() <= 7
    assert not four["wf"].quant.per_channel and four["wd"].quant.per_channel
    assert r.report.bitwidth.weight_bytes == weight_bytes(qg) < r.report.bitwidth.weight_bytes_8bit
    assert_bit_exact_in_tflm(qg, int8_inputs(qg, calib, seed=5))


# --- the digits CNN: accuracy targets of issue 4 ---------------------------------------------------

@functools.cache
def digits() -> tuple[Graph, np.ndarray, EvalData]:
    rng = np.random.default_rng(0)
    xtr, ytr, xte, yte = digits_cnn.load_digits_split(0)
    net = digits_cnn.Net(rng)
    net.train(xtr, ytr, 12, rng)
    return net.to_graph(), xtr[:256, None], EvalData((xte[:, None],), yte)


@functools.cache
def digits_result(scheme: Scheme, max_drop: float | None = None) -> QuantResult:
    g, calib, ev = digits()
    budget = None if max_drop is None else Budget(max_drop=max_drop)
    return quantize(g, [calib], scheme, eval_data=ev, budget=budget)


def test_digits_pow2_accuracy_is_within_a_point_of_float_and_half_a_point_of_tflite() -> None:
    p, t = digits_result(Scheme.POW2).report, digits_result(Scheme.TFLITE).report
    # measured: float 98.61 %, tflite 98.61 %, pow2 98.61 % on the 360 held-out digits
    assert p.accuracy.float_pct > 97.0 and p.accuracy.samples == 360
    assert p.accuracy.drop <= 1.0 and abs(t.accuracy.integer_pct - p.accuracy.integer_pct) <= 0.5
    assert p.accuracy.agreement_pct >= 99.0
    assert len(p.layers) == 5 and all(r.sqnr_db > 30.0 for r in p.layers), p.format()
    assert [r.weight_bits for r in p.layers] == [8, 8, None, 8, None]


def test_digits_bitwidth_search_saves_30_percent_under_a_point() -> None:
    r = digits_result(Scheme.POW2, max_drop=1.0)
    b, a = r.report.bitwidth, r.report.accuracy
    # measured: all three layers at 4 bits, 3,928 -> 2,036 weight bytes (48 %), accuracy 98.61 %
    assert b.met and b.saved_pct >= 30.0 and b.weight_bytes == weight_bytes(r.graph), r.report.format()
    assert a.drop < 1.0 and b.score >= 99.0
    assert b.evaluated <= 1 + 2 * 3
    assert_bit_exact_in_tflm(r.graph, [[np.asarray(x, np.int8)] for x in
                                       np.random.default_rng(2).integers(-128, 128, (2, 1, 8, 8, 1))])


def test_impossible_budget_warns_and_keeps_all_8_bit() -> None:
    g, calib, _ = digits()
    said: list[str] = []
    r = quantize(g, [calib[:64]], Scheme.POW2, warn=said.append, budget=Budget(min_sqnr_db=200.0))
    b = r.report.bitwidth
    assert not b.met and b.int4_layers == () and b.weight_bytes == b.weight_bytes_8bit
    assert len(said) == 1 and "no weight bitwidths meet the budget (output SQNR >= 200 dB)" in said[0]
    assert "keeping all-8-bit weights, the best found" in said[0] and "\n" not in said[0]


def test_top1_budget_needs_a_classifier() -> None:
    with pytest.raises(CalibrationError, match="top-1 budget .* needs a softmax classifier output; give an SQNR"):
        quantize(two_input_graph(), ok_calib(), budget=Budget(max_drop=1.0))
    with pytest.raises(ValueError, match="exactly one of max_drop and min_sqnr_db"):
        Budget()


# --- accumulators ---------------------------------------------------------------------------------

def test_accumulator_bits_are_the_worst_case_of_weights_and_input_range() -> None:
    r = digits_result(Scheme.POW2)
    qg = r.graph
    accs = {a.node: a for a in accumulator_bits(qg)}
    assert set(accs) == {0, 1, 3} and accs == {a.node: a for a in r.accumulators}
    conv2 = qg.nodes[1]
    w = qg.tensor(conv2.inputs[1]).data.astype(np.int64)
    b = qg.tensor(conv2.inputs[2]).data.astype(np.int64)
    zp = qg.tensor(conv2.inputs[0]).quant.zero_point[0]  # conv1 has a fused ReLU: x in [zp, 127]
    worst = int((np.abs(w).reshape(16, -1).sum(1) * (127 - zp) + np.abs(b)).max())
    assert accs[1].worst == worst and accs[1].bits == worst.bit_length() + 1 and accs[1].fits_int32
    # the bound holds on real data: no accumulator of conv2 exceeds it
    assert all(a.bits <= 32 for a in check_accumulators(qg))
    assert [r.accumulator_bits for r in r.report.layers] == [accs[0].bits, accs[1].bits, None, accs[3].bits, None]


def test_overflowing_accumulator_is_refused_and_rescaled_by_quantize() -> None:
    """A 150,000-deep FC of weights 127/128: worst case above int32. quantize doubles the weight scale
    until it fits (and says so); the same weights forced in an int8 graph are refused."""
    from mcuq.ir import Node, Tensor

    depth = 150_000
    w = np.full((1, depth), 127 / 128, np.float32)
    tensors = (Tensor(0, "x", (1, depth), "float32"), Tensor(1, "w", (1, depth), "float32", None, w),
               Tensor(2, "y", (1, 1), "float32"))
    fc = Node(0, Op.FULLY_CONNECTED, (0, 1, -1), (2,), {"activation": "NONE", "keep_num_dims": False,
                                                         "weights_format": "DEFAULT"})
    g = Graph(tensors, (fc,), (0,), (2,), "deep")
    x = np.random.default_rng(0).uniform(-1, 1, (4, 1, depth)).astype(np.float32)
    said: list[str] = []
    r = quantize(g, [x], Scheme.POW2, warn=said.append)
    assert len(said) == 1 and "int32 accumulator could overflow; weight scale doubled" in said[0]
    (acc,) = r.accumulators
    assert acc.fits_int32 and acc.worst <= (1 << 31) - 1
    qw = r.graph.tensor(1)
    bad = Graph((r.graph.tensor(0), type(qw)(1, "w", qw.shape, "int8", qw.quant, np.full(qw.shape, 127, np.int8)),
                 r.graph.tensor(2)), r.graph.nodes, r.graph.inputs, r.graph.outputs, "deep")
    with pytest.raises(UnsupportedOpError, match=r"node 0 \(FULLY_CONNECTED, output 'y'\) could overflow its "
                                                 r"int32 accumulator .* needs 3[3-9] bits"):
        check_accumulators(bad)


# --- reports and bad evaluation data --------------------------------------------------------------

def test_report_dict_is_json_and_plot_is_a_png(tmp_path: Path) -> None:
    r = digits_result(Scheme.POW2, max_drop=1.0)
    d = json.loads(json.dumps(r.report.to_dict()))
    assert d["scheme"] == "pow2" and d["range_method"] == "mse" and d["samples"] == 360
    assert d["accuracy"]["integer_pct"] == r.report.accuracy.integer_pct
    assert [x["name"] for x in d["layers"]] == ["conv1", "conv2", "flatten", "logits", "probabilities"]
    assert d["bitwidth_search"]["met"] and d["bitwidth_search"]["saved_pct"] >= 30.0
    text = r.report.format()
    assert "accuracy on 360 labelled samples" in text and "bitwidth search" in text and "conv2" in text
    png = plot_sqnr(r.report, tmp_path / "sqnr.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


@pytest.mark.parametrize("labels,match", [
    (None, r"^evaluation data: labels missing \(an array 'labels' of 8 class indices\)$"),
    (np.zeros(7, np.int64), r"labels have shape \[7\], expected \[8\]"),
    (np.full(8, 10), r"labels span \[10, 10\], the first output 'probabilities' has 10 class"),
    (np.full(8, 0.5), r"labels must be integer class indices, got float64"),
])
def test_bad_labels_raise(labels, match: str) -> None:
    g, calib, ev = digits()
    with pytest.raises(CalibrationError, match=match):
        quantize(g, [calib[:8]], eval_data=EvalData((ev.inputs[0][:8],), labels))


def test_bad_evaluation_inputs_raise() -> None:
    g, calib, ev = digits()
    with pytest.raises(CalibrationError, match=r"evaluation data for input 'input': expected shape .* got \[8, 8, 8\]"):
        quantize(g, [calib[:8]], eval_data=EvalData((ev.inputs[0][:8, 0, :, :, 0],), ev.labels[:8]))
    with pytest.raises(CalibrationError, match=r"evaluation data for input 'input': 2 samples, need at least 4"):
        quantize(g, [calib[:8]], eval_data=EvalData((ev.inputs[0][:2],), ev.labels[:2]))


def test_load_eval_data(tmp_path: Path) -> None:
    g, _, ev = digits()
    np.savez(tmp_path / "ok.npz", in0=ev.inputs[0][:10], labels=ev.labels[:10])
    np.savez(tmp_path / "nolabels.npz", in0=ev.inputs[0][:10])
    np.savez(tmp_path / "noin.npz", x=ev.inputs[0][:10])
    d = load_eval_data(tmp_path / "ok.npz", g)
    assert np.array_equal(d.inputs[0], ev.inputs[0][:10]) and np.array_equal(d.labels, ev.labels[:10])
    with pytest.raises(CalibrationError, match=r"nolabels.npz: labels missing"):
        load_eval_data(tmp_path / "nolabels.npz", g)
    with pytest.raises(CalibrationError, match=r"noin.npz: evaluation data need array\(s\) in0 \(found x\)"):
        load_eval_data(tmp_path / "noin.npz", g)
    with pytest.raises(CalibrationError, match=r"absent.npz: no such file"):
        load_eval_data(tmp_path / "absent.npz", g)


def test_bias_correction_moves_conv_biases_by_the_mean_rounding_effect() -> None:
    """Conv bias shifts by (Wq - W) . E[x] per channel; fully connected biases are left alone."""
    g, calib, ev = digits()
    on = quantize(g, [calib], Scheme.POW2)
    off = quantize(g, [calib], Scheme.POW2, bias_correction=False)
    conv1, fc = on.graph.nodes[0], on.graph.nodes[3]
    assert np.array_equal(on.graph.tensor(fc.inputs[2]).data, off.graph.tensor(fc.inputs[2]).data)
    b_on, b_off = (r.graph.tensor(conv1.inputs[2]) for r in (on, off))
    w = g.tensor(g.nodes[0].inputs[1]).data.astype(np.float64)  # [8, 3, 3, 1]
    wq = on.graph.tensor(conv1.inputs[1])
    dw = wq.data * np.asarray(wq.quant.scale)[:, None, None, None] - w
    mean_x = float(np.mean(calib))  # one input channel
    want = -(dw.sum(axis=(1, 2, 3)) * mean_x) / np.asarray(b_on.quant.scale)
    assert np.abs((b_on.data.astype(np.int64) - b_off.data) - want).max() <= 1.0
    assert not np.array_equal(b_on.data, b_off.data)
