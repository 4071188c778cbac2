"""run_float against TF Lite's float reference kernels: shared float models and single-op graphs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from mcuq.errors import CalibrationError, UnsupportedOpError
from mcuq.ir import Graph, Node, Op, Quant, Tensor
from mcuq.reader import read_model
from mcuq.simulate.floating import run_float
from mcuq.writer import write_model

tfl = pytest.importorskip("tflite_runtime.interpreter")

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
FLOAT_MODELS = ["mlperf-tiny/ad01_fp32", "mlperf-tiny/pretrainedResnet", "mlperf-tiny/vww_96_float",
                "tflite-micro/hello_world_float"]
RTOL = 1e-4  # of the tensor's range: float32 summation order differs, nothing else may


def _sine_float() -> Path | None:
    try:
        import tflite_micro
    except ImportError:
        return None
    p = Path(tflite_micro.__file__).parent / "python" / "tflite_micro" / "sine_float.tflite"
    return p if p.exists() else None


def _model_paths() -> list:
    out = []
    for name in FLOAT_MODELS:
        p = MODELS / f"{name}.tflite"
        reason = f"shared model {p} absent"
        out.append(pytest.param(p, id=Path(name).name,
                                marks=pytest.mark.skipif(not p.exists(), reason=reason)))
    sine = _sine_float()
    no_sine = pytest.mark.skipif(sine is None, reason="tflite-micro wheel has no sine_float.tflite")
    out.append(pytest.param(sine, id="sine_float", marks=no_sine))
    return out


def tflite_all_tensors(model: bytes, inputs: list[np.ndarray]
                       ) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """Outputs and every preserved tensor from TF Lite's reference kernels (no delegate)."""
    it = tfl.Interpreter(model_content=model, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=tfl.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), inputs):
        it.set_tensor(d["index"], x)
    it.invoke()
    outs = [it.get_tensor(d["index"]) for d in it.get_output_details()]
    return outs, {d["index"]: it.get_tensor(d["index"]) for d in it.get_tensor_details()}


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == np.float32 and got.shape == want.shape, what
    scale = max(float(np.abs(want).max()), 1e-6)
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= RTOL * scale, f"{what}: max abs error {err:.3g} > {RTOL} x {scale:.3g}"


def in_place_inputs(g: Graph) -> set[int]:
    """Tensors TF Lite 2.14 may overwrite in place even with preserve_all_tensors (ADD/MUL inputs)."""
    return {i for n in g.nodes if n.op in (Op.ADD, Op.MUL) for i in n.inputs}


@pytest.mark.parametrize("path", _model_paths())
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shared_float_model_matches_tflite(path: Path, seed: int) -> None:
    g = read_model(path)
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(-1, 1, t.shape).astype(np.float32) for t in g.input_tensors()]
    got = run_float(g, xs, all_tensors=True)
    want_out, want = tflite_all_tensors(path.read_bytes(), xs)
    for k, i in enumerate(g.outputs):
        assert_close(got[i], want_out[k], f"output {k}")
    skip = in_place_inputs(g)
    checked = [i for i in got if i not in skip]
    assert len(checked) > len(g.nodes) // 2
    for i in checked:
        assert_close(got[i], want[i], f"tensor {i} '{g.tensor(i).name}'")
    outs = run_float(g, xs)
    assert isinstance(outs, list) and all(np.array_equal(o, got[i]) for o, i in zip(outs, g.outputs))


@pytest.mark.parametrize("path", [p for p in _model_paths() if p.id != "sine_float"])
def test_shared_float_model_matches_golden(path: Path) -> None:
    sha8 = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    stem = MODELS / "golden" / f"{path.stem}_{sha8}"
    if not Path(f"{stem}.input.npz").exists():
        pytest.skip(f"no golden files {stem}.*.npz")
    g = read_model(path)
    xin, xout = np.load(f"{stem}.input.npz"), np.load(f"{stem}.tflm_output.npz")
    got = run_float(g, [xin[f"in{i}"] for i in range(len(g.inputs))])
    for k, y in enumerate(got):
        assert_close(y, xout[f"out{k}"], f"golden output {k}")


# --- single-op graphs, written with mcuq.writer and run by TF Lite -------------------------------

def single_op(op: Op, attrs: dict, operands: list, out_shape: tuple[int, ...], version: int = 1) -> Graph:
    """One node; operands are shapes (float32 graph inputs) or arrays (constants)."""
    tensors, ins = [], []
    for k, a in enumerate(operands):
        if a is None:
            ins.append(-1)
            continue
        idx = len(tensors)
        if isinstance(a, tuple):
            tensors.append(Tensor(idx, f"in{k}", a, "float32"))
        else:
            tensors.append(Tensor(idx, f"c{k}", a.shape, a.dtype.name, None, a))
        ins.append(idx)
    out = len(tensors)
    tensors.append(Tensor(out, "out", out_shape, "float32"))
    graph_ins = tuple(i for i in ins if i >= 0 and not tensors[i].is_const)
    node = Node(0, op, tuple(ins), (out,), attrs, version)
    return Graph(tuple(tensors), (node,), graph_ins, (out,), op.value)


