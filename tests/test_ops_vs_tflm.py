"""Single-op models built with ir + write_model: tflite-micro and mcuq's integer simulator agree bit for bit.

Every op in ir.Op gets seeded random shapes, quantization parameters, options and inputs; each
case is written to .tflite, run in the tflite-micro interpreter (reference kernels) and in
``mcuq.simulate.run_integer``. A mismatch names (op, case, first index, got, expected).
Cases stay inside what TFLM accepts without aborting the process (e.g. softmax beta*scale).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

from mcuq.errors import UnsupportedOpError
from mcuq.ir import Graph, Node, Op, Quant, Tensor
from mcuq.simulate import nonlinear
from mcuq.writer import write_model

runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")

ARENA = 1 << 20
SEED = 20260517
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


@dataclass(frozen=True)
class Case:
    """One single-op model and its graph inputs."""

    graph: Graph
    inputs: tuple[np.ndarray, ...]


class _Builder:
    """Collects tensors of a one-node graph."""

    def __init__(self) -> None:
        self.tensors: list[Tensor] = []

    def add(self, shape, dtype: str, scale=None, zero_point=0, data=None, axis: int = 0) -> int:
        quant = None
        if scale is not None:
            scales = tuple(float(np.float32(s)) for s in np.atleast_1d(scale))
            zps = tuple(int(z) for z in np.broadcast_to(zero_point, (len(scales),)))
            quant = Quant(scales, zps, axis)
        if data is not None:
            data = np.asarray(data, dtype)
            data.setflags(write=False)
        i = len(self.tensors)
        self.tensors.append(Tensor(i, f"t{i}", tuple(int(d) for d in shape), dtype, quant, data))
        return i

    def case(self, op: Op, inputs: list[int], output: int, attrs: dict, feeds: list[np.ndarray]) -> Case:
        graph_inputs = tuple(i for i in inputs if i != -1 and self.tensors[i].data is None)
        node = Node(0, op, tuple(inputs), (output,), attrs, 1)
        graph = Graph(tuple(self.tensors), (node,), graph_inputs, (output,), f"{op}")
        return Case(graph, tuple(feeds))


def _scale(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A float32-representable scale 2^u, u uniform in [lo, hi)."""
    return float(np.float32(2.0 ** rng.uniform(lo, hi)))


def _int8(rng: np.random.Generator, shape) -> np.ndarray:
    return rng.integers(-128, 128, shape).astype(np.int8)


def _zp(rng: np.random.Generator) -> int:
    return int(rng.integers(-128, 128))


def _out_scale(rng: np.random.Generator, natural: float, activation: str, unit: float, i: int) -> float:
    """``natural`` spreads outputs over the int8 range; RELU6 / RELU_N1_TO_1 get enough levels to clamp at.

    Every 7th case takes a scale below ``unit`` (the accumulator's scale): a real multiplier > 1,
    so requantization shifts left.
    """
    if i % 7 == 6:
        return unit * float(rng.uniform(0.3, 0.95))
    if activation == "RELU6":
        return 6.0 / float(rng.uniform(30, 250))
    if activation == "RELU_N1_TO_1":
        return 1.0 / float(rng.uniform(20, 120))
    return natural


def _out_size(size: int, k: int, stride: int, dilation: int, padding: str) -> int:
    k_eff = (k - 1) * dilation + 1
    return (size + stride - 1) // stride if padding == "SAME" else (size + stride - k_eff) // stride


