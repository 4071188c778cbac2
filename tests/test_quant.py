"""Post-training quantization: int8-only graphs that TFLM runs bit-exactly like our simulator.

The strongest check: the quantized graph, written as .tflite by mcuq.writer and run by the
tflite-micro interpreter, gives every tensor np.array_equal to mcuq.simulate.run_integer.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mcuq.errors import CalibrationError, ModelError, UnsupportedOpError
from mcuq.fixedpoint import quantize_real
from mcuq.ir import Graph, Node, Op, Quant, Tensor
from mcuq.quant import MIN_CALIB_SAMPLES, QuantResult, Scheme, evaluate, quantize
from mcuq.reader import read_model
from mcuq.simulate import run_integer
from mcuq.writer import write_model

runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
ARENA = 4 << 20
CALIB_SAMPLES = 12
# Shared float model -> (input domain its int8 sibling declares, SQNR floor in dB).
# Measured with the seeded calibration data below (tflite scheme): hello_world 28.9,
# ad01 36.1, pretrainedResnet 23.1, vww_96 52.7 dB; floors sit about 3 dB below.
SHARED = {
    "tflite-micro/hello_world_float": ((0.0, 6.2832), 25.5),
    "mlperf-tiny/ad01_fp32": ((-84.85, 14.86), 33.0),
    "mlperf-tiny/pretrainedResnet": ((0.0, 255.0), 20.0),
    "mlperf-tiny/vww_96_float": ((0.0, 1.0), 49.5),
}
CLASSIFIERS = {"mlperf-tiny/pretrainedResnet", "mlperf-tiny/vww_96_float"}


def calibration(g: Graph, lo: float, hi: float, n: int = CALIB_SAMPLES, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(lo, hi, (n, *t.shape)).astype(np.float32) for t in g.input_tensors()]


@functools.cache
def shared_result(name: str) -> tuple[Graph, list[np.ndarray], QuantResult]:
    path = MODELS / f"{name}.tflite"
    if not path.exists():
        pytest.skip(f"shared model {path} absent")
    g = read_model(path)
    calib = calibration(g, *SHARED[name][0])
    return g, calib, quantize(g, calib)


def int8_inputs(qg: Graph, calib: list[np.ndarray], seed: int) -> list[list[np.ndarray]]:
    """The first calibration samples quantized, plus one full-range random int8 sample."""
    rng = np.random.default_rng(seed)
    out = [[quantize_real(a[s], t.quant.scale[0], t.quant.zero_point[0], "int8")
            for a, t in zip(calib, qg.input_tensors())] for s in range(3)]
    out.append([rng.integers(-128, 128, t.shape, dtype=np.int8) for t in qg.input_tensors()])
    return out


def tflm_all_tensors(model: bytes, qg: Graph, xs: list[np.ndarray]) -> dict[int, np.ndarray]:
    it = runtime.Interpreter.from_bytes(model, arena_size=ARENA,
                                        intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    for i, x in enumerate(xs):
        it.set_input(x, i)
    it.invoke()
    out = {t.index: np.array(it.GetTensor(t.index, 0)["tensor_data"]).reshape(t.shape)
           for t in qg.activation_tensors()}
    for k, i in enumerate(qg.outputs):
        assert np.array_equal(it.get_output(k).reshape(qg.tensor(i).shape), out[i])
    return out


def assert_bit_exact_in_tflm(qg: Graph, samples: list[list[np.ndarray]]) -> None:
    """Every activation tensor of TFLM's run equals run_integer's, sample by sample."""
    model = write_model(qg)
    for s, xs in enumerate(samples):
        got = tflm_all_tensors(model, qg, xs)
        want = run_integer(qg, xs, all_tensors=True)
        for i, w in got.items():
            sim = want[i]
            assert sim.dtype == w.dtype and np.array_equal(sim, w), (
                f"sample {s}, tensor {i} '{qg.tensor(i).name}': first mismatch at "
                f"{np.argwhere(sim != w)[0].tolist() if sim.shape == w.shape else 'shape'}")


def assert_integer_only(qg: Graph) -> None:
    """int8 activations and I/O, int8 per-channel symmetric weights, int32 biases, float32 scales."""
    assert not any(n.op in (Op.QUANTIZE, Op.DEQUANTIZE) for n in qg.nodes)
    assert all(t.dtype == "int8" for t in qg.input_tensors() + qg.output_tensors())
    for t in qg.activation_tensors():
        assert t.dtype == "int8" and t.quant is not None and not t.quant.per_channel, t.name
    for t in qg.tensors:
        assert t.dtype in ("int8", "int32"), t.name
        if t.quant is not None:
            assert all(s > 0 and float(np.float32(s)) == s for s in t.quant.scale), t.name
    for n in qg.nodes:
        if n.op in (Op.CONV_2D, Op.DEPTHWISE_CONV_2D, Op.FULLY_CONNECTED):
            w = qg.tensor(n.inputs[1])
            axis = 3 if n.op == Op.DEPTHWISE_CONV_2D else 0
            s_in = qg.tensor(n.inputs[0]).quant.scale[0]
            assert w.dtype == "int8" and w.quant.axis == axis and len(w.quant.scale) == w.shape[axis]
            assert set(w.quant.zero_point) == {0} and w.data.min() >= -127
            if len(n.inputs) > 2 and n.inputs[2] >= 0:
                b = qg.tensor(n.inputs[2])
                assert b.dtype == "int32" and set(b.quant.zero_point) == {0}
                assert b.quant.scale == tuple(float(np.float32(s_in * s)) for s in w.quant.scale)
        if n.op in (Op.AVERAGE_POOL_2D, Op.MAX_POOL_2D, Op.RESHAPE, Op.PAD):
            assert qg.tensor(n.inputs[0]).quant == qg.tensor(n.outputs[0]).quant
        if n.op == Op.CONCATENATION:
            assert {qg.tensor(i).quant for i in (*n.inputs, *n.outputs)} == {qg.tensor(n.outputs[0]).quant}
        fixed = {Op.SOFTMAX: (1 / 256, -128), Op.LOGISTIC: (1 / 256, -128), Op.TANH: (1 / 128, 0)}.get(n.op)
        if fixed:
            q = qg.tensor(n.outputs[0]).quant
            assert (q.scale[0], q.zero_point[0]) == fixed


# --- shared float models ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", SHARED)
def test_shared_model_is_integer_only(name: str) -> None:
    g, _, r = shared_result(name)
    assert_integer_only(r.graph)
    assert len(r.graph.inputs) == len(g.inputs) and len(r.graph.outputs) == len(g.outputs)
    assert [t.shape for t in r.graph.input_tensors()] == [t.shape for t in g.input_tensors()]


@pytest.mark.parametrize("name", SHARED)
def test_shared_model_sqnr_above_floor(name: str) -> None:
    _, _, r = shared_result(name)
    rep = r.report
    assert rep.samples == CALIB_SAMPLES and rep.scheme == Scheme.TFLITE
    (out,) = rep.outputs
    assert out.sqnr_db >= SHARED[name][1], rep.format()
    if name in CLASSIFIERS:
        assert out.top1_agreement_pct is not None and out.top1_agreement_pct >= 75.0, rep.format()
    else:
        assert out.top1_agreement_pct is None


@pytest.mark.parametrize("name", SHARED)
def test_shared_model_runs_bit_exact_in_tflm(name: str) -> None:
    _, calib, r = shared_result(name)
    assert_bit_exact_in_tflm(r.graph, int8_inputs(r.graph, calib, seed=7))


def test_report_json_and_table() -> None:
    _, _, r = shared_result("mlperf-tiny/vww_96_float")
    d = json.loads(json.dumps(r.report.to_dict()))
    assert d["scheme"] == "tflite" and d["samples"] == CALIB_SAMPLES
    (o,) = d["outputs"]
    assert o["sqnr_db"] == pytest.approx(r.report.outputs[0].sqnr_db) and 0 <= o["top1_agreement_pct"] <= 100
    table = r.report.format()
    assert r.graph.output_tensors()[0].name[:28] in table and "SQNR dB" in table and "%" in table


def test_evaluate_reproduces_the_report_and_measures_other_data() -> None:
    g, calib, r = shared_result("tflite-micro/hello_world_float")
    same = evaluate(g, r.graph, calib, label="again")
    assert same.outputs == r.report.outputs and same.calibration == "again"
    other = evaluate(g, r.graph, calibration(g, 0.0, 6.2832, n=8, seed=5))
    assert other.samples == 8 and other.outputs[0].sqnr_db > SHARED["tflite-micro/hello_world_float"][1] - 6
    with pytest.raises(CalibrationError, match=r"evaluation data for input .* got \[12, 1, 1, 1\]"):
        evaluate(g, r.graph, [calib[0][:, :, None]])
    with pytest.raises(ModelError, match="evaluate needs int8 graph inputs and outputs"):
        evaluate(g, g, calib)


# --- a synthetic float model with every op kind and a DEQUANTIZE'd int8 weight ----------------------

def zoo_graph() -> Graph:
    """x -> conv(int8 weights via DEQUANTIZE) -> depthwise x2 -> pools, pad, mul, add, concat,
    mean, reshape, FC -> logistic / tanh / softmax outputs."""
    rng = np.random.default_rng(3)

    def w(*shape: int, scale: float = 0.4) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    wq = rng.integers(-127, 128, (6, 3, 3, 3), dtype=np.int8)
    specs: list[tuple[str, tuple[int, ...], str, Quant | None, np.ndarray | None]] = [
        ("x", (1, 8, 8, 3), "float32", None, None),                                            # 0
        ("w1q", wq.shape, "int8", Quant(tuple(float(np.float32(s)) for s in np.linspace(.002, .01, 6)),
                                        (0,) * 6, 0), wq),                                    # 1
        ("w1", wq.shape, "float32", None, None),                                               # 2
        ("b1", (6,), "float32", None, w(6)),                                                   # 3
        ("c1", (1, 8, 8, 6), "float32", None, None),                                           # 4
        ("wd", (1, 3, 3, 12), "float32", None, w(1, 3, 3, 12)),                                # 5
        ("bd", (12,), "float32", None, w(12)),                                                 # 6
        ("d1", (1, 4, 4, 12), "float32", None, None),                                          # 7
        ("m1", (1, 4, 4, 12), "float32", None, None),                                          # 8
        ("pads", (4, 2), "int32", None, np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32)),  # 9
        ("p1", (1, 6, 6, 12), "float32", None, None),                                          # 10
        ("a1", (1, 4, 4, 12), "float32", None, None),                                          # 11
        ("gain", (1, 1, 1, 12), "float32", None, np.abs(w(1, 1, 1, 12)) + 0.5),               # 12
        ("k1", (1, 4, 4, 12), "float32", None, None),                                          # 13
        ("s1", (1, 4, 4, 12), "float32", None, None),                                          # 14
        ("cat", (1, 4, 4, 24), "float32", None, None),                                         # 15
        ("axes", (2,), "int32", None, np.array([1, 2], np.int32)),                             # 16
        ("mean", (1, 1, 1, 24), "float32", None, None),                                        # 17
        ("shape", (2,), "int32", None, np.array([1, 24], np.int32)),                           # 18
        ("r", (1, 24), "float32", None, None),                                                 # 19
        ("wf", (10, 24), "float32", None, w(10, 24)),                                          # 20
        ("bf", (10,), "float32", None, w(10)),                                                 # 21
        ("fc", (1, 10), "float32", None, None),                                                # 22
        ("sig", (1, 10), "float32", None, None),                                               # 23
        ("tanh", (1, 10), "float32", None, None),                                              # 24
        ("prob", (1, 10), "float32", None, None),                                              # 25
    ]
    tensors = tuple(Tensor(i, n, s, d, q, a) for i, (n, s, d, q, a) in enumerate(specs))
    conv = {"padding": "SAME", "stride_h": 1, "stride_w": 1, "dilation_h": 1, "dilation_w": 1}
    ops = [
        (Op.DEQUANTIZE, (1,), 2, {}),
        (Op.CONV_2D, (0, 2, 3), 4, {**conv, "activation": "RELU6"}),
        (Op.DEPTHWISE_CONV_2D, (4, 5, 6), 7, {**conv, "stride_h": 2, "stride_w": 2, "activation": "NONE",
                                              "depth_multiplier": 2}),
        (Op.MAX_POOL_2D, (7,), 8, {"padding": "SAME", "stride_h": 1, "stride_w": 1, "filter_h": 2,
                                   "filter_w": 2, "activation": "NONE"}),
        (Op.PAD, (8, 9), 10, {}),
        (Op.AVERAGE_POOL_2D, (10,), 11, {"padding": "VALID", "stride_h": 1, "stride_w": 1, "filter_h": 3,
                                         "filter_w": 3, "activation": "RELU"}),
        (Op.MUL, (11, 12), 13, {"activation": "NONE"}),
        (Op.ADD, (13, 7), 14, {"activation": "RELU"}),
        (Op.CONCATENATION, (14, 7), 15, {"axis": 3, "activation": "NONE"}),
        (Op.MEAN, (15, 16), 17, {"keep_dims": True}),
        (Op.RESHAPE, (17, 18), 19, {"new_shape": (1, 24)}),
        (Op.FULLY_CONNECTED, (19, 20, 21), 22, {"activation": "NONE", "keep_num_dims": False,
                                                "weights_format": "DEFAULT"}),
        (Op.LOGISTIC, (22,), 23, {}),
        (Op.TANH, (22,), 24, {}),
        (Op.SOFTMAX, (22,), 25, {"beta": 0.5}),
    ]
    nodes = tuple(Node(k, op, ins, (out,), attrs) for k, (op, ins, out, attrs) in enumerate(ops))
    return Graph(tensors, nodes, (0,), (23, 24, 25), "zoo")


def test_zoo_quantizes_to_a_valid_bit_exact_tflm_model() -> None:
    g = zoo_graph()
    calib = calibration(g, -1.0, 1.0, n=16)
    r = quantize(g, calib)
    qg = r.graph
    assert_integer_only(qg)
    assert len(qg.nodes) == len(g.nodes) - 1  # the DEQUANTIZE is folded into the conv weights
    assert [t.name for t in qg.output_tensors()] == ["sig", "tanh", "prob"]
    sig, tanh, prob = r.report.outputs
    assert sig.top1_agreement_pct is None and tanh.top1_agreement_pct is None
    assert prob.top1_agreement_pct is not None
    assert min(o.sqnr_db for o in r.report.outputs) > 25.0, r.report.format()
    by_name = {t.name: t for t in qg.tensors}
    d1, cat = by_name["d1"].quant, by_name["cat"].quant
    assert d1 == cat == by_name["s1"].quant  # concat operands share the output's quantization
    assert by_name["gain"].dtype == "int8" and by_name["gain"].quant.zero_point[0] == -128  # all > 0
    assert_bit_exact_in_tflm(qg, int8_inputs(qg, calib, seed=1))


def test_relu_output_range_starts_at_zero() -> None:
    g = zoo_graph()
    qg = quantize(g, calibration(g, -1.0, 1.0)).graph
    c1 = next(t for t in qg.tensors if t.name == "c1").quant  # conv + RELU6
    assert c1.zero_point[0] == -128 and c1.scale[0] * 255 <= 6.0 + 1e-6


def test_dead_channel_keeps_its_bias() -> None:
    """Weights ~1e-31 with a real bias: the weight scale is raised so the int32 bias holds it."""
    w = np.full((2, 4), 1e-31, np.float32)
    w[0] = [0.5, -0.25, 0.125, 1.0]
    tensors = (Tensor(0, "x", (1, 4), "float32"), Tensor(1, "w", (2, 4), "float32", None, w),
               Tensor(2, "b", (2,), "float32", None, np.array([0.1, 1.5], np.float32)),
               Tensor(3, "y", (1, 2), "float32"))
    fc = Node(0, Op.FULLY_CONNECTED, (0, 1, 2), (3,), {"activation": "NONE", "keep_num_dims": False,
                                                        "weights_format": "DEFAULT"})
    g = Graph(tensors, (fc,), (0,), (3,), "dead")
    calib = calibration(g, -1.0, 1.0, n=8)
    r = quantize(g, calib)
    b = r.graph.tensor(2)
    assert abs(int(b.data[1])) <= 1 << 30 and b.data[1] * b.quant.scale[1] == pytest.approx(1.5, rel=1e-6)
    assert r.report.outputs[0].sqnr_db > 30.0
    assert_bit_exact_in_tflm(r.graph, int8_inputs(r.graph, calib, seed=2))


def test_default_calibration_warns_once_and_is_deterministic() -> None:
    g = zoo_graph()
    said: list[str] = []
    a = quantize(g, None, warn=said.append)
    b = quantize(g, None, warn=said.append)
    assert len(said) == 2 and said[0] == said[1] and "\n" not in said[0]
    assert said[0].startswith("no calibration data for zoo: calibrating on 32 seeded uniform random")
    assert "[-1, 1]" in said[0] and "will not match real inputs" in said[0]
    assert a.report.samples == 32 and "seeded uniform random" in a.report.calibration
    assert [t.quant for t in a.graph.tensors] == [t.quant for t in b.graph.tensors]


def test_progress_reports_both_passes() -> None:
    calls: list[tuple[str, int, int]] = []
    quantize(two_input_graph(), ok_calib(5), progress=lambda *a: calls.append(a))
    assert calls == [("calibrate", k, 5) for k in range(1, 6)] + [("compare", k, 5) for k in range(1, 6)]


def test_default_warning_goes_to_python_warnings() -> None:
    with pytest.warns(UserWarning, match="no calibration data for add2"):
        quantize(two_input_graph(), None)


def test_default_calibration_uses_a_declared_input_range() -> None:
    g = two_input_graph()
    t0 = g.tensors[0]
    g = Graph((Tensor(0, t0.name, t0.shape, "float32", Quant((0.02,), (-128,))), *g.tensors[1:]),
              g.nodes, g.inputs, g.outputs, g.name)
    said: list[str] = []
    r = quantize(g, None, warn=said.append)
    assert "[0, 5.1]" in said[0] and "[-1, 1]" in said[0]
    q = r.graph.tensor(0).quant
    assert q.zero_point[0] == -128 and q.scale[0] * 255 <= 5.1


# --- refusals -------------------------------------------------------------------------------------

def two_input_graph() -> Graph:
    tensors = (Tensor(0, "a", (1, 6), "float32"), Tensor(1, "b", (1, 6), "float32"),
               Tensor(2, "y", (1, 6), "float32"))
    return Graph(tensors, (Node(0, Op.ADD, (0, 1), (2,), {"activation": "NONE"}),), (0, 1), (2,), "add2")


def ok_calib(n: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(-1, 1, (n, 1, 6)).astype(np.float32), rng.uniform(-2, 2, (n, 6)).astype(np.float32)]


def test_calibration_with_and_without_batch_axis_agree() -> None:
    g = two_input_graph()
    a, b = ok_calib()
    r1 = quantize(g, [a, b])
    r2 = quantize(g, [a[:, 0], b[:, None]])
    assert [t.quant for t in r1.graph.tensors] == [t.quant for t in r2.graph.tensors]


@pytest.mark.parametrize("bad,match", [
    (lambda a, b: [a, b[:, :5]], r"input 'b': expected shape \[N, 1, 6\] or \[N, 6\], got \[8, 5\]"),
    (lambda a, b: [a[:, :, :, None], b], r"input 'a': expected shape .* got \[8, 1, 6, 1\]"),
    (lambda a, b: [a], r"one array per graph input \(2\), got 1$"),
    (lambda a, b: [a, np.where(b > 1, np.nan, b)], r"input 'b' holds NaN"),
    (lambda a, b: [a, b.astype(object)], r"input 'b': expected float or integer values, got object"),
    (lambda a, b: [a[:MIN_CALIB_SAMPLES - 1], b[:MIN_CALIB_SAMPLES - 1]],
     rf"input 'a': {MIN_CALIB_SAMPLES - 1} samples, need at least {MIN_CALIB_SAMPLES}"),
    (lambda a, b: [a, b[:5]], r"different sample counts \[8, 5\]"),
    (lambda a, b: np.stack([a[:, 0], b]), r"one array per graph input \(2\), got a single array"),
])
def test_bad_calibration_raises(bad, match: str) -> None:
    with pytest.raises(CalibrationError, match=match):
        quantize(two_input_graph(), bad(*ok_calib()))


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedOpError, match="unknown quantization scheme 'fancy'; schemes: tflite, pow2"):
        quantize(two_input_graph(), ok_calib(), scheme="fancy")


def test_integer_model_is_refused() -> None:
    path = MODELS / "tflite-micro/hello_world_int8.tflite"
    if not path.exists():
        pytest.skip(f"shared model {path} absent")
    with pytest.raises(ModelError, match="already quantized"):
        quantize(read_model(path), None, warn=lambda s: None)


def test_fused_tanh_is_refused_before_calibration() -> None:
    g = two_input_graph()
    g = Graph(g.tensors, (replace(g.nodes[0], attrs={"activation": "TANH"}),), g.inputs, g.outputs, g.name)
    with pytest.raises(UnsupportedOpError, match="fused activation TANH"):
        quantize(g, None, warn=pytest.fail)


def test_softmax_and_tanh_into_one_concat_is_refused() -> None:
    tensors = (Tensor(0, "x", (1, 4), "float32"), Tensor(1, "p", (1, 4), "float32"),
               Tensor(2, "t", (1, 4), "float32"), Tensor(3, "y", (1, 8), "float32"))
    nodes = (Node(0, Op.SOFTMAX, (0,), (1,), {"beta": 1.0}), Node(1, Op.TANH, (0,), (2,)),
             Node(2, Op.CONCATENATION, (1, 2), (3,), {"axis": 1, "activation": "NONE"}))
    g = Graph(tensors, nodes, (0,), (3,), "clash")
    with pytest.raises(UnsupportedOpError, match="need different output quantizations"):
        quantize(g, [np.zeros((8, 1, 4), np.float32)])