def check_single_op(g: Graph, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(t.shape).astype(np.float32) for t in g.input_tensors()]
    want, _ = tflite_all_tensors(write_model(g), xs)
    assert_close(run_float(g, xs)[0], want[0], g.name)


def conv_attrs(padding: str, stride: tuple[int, int], dilation: tuple[int, int], act: str = "NONE") -> dict:
    return {"padding": padding, "stride_h": stride[0], "stride_w": stride[1],
            "dilation_h": dilation[0], "dilation_w": dilation[1], "activation": act}


def out_hw(size: int, k: int, stride: int, dilation: int, padding: str) -> int:
    k_eff = (k - 1) * dilation + 1
    return -(-size // stride) if padding == "SAME" else (size - k_eff) // stride + 1


RNG = np.random.default_rng(1234)


def weights(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32) * 0.5


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("stride,dilation", [((1, 1), (1, 1)), ((2, 3), (1, 1)), ((1, 1), (2, 3)),
                                             ((2, 2), (2, 1))])
def test_conv2d(padding: str, stride: tuple[int, int], dilation: tuple[int, int]) -> None:
    h, w, kh, kw = 11, 10, 3, 2
    oh = out_hw(h, kh, stride[0], dilation[0], padding)
    ow = out_hw(w, kw, stride[1], dilation[1], padding)
    g = single_op(Op.CONV_2D, conv_attrs(padding, stride, dilation, "RELU"),
                  [(1, h, w, 4), weights(5, kh, kw, 4), weights(5)], (1, oh, ow, 5), version=2)
    check_single_op(g)


def test_grouped_conv2d() -> None:
    g = single_op(Op.CONV_2D, conv_attrs("SAME", (1, 1), (1, 1)),
                  [(1, 5, 5, 6), weights(4, 3, 3, 3), weights(4)], (1, 5, 5, 4))
    check_single_op(g)


@pytest.mark.parametrize("mult", [1, 3])
@pytest.mark.parametrize("padding,stride,dilation", [("SAME", (2, 2), (1, 1)), ("VALID", (1, 2), (2, 2)),
                                                     ("SAME", (1, 1), (3, 2))])
def test_depthwise(mult: int, padding: str, stride: tuple[int, int], dilation: tuple[int, int]) -> None:
    h, w, c, k = 9, 12, 4, 3
    oh = out_hw(h, k, stride[0], dilation[0], padding)
    ow = out_hw(w, k, stride[1], dilation[1], padding)
    attrs = {**conv_attrs(padding, stride, dilation, "RELU6"), "depth_multiplier": mult}
    g = single_op(Op.DEPTHWISE_CONV_2D, attrs, [(1, h, w, c), weights(1, k, k, c * mult), weights(c * mult)],
                  (1, oh, ow, c * mult), version=2)
    check_single_op(g)


def test_fully_connected_keep_num_dims_no_bias() -> None:
    attrs = {"activation": "RELU_N1_TO_1", "keep_num_dims": True, "weights_format": "DEFAULT"}
    g = single_op(Op.FULLY_CONNECTED, attrs, [(1, 3, 7), weights(6, 7), None], (1, 3, 6))
    check_single_op(g)


@pytest.mark.parametrize("op", [Op.AVERAGE_POOL_2D, Op.MAX_POOL_2D])
@pytest.mark.parametrize("padding,stride,k", [("SAME", 2, 3), ("VALID", 1, 2), ("SAME", 3, 2)])
def test_pool(op: Op, padding: str, stride: int, k: int) -> None:
    h, w = 10, 7
    attrs = {"padding": padding, "stride_h": stride, "stride_w": stride, "filter_h": k, "filter_w": k + 1,
             "activation": "RELU"}
    oh, ow = out_hw(h, k, stride, 1, padding), out_hw(w, k + 1, stride, 1, padding)
    check_single_op(single_op(op, attrs, [(1, h, w, 3)], (1, oh, ow, 3)))


@pytest.mark.parametrize("op", [Op.ADD, Op.MUL])
def test_binary_broadcast(op: Op) -> None:
    g = single_op(op, {"activation": "RELU6"}, [(1, 4, 5, 3), weights(1, 1, 5, 3)], (1, 4, 5, 3))
    check_single_op(g)
    g2 = single_op(op, {"activation": "NONE"}, [(1, 4, 5, 3), (1, 4, 5, 3)], (1, 4, 5, 3))
    check_single_op(g2)


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_softmax(beta: float) -> None:
    check_single_op(single_op(Op.SOFTMAX, {"beta": beta}, [(2, 11)], (2, 11)))


def test_reshape_pad_mean_concat() -> None:
    check_single_op(single_op(Op.RESHAPE, {"new_shape": (1, 12)}, [(1, 2, 2, 3), np.array([1, 12], np.int32)],
                              (1, 12)))
    pads = np.array([[0, 0], [1, 2], [0, 3], [0, 0]], np.int32)
    check_single_op(single_op(Op.PAD, {}, [(1, 4, 5, 2), pads], (1, 7, 8, 2)))
    check_single_op(single_op(Op.MEAN, {"keep_dims": True}, [(1, 6, 5, 4), np.array([1, 2], np.int32)],
                              (1, 1, 1, 4)))
    check_single_op(single_op(Op.MEAN, {"keep_dims": False}, [(1, 6, 5, 4), np.array([-1], np.int32)],
                              (1, 6, 5)))
    check_single_op(single_op(Op.CONCATENATION, {"axis": 3, "activation": "NONE"},
                              [(1, 4, 5, 2), weights(1, 4, 5, 3), (1, 4, 5, 1)], (1, 4, 5, 6)))
    check_single_op(single_op(Op.CONCATENATION, {"axis": -2, "activation": "NONE"},
                              [(1, 4, 2), (1, 3, 2)], (1, 7, 2)))


@pytest.mark.parametrize("op", [Op.LOGISTIC, Op.TANH])
def test_logistic_tanh(op: Op) -> None:
    check_single_op(single_op(op, {}, [(1, 64)], (1, 64)))


def test_dequantize_int8_weights_feed_conv() -> None:
    """Float model with int8 per-channel weights behind a DEQUANTIZE node (a 'weight-only' model)."""
    q = RNG.integers(-127, 128, (3, 3, 3, 2), dtype=np.int8)
    scales = (0.01, 0.02, 0.005)
    wq = Tensor(1, "wq", q.shape, "int8", Quant(scales, (0, 0, 0), 0), q)
    tensors = (
        Tensor(0, "x", (1, 6, 6, 2), "float32"),
        wq,
        Tensor(2, "w", q.shape, "float32"),
        Tensor(3, "b", (3,), "float32", None, weights(3)),
        Tensor(4, "y", (1, 6, 6, 3), "float32"),
    )
    nodes = (Node(0, Op.DEQUANTIZE, (1,), (2,), {}, 2),
             Node(1, Op.CONV_2D, (0, 2, 3), (4,), conv_attrs("SAME", (1, 1), (1, 1)), 1))
    g = Graph(tensors, nodes, (0,), (4,), "dq_conv")
    check_single_op(g)
    w = run_float(g, [np.zeros((1, 6, 6, 2), np.float32)], all_tensors=True)[2]
    assert np.allclose(w, q * np.array(scales, np.float32)[:, None, None, None], rtol=1e-6)


def test_quantize_dequantize_are_identity_on_real_values() -> None:
    tensors = (Tensor(0, "x", (1, 5), "float32"), Tensor(1, "q", (1, 5), "int8", Quant((0.1,), (3,))),
               Tensor(2, "y", (1, 5), "float32"))
    nodes = (Node(0, Op.QUANTIZE, (0,), (1,)), Node(1, Op.DEQUANTIZE, (1,), (2,)))
    g = Graph(tensors, nodes, (0,), (2,))
    x = np.linspace(-3, 3, 5, dtype=np.float32)[None]
    out = run_float(g, [x], all_tensors=True)
    assert np.array_equal(out[1], x) and np.array_equal(out[2], x)


def test_integer_input_is_dequantized() -> None:
    tensors = (Tensor(0, "x", (1, 4), "int8", Quant((0.5,), (-2,))), Tensor(1, "y", (1, 4), "float32"))
    g = Graph(tensors, (Node(0, Op.DEQUANTIZE, (0,), (1,)),), (0,), (1,))
    y = run_float(g, [np.array([[-128, -2, 0, 127]], np.int8)])[0]
    assert np.array_equal(y, np.array([[-63, 0, 1, 64.5]], np.float32))


def test_bad_inputs_and_ops_raise() -> None:
    g = single_op(Op.TANH, {}, [(1, 4)], (1, 4))
    with pytest.raises(CalibrationError, match=r"needs shape \[1, 4\], got \[4\]"):
        run_float(g, [np.zeros(4, np.float32)])
    with pytest.raises(CalibrationError, match="2 input arrays"):
        run_float(g, [np.zeros((1, 4), np.float32)] * 2)
    with pytest.raises(CalibrationError, match="needs float values"):
        run_float(g, [np.zeros((1, 4), np.int8)])
    relu_concat = single_op(Op.CONCATENATION, {"axis": 1, "activation": "RELU"}, [(1, 4), (1, 4)], (1, 8))
    with pytest.raises(UnsupportedOpError, match="fused activation RELU"):
        run_float(relu_concat, [np.zeros((1, 4), np.float32)] * 2)
    odd = Graph(g.tensors, (Node(0, "GELU", (0,), (1,)),), (0,), (1,))
    with pytest.raises(UnsupportedOpError, match="GELU"):
        run_float(odd, [np.zeros((1, 4), np.float32)])