def _conv(rng: np.random.Generator, i: int, depthwise: bool) -> Case:
    """CONV_2D / DEPTHWISE_CONV_2D: strides, dilation, SAME/VALID, per-channel or per-tensor filters."""
    b = _Builder()
    padding = ("SAME", "VALID")[i % 2]
    per_channel = (i // 2) % 2 == 0
    kh, kw = (int(k) for k in rng.integers(1, 5, 2))
    dh, dw = (1, 1) if i % 3 == 0 else (int(d) for d in rng.integers(1, 4, 2))
    sh, sw = (int(s) for s in rng.integers(1, 4, 2))
    n = int(rng.integers(1, 3))
    h = (kh - 1) * dh + 1 + int(rng.integers(0, 8))
    w = (kw - 1) * dw + 1 + int(rng.integers(0, 8))
    ic = int(rng.integers(1, 9))
    dm = 1 + i % 2 if depthwise else 1
    oc = ic * dm if depthwise else int(rng.integers(1, 9))
    s_in, zp_in = _scale(rng, -8, 0), _zp(rng)
    s_w = np.float32(2.0 ** rng.uniform(-9, -5, oc if per_channel else 1))
    fshape = (1, kh, kw, oc) if depthwise else (oc, kh, kw, ic)
    axis = 3 if depthwise else 0
    fan_in = kh * kw * (1 if depthwise else ic)
    act = ACTIVATIONS[i % 4]
    natural = s_in * float(np.median(s_w)) * math.sqrt(fan_in) * float(rng.uniform(20, 120))
    s_out = _out_scale(rng, natural, act, s_in * float(s_w.min()), i)
    oh, ow = _out_size(h, kh, sh, dh, padding), _out_size(w, kw, sw, dw, padding)
    x = b.add((n, h, w, ic), "int8", s_in, zp_in)
    f = b.add(fshape, "int8", s_w, 0, rng.integers(-127, 128, fshape), axis)
    bias_scale = np.broadcast_to(np.float32(s_in) * s_w, (oc,)) if per_channel else np.float32(s_in) * s_w
    # TFLM's DEPTHWISE_CONV_2D crashes the process without a bias tensor; only CONV_2D omits it.
    bias = -1
    if i % 5 != 4 or depthwise:
        bias = b.add((oc,), "int32", bias_scale, 0, rng.integers(-3000, 3000, oc))
    y = b.add((n, oh, ow, oc), "int8", s_out, _zp(rng))
    attrs = {"padding": padding, "stride_h": sh, "stride_w": sw, "dilation_h": dh, "dilation_w": dw,
             "activation": act}
    if depthwise:
        attrs["depth_multiplier"] = dm
    op = Op.DEPTHWISE_CONV_2D if depthwise else Op.CONV_2D
    return b.case(op, [x, f, bias], y, attrs, [_int8(rng, (n, h, w, ic))])


def _fully_connected(rng: np.random.Generator, i: int) -> Case:
    """FULLY_CONNECTED: per-tensor / per-channel filter, with and without bias, 2-D or 3-D input."""
    b = _Builder()
    per_channel, with_bias = i % 2 == 0, (i // 2) % 2 == 0
    batches, depth, oc = int(rng.integers(1, 4)), int(rng.integers(1, 65)), int(rng.integers(1, 17))
    in_shape, out_shape, keep = (batches, depth), (batches, oc), False
    if i % 3 == 2:  # 3-D input read as [2 * batches, depth]; keep_num_dims only shapes the output
        keep = i % 2 == 0
        in_shape = (2, batches, depth)
        out_shape = (2, batches, oc) if keep else (2 * batches, oc)
    s_in, zp_in = _scale(rng, -8, 0), _zp(rng)
    s_w = np.float32(2.0 ** rng.uniform(-9, -5, oc if per_channel else 1))
    act = ACTIVATIONS[i % 4]
    natural = s_in * float(np.median(s_w)) * math.sqrt(depth) * float(rng.uniform(20, 120))
    s_out = _out_scale(rng, natural, act, s_in * float(s_w.min()), i)
    x = b.add(in_shape, "int8", s_in, zp_in)
    f = b.add((oc, depth), "int8", s_w, 0, rng.integers(-127, 128, (oc, depth)), 0)
    bias = -1
    if with_bias:
        bias_scale = np.float32(s_in) * s_w
        bias = b.add((oc,), "int32", bias_scale, 0, rng.integers(-3000, 3000, oc))
    y = b.add(out_shape, "int8", s_out, _zp(rng))
    attrs = {"activation": act, "keep_num_dims": keep, "weights_format": "DEFAULT"}
    return b.case(Op.FULLY_CONNECTED, [x, f, bias], y, attrs, [_int8(rng, in_shape)])


def _broadcast_shapes(rng: np.random.Generator, i: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    h, w, c = (int(d) for d in rng.integers(1, 7, 3))
    full = (1, h, w, c)
    other = [full, (1, 1, 1, c), (c,), (1, h, 1, 1), (1, 1, w, c), (1, h, w, 1)][i % 6]
    return (full, other) if i % 2 == 0 else (other, full)


def _add_mul(rng: np.random.Generator, i: int, op: Op) -> Case:
    """ADD / MUL with numpy broadcasting, random scales and zero points, fused activations."""
    b = _Builder()
    sa, sb = _broadcast_shapes(rng, i)
    s1, s2 = _scale(rng, -7, -2), _scale(rng, -7, -2)
    act = ACTIVATIONS[i % 4]
    if op == Op.ADD:
        natural = max(s1, s2) * float(rng.uniform(0.5, 3))
    else:
        natural = s1 * s2 * 64 * float(rng.uniform(0.5, 4))
    s_out = _out_scale(rng, natural, act, min(s1, s2) if op == Op.ADD else s1 * s2, i)
    x1 = b.add(sa, "int8", s1, _zp(rng))
    x2 = b.add(sb, "int8", s2, _zp(rng))
    y = b.add(np.broadcast_shapes(sa, sb), "int8", s_out, _zp(rng))
    return b.case(op, [x1, x2], y, {"activation": act}, [_int8(rng, sa), _int8(rng, sb)])


def _pool(rng: np.random.Generator, i: int, op: Op) -> Case:
    """AVERAGE_POOL_2D / MAX_POOL_2D: filter, stride, SAME/VALID, fused activation."""
    b = _Builder()
    padding = ("SAME", "VALID")[i % 2]
    fh, fw = (int(k) for k in rng.integers(1, 5, 2))
    sh, sw = (int(s) for s in rng.integers(1, 4, 2))
    n, c = int(rng.integers(1, 3)), int(rng.integers(1, 9))
    h, w = fh + int(rng.integers(0, 9)), fw + int(rng.integers(0, 9))
    s, zp = _scale(rng, -7, -3), _zp(rng)
    x = b.add((n, h, w, c), "int8", s, zp)
    y = b.add((n, _out_size(h, fh, sh, 1, padding), _out_size(w, fw, sw, 1, padding), c), "int8", s, zp)
    attrs = {"padding": padding, "stride_h": sh, "stride_w": sw, "filter_h": fh, "filter_w": fw,
             "activation": ACTIVATIONS[i % 4]}
    return b.case(op, [x], y, attrs, [_int8(rng, (n, h, w, c))])


def _reshape(rng: np.random.Generator, i: int) -> Case:
    """RESHAPE with new_shape in the options or as a constant second input."""
    b = _Builder()
    h, w, c = (int(d) for d in rng.integers(1, 7, 3))
    new = (1, h * w * c) if i % 2 == 0 else (h, w * c)
    s, zp = _scale(rng, -7, 0), _zp(rng)
    x = b.add((1, h, w, c), "int8", s, zp)
    if i % 2 == 0:
        inputs, attrs = [x], {"new_shape": new}
    else:
        inputs, attrs = [x, b.add((len(new),), "int32", data=new)], {"new_shape": None}
    y = b.add(new, "int8", s, zp)
    return b.case(Op.RESHAPE, inputs, y, attrs, [_int8(rng, (1, h, w, c))])


SOFTMAX_BETAS = (1.0, 0.5, 2.0, 0.25, 1.7)


def _softmax(rng: np.random.Generator, i: int) -> Case:
    """SOFTMAX int8 -> int8 (and int8 -> int16) over rows of 1..300, several betas and input scales."""
    b = _Builder()
    depth = int(rng.integers(1, 300 if i % 4 == 3 else 40))
    shape = [(1, depth), (int(rng.integers(2, 5)), depth), (1, 1, int(rng.integers(1, 4)), depth)][i % 3]
    beta = SOFTMAX_BETAS[i % len(SOFTMAX_BETAS)]
    s_in = _scale(rng, 5, 8) if i % 10 == 9 else _scale(rng, -7, 2)  # > 32 / beta: capped multiplier
    x = b.add(shape, "int8", s_in, _zp(rng))
    y = b.add(shape, "int16", 1 / 65536, -32768) if i % 3 == 2 else b.add(shape, "int8", 1 / 256, -128)
    return b.case(Op.SOFTMAX, [x], y, {"beta": beta}, [_int8(rng, shape)])


def _sigmoid(rng: np.random.Generator, i: int, op: Op) -> Case:
    """LOGISTIC / TANH int8: every int8 value once (even cases) or a random 4-D tensor."""
    b = _Builder()
    if i % 2 == 0:
        shape, feed = (1, 256), rng.permutation(np.arange(-128, 128)).astype(np.int8).reshape(1, 256)
    else:
        shape = tuple(int(d) for d in rng.integers(1, 6, 4))
        feed = _int8(rng, shape)
    x = b.add(shape, "int8", _scale(rng, -9, 1), _zp(rng))
    y = b.add(shape, "int8", 1 / 256, -128) if op == Op.LOGISTIC else b.add(shape, "int8", 1 / 128, 0)
    return b.case(op, [x], y, {}, [feed])


QUANTIZE_TYPES = (("float32", "int8"), ("float32", "int16"), ("int8", "int8"), ("int8", "int16"),
                  ("int16", "int8"), ("int16", "int16"))


def _quantize(rng: np.random.Generator, i: int) -> Case:
    """QUANTIZE float32 -> int8/int16 (incl. exact .5 ties) and int8/int16 requantization."""
    b = _Builder()
    src, dst = QUANTIZE_TYPES[i % len(QUANTIZE_TYPES)]
    shape = tuple(int(d) for d in rng.integers(1, 8, 3))
    s_out = _scale(rng, -8, 0)
    zp_out = _zp(rng) if dst == "int8" else 0
    if src == "float32":
        x = b.add(shape, "float32")
        span = 140 if dst == "int8" else 33000
        ticks = rng.integers(-span, span, shape) + rng.choice([0.0, 0.5, 0.25, -0.5], shape)
        feed = (ticks * np.float32(s_out)).astype(np.float32)
    else:
        zp_in = _zp(rng) if src == "int8" else 0
        x = b.add(shape, src, _scale(rng, -8, 0), zp_in)
        info = np.iinfo(src)
        feed = rng.integers(info.min, info.max, shape, endpoint=True).astype(src)
    y = b.add(shape, dst, s_out, zp_out)
    return b.case(Op.QUANTIZE, [x], y, {}, [feed])


def _dequantize(rng: np.random.Generator, i: int) -> Case:
    """DEQUANTIZE int8 / int16 -> float32."""
    b = _Builder()
    src = ("int8", "int16")[i % 2]
    shape = tuple(int(d) for d in rng.integers(1, 8, 3))
    x = b.add(shape, src, _scale(rng, -10, 0), _zp(rng) if src == "int8" else 0)
    y = b.add(shape, "float32")
    info = np.iinfo(src)
    feed = rng.integers(info.min, info.max, shape, endpoint=True).astype(src)
    return b.case(Op.DEQUANTIZE, [x], y, {}, [feed])


def _pad(rng: np.random.Generator, i: int) -> Case:
    """PAD int8 with constant paddings on every axis; pad value = output zero point or a constant input."""
    b = _Builder()
    shape = tuple(int(d) for d in rng.integers(1, 6, 4))
    pads = rng.integers(0, 3, (4, 2))
    s, zp = _scale(rng, -7, 0), _zp(rng)
    x = b.add(shape, "int8", s, zp)
    inputs = [x, b.add((4, 2), "int32", data=pads)]
    if i % 2 == 1:
        inputs.append(b.add((), "int8", s, zp, data=_zp(rng)))
    y = b.add(tuple(d + int(lo) + int(hi) for d, (lo, hi) in zip(shape, pads)), "int8", s, zp)
    return b.case(Op.PAD, inputs, y, {}, [_int8(rng, shape)])


def _mean(rng: np.random.Generator, i: int) -> Case:
    """MEAN over H and W with keep_dims, requantizing to a different scale and zero point."""
    b = _Builder()
    n, c = (int(d) for d in rng.integers(1, 5, 2))
    h, w = (int(d) for d in rng.integers(1, 17, 2))
    s_in = _scale(rng, -7, 0)
    x = b.add((n, h, w, c), "int8", s_in, _zp(rng))
    axes = b.add((2,), "int32", data=(1, 2))
    y = b.add((n, 1, 1, c), "int8", s_in * float(rng.uniform(0.3, 2)), _zp(rng))
    return b.case(Op.MEAN, [x, axes], y, {"keep_dims": True}, [_int8(rng, (n, h, w, c))])


def _concatenation(rng: np.random.Generator, i: int) -> Case:
    """CONCATENATION of 2-3 int8 tensors (shared scale and zero point) along any axis, also negative."""
    b = _Builder()
    axis = int(rng.integers(-4, 4))
    base = [int(d) for d in rng.integers(1, 5, 4)]
    s, zp = _scale(rng, -7, 0), _zp(rng)
    shapes = []
    for _ in range(2 + i % 2):
        shape = list(base)
        shape[axis] = int(rng.integers(1, 5))
        shapes.append(tuple(shape))
    xs = [b.add(shape, "int8", s, zp) for shape in shapes]
    out = list(base)
    out[axis] = sum(shape[axis] for shape in shapes)
    y = b.add(out, "int8", s, zp)
    attrs = {"axis": axis, "activation": "NONE"}
    return b.case(Op.CONCATENATION, xs, y, attrs, [_int8(rng, shape) for shape in shapes])


BUILDERS: dict[Op, tuple[Callable[[np.random.Generator, int], Case], int]] = {
    Op.CONV_2D: (lambda r, i: _conv(r, i, False), 80),
    Op.DEPTHWISE_CONV_2D: (lambda r, i: _conv(r, i, True), 60),
    Op.FULLY_CONNECTED: (_fully_connected, 60),
    Op.ADD: (lambda r, i: _add_mul(r, i, Op.ADD), 48),
    Op.MUL: (lambda r, i: _add_mul(r, i, Op.MUL), 48),
    Op.AVERAGE_POOL_2D: (lambda r, i: _pool(r, i, Op.AVERAGE_POOL_2D), 40),
    Op.MAX_POOL_2D: (lambda r, i: _pool(r, i, Op.MAX_POOL_2D), 30),
    Op.RESHAPE: (_reshape, 8),
    Op.SOFTMAX: (_softmax, 120),
    Op.QUANTIZE: (_quantize, 48),
    Op.DEQUANTIZE: (_dequantize, 12),
    Op.PAD: (_pad, 16),
    Op.MEAN: (_mean, 32),
    Op.CONCATENATION: (_concatenation, 16),
    Op.LOGISTIC: (lambda r, i: _sigmoid(r, i, Op.LOGISTIC), 60),
    Op.TANH: (lambda r, i: _sigmoid(r, i, Op.TANH), 60),
}
CASES = [(op, i) for op, (_, count) in BUILDERS.items() for i in range(count)]
NONLINEAR = {
    Op.SOFTMAX: (nonlinear.prepare_softmax, nonlinear.softmax),
    Op.LOGISTIC: (nonlinear.prepare_logistic, nonlinear.logistic),
    Op.TANH: (nonlinear.prepare_tanh, nonlinear.tanh),
}


@functools.cache
def build(op: Op, i: int) -> Case:
    builder = BUILDERS[op][0]
    return builder(np.random.default_rng([SEED, list(Op).index(op), i]), i)


@functools.cache
def tflm_output(op: Op, i: int) -> np.ndarray:
    case = build(op, i)
    interpreter = runtime.Interpreter.from_bytes(write_model(case.graph), arena_size=ARENA)
    for k, x in enumerate(case.inputs):
        interpreter.set_input(x, k)
    interpreter.invoke()
    return interpreter.get_output(0)


def assert_bit_exact(op: Op, i: int, got: np.ndarray, want: np.ndarray) -> None:
    """np.array_equal, or fail naming the op, the case and the first differing element."""
    got = np.asarray(got)
    assert (got.dtype, got.shape) == (want.dtype, want.shape), (
        f"{op} case {i}: got {got.dtype}{list(got.shape)}, expected {want.dtype}{list(want.shape)}"
    )
    if not np.array_equal(got, want):
        bad = np.argwhere(got != want)
        idx = tuple(int(k) for k in bad[0])
        pytest.fail(
            f"{op} case {i}: first mismatch at index {idx}: got {got[idx]}, expected {want[idx]} "
            f"({len(bad)} of {want.size} differ)"
        )


def _case_id(param) -> str:
    return f"{param[0]}-{param[1]}"


@pytest.mark.parametrize("op_case", CASES, ids=_case_id)
def test_run_integer_matches_tflm(op_case: tuple[Op, int]) -> None:
    simulate = pytest.importorskip("mcuq.simulate")
    if not hasattr(simulate, "run_integer"):
        pytest.skip("mcuq.simulate.run_integer does not exist yet")
    op, i = op_case
    case = build(op, i)
    got = simulate.run_integer(case.graph, list(case.inputs))[0]
    assert_bit_exact(op, i, got, tflm_output(op, i))


@pytest.mark.parametrize("op_case", [c for c in CASES if c[0] in NONLINEAR], ids=_case_id)
def test_nonlinear_kernels_match_tflm(op_case: tuple[Op, int]) -> None:
    """prepare_*/eval of mcuq.simulate.nonlinear directly, independent of run_integer."""
    op, i = op_case
    case = build(op, i)
    prepare, evaluate = NONLINEAR[op]
    params = prepare(case.graph, case.graph.nodes[0])
    assert all(isinstance(v, int) for v in vars(params).values())  # no floats reach the firmware
    assert_bit_exact(op, i, evaluate(params, list(case.inputs)), tflm_output(op, i))


def _one_node(op: Op, x: Tensor, y: Tensor, attrs: dict) -> tuple[Graph, Node]:
    node = Node(0, op, (0,), (1,), attrs)
    return Graph((x, y), (node,), (0,), (1,)), node


@pytest.mark.parametrize(
    "op, in_dtype, out_quant, attrs, words",
    [
        (Op.SOFTMAX, "int8", ("int8", 1 / 256, 0), {"beta": 1.0}, "zero point -128"),
        (Op.SOFTMAX, "int8", ("int8", 1 / 128, -128), {"beta": 1.0}, "scale 1/256"),
        (Op.SOFTMAX, "int16", ("int16", 1 / 32768, 0), {"beta": 1.0}, "int16"),
        (Op.SOFTMAX, "int8", ("int8", 1 / 256, -128), {"beta": 1e-9}, "too small"),
        (Op.LOGISTIC, "int8", ("int8", 1 / 256, 0), {}, "zero point -128"),
        (Op.LOGISTIC, "int16", ("int16", 1 / 32768, 0), {}, "int16"),
        (Op.TANH, "int16", ("int16", 1 / 32768, 0), {}, "int16"),
    ],
)
def test_nonlinear_refuses_what_it_cannot_match(op, in_dtype, out_quant, attrs, words) -> None:
    """What TFLM refuses or computes with LUTs raises one UnsupportedOpError line (node, op, tensor)."""
    dtype, scale, zp = out_quant
    x = Tensor(0, "logits", (1, 10), in_dtype, Quant((0.125,), (0,)))
    y = Tensor(1, "probs", (1, 10), dtype, Quant((scale,), (zp,)))
    graph, node = _one_node(op, x, y, attrs)
    with pytest.raises(UnsupportedOpError) as err:
        NONLINEAR[op][0](graph, node)
    message = str(err.value)
    assert "\n" not in message and words in message
    assert message.startswith(f"node 0 {op} (output 'probs')")
