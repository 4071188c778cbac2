"""The C kernels (firmware/kernels, built for the host) equal the numpy integer simulator.

Each case is a seeded one-node ir.Graph with random shapes, strides, paddings, dilations, depth
multipliers, per-channel quantization, fused activations and broadcasting. Its Params come from
the simulator's own prepare_<op> and are handed to C unchanged; outputs must be np.array_equal,
and a failure names (op, case, index, got, expected). The requantize header is checked against
mcuq.fixedpoint on random and extreme arguments, everything runs once more under UBSan, and
every kernel compiles for the boards' cores.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, replace

import numpy as np
import pytest

from kernel_target import TargetCase, build_image, run_image
from kernels_ffi import INCLUDE, KERNELS, STRICT, CParams, build, ptr
from mcuq.boards import all_boards
from mcuq.errors import UnsupportedOpError
from mcuq.fixedpoint import mbqm, requantize_pow2
from mcuq.ir import Graph, Node, Op, Quant, Tensor
from mcuq.pack import PLAIN_FALLBACKS, node_kernel, prune_filters, takes_dsp_path
from mcuq.simulate import nonlinear
from mcuq.simulate.common import output_size_and_padding
from mcuq.simulate.conv import channel_data, mbqm64
from mcuq.simulate.integer import KERNELS as SIMULATOR

CASES = 40
UBSAN_CASES = 8
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
SUFFIX = {"int8": "s8", "int16": "s16", "int32": "s32", "float32": "f32"}
UNIFORM_STD = {"int8": 74.0, "int16": 18900.0}  # std of uniform values over the type range


@pytest.fixture(scope="session")
def c(tmp_path_factory):
    """(ffi, lib) of the kernels built once per test session (per worker)."""
    return build(tmp_path_factory.mktemp("kernels"))


@pytest.fixture(scope="session")
def c_dsp(tmp_path_factory):
    """The kernels with their DSP-extension paths, over the portable twins of the intrinsics."""
    return build(tmp_path_factory.mktemp("kernels_dsp"), dsp=True)


@pytest.fixture(scope="session")
def c_ubsan(tmp_path_factory):
    """The same, built with -fsanitize=undefined (skips when the compiler has no UBSan runtime)."""
    try:
        return build(tmp_path_factory.mktemp("kernels_ubsan"), sanitize=True)
    except Exception as e:  # noqa: BLE001 - any build failure means no sanitizer here
        pytest.skip(f"no UBSan build: {e}")


# ---- single-op graphs ------------------------------------------------------------------------


@dataclass
class Case:
    graph: Graph
    inputs: list[np.ndarray]  # the fed (non-constant) inputs, in node input order


class Builder:
    def __init__(self, rng: np.random.Generator, pow2: bool = False):
        self.rng = rng
        self.pow2 = pow2
        self.tensors: list[Tensor] = []
        self.feeds: dict[int, np.ndarray] = {}

    def scale(self, lo: float, hi: float) -> float:
        if self.pow2:  # power-of-two scales: every multiplier becomes 2^30 (shift_only nodes)
            return float(2.0 ** np.round(self.rng.uniform(np.log2(lo), np.log2(hi))))
        return float(np.float32(np.exp(self.rng.uniform(np.log(lo), np.log(hi)))))

    def zp(self, dtype: str) -> int:
        return int(self.rng.integers(-128, 128)) if dtype == "int8" else 0

    def tensor(self, shape, dtype: str, scale=None, zp=0, data=None, axis: int = 0) -> int:
        q = None
        if scale is not None:
            scales = tuple(float(np.float32(s)) for s in np.atleast_1d(scale))
            q = Quant(scales, tuple(int(z) for z in np.broadcast_to(zp, len(scales))), axis)
        i = len(self.tensors)
        arr = None if data is None else np.asarray(data, dtype).reshape(shape)
        self.tensors.append(Tensor(i, f"t{i}", tuple(int(d) for d in shape), dtype, q, arr))
        return i

    def feed(self, shape, dtype: str, scale=None, zp=0, values=None) -> int:
        """A fed input, filled with uniform values over its type range unless given."""
        i = self.tensor(shape, dtype, scale, zp)
        if values is None:
            info = np.iinfo(dtype)
            values = self.rng.integers(info.min, info.max, shape, endpoint=True)
        self.feeds[i] = np.asarray(values, dtype).reshape(shape)
        return i

    def weights(self, shape, scales, axis: int = 0) -> int:
        return self.tensor(shape, "int8", scales, 0, self.rng.integers(-127, 128, shape), axis)

    def case(self, op: Op, ins: list[int], out: int, attrs: dict | None = None) -> Case:
        node = Node(0, op, tuple(ins), (out,), attrs or {})
        graph = Graph(tuple(self.tensors), (node,), tuple(self.feeds), (out,), str(op))
        return Case(graph, [self.feeds[i] for i in ins if i in self.feeds])

    def act(self) -> str:
        return str(self.rng.choice(ACTIVATIONS))


def _conv_geometry(b: Builder, k: int) -> dict:
    r = b.rng
    kh, kw = (int(v) for v in r.integers(1, 5, 2))
    stride = [int(v) for v in r.integers(1, 4, 2)]
    dilation = [int(v) for v in r.integers(1, 4, 2)] if k % 3 else [1, 1]
    padding = "SAME" if r.random() < 0.5 else "VALID"
    h, w = (int(v) for v in r.integers(1, 12, 2))
    if padding == "VALID":
        h, w = max(h, (kh - 1) * dilation[0] + 1), max(w, (kw - 1) * dilation[1] + 1)
    oh = output_size_and_padding(h, kh, stride[0], dilation[0], padding)[0]
    ow = output_size_and_padding(w, kw, stride[1], dilation[1], padding)[0]
    attrs = {"padding": padding, "stride_h": stride[0], "stride_w": stride[1], "dilation_h": dilation[0],
             "dilation_w": dilation[1], "activation": b.act()}
    return {"n": int(r.integers(1, 3)), "h": h, "w": w, "kh": kh, "kw": kw, "oh": oh, "ow": ow, "attrs": attrs}


def _out_scale(b: Builder, dtype: str, s_in: float, s_w: float, taps: int) -> float:
    """An output scale putting ~3 standard deviations of the accumulator in range (some clamps)."""
    std = s_in * s_w * UNIFORM_STD[dtype] * UNIFORM_STD["int8"] * taps ** 0.5
    scale = 3 * std / np.iinfo(dtype).max * b.rng.uniform(0.3, 3)
    return float(2.0 ** np.round(np.log2(scale))) if b.pow2 else float(np.float32(scale))


def _bias(b: Builder, dtype: str, channels: int, int16_choices=("int32", "int64", None)) -> int:
    kind = "int32" if dtype == "int8" else int16_choices[int(b.rng.integers(len(int16_choices)))]
    if kind is None or (dtype == "int8" and b.rng.random() < 0.2):
        return -1
    bound = 1 << (14 if kind == "int32" else 24)
    return b.tensor((channels,), kind, 1e-4, 0, b.rng.integers(-bound, bound, channels))


def gen_conv(b: Builder, k: int, dtype: str) -> Case:
    g = _conv_geometry(b, k)
    groups = int(b.rng.choice([1, 1, 2, 3]))
    icf, ocg = int(b.rng.integers(1, 5)), int(b.rng.integers(1, 4))
    ic, oc = groups * icf, groups * ocg
    s_in = b.scale(0.005, 0.1)
    x = b.feed((g["n"], g["h"], g["w"], ic), dtype, s_in, b.zp(dtype))
    scales = [b.scale(0.002, 0.02) for _ in range(oc)] if b.rng.random() < 0.7 else b.scale(0.002, 0.02)
    w = b.weights((oc, g["kh"], g["kw"], icf), scales)
    bias = _bias(b, dtype, oc)
    s_out = _out_scale(b, dtype, s_in, float(np.mean(scales)), g["kh"] * g["kw"] * icf)
    y = b.tensor((g["n"], g["oh"], g["ow"], oc), dtype, s_out, b.zp(dtype))
    return b.case(Op.CONV_2D, [x, w, bias], y, g["attrs"])


def gen_depthwise(b: Builder, k: int, dtype: str) -> Case:
    g = _conv_geometry(b, k)
    ic, dm = int(b.rng.integers(1, 6)), int(b.rng.integers(1, 4))
    oc = ic * dm
    s_in = b.scale(0.005, 0.1)
    x = b.feed((g["n"], g["h"], g["w"], ic), dtype, s_in, b.zp(dtype))
    scales = [b.scale(0.002, 0.05) for _ in range(oc)]
    w = b.weights((1, g["kh"], g["kw"], oc), scales, axis=3)
    bias = _bias(b, dtype, oc, ("int64",))
    s_out = _out_scale(b, dtype, s_in, float(np.mean(scales)), g["kh"] * g["kw"])
    y = b.tensor((g["n"], g["oh"], g["ow"], oc), dtype, s_out, b.zp(dtype))
    return b.case(Op.DEPTHWISE_CONV_2D, [x, w, bias], y, {**g["attrs"], "depth_multiplier": dm})


def gen_fully_connected(b: Builder, k: int, dtype: str) -> Case:
    r = b.rng
    depth, units = int(r.integers(1, 40)), int(r.integers(1, 12))
    lead = [(int(r.integers(1, 4)),), (2, int(r.integers(1, 3))), (1,)][k % 3]
    in_shape = (*lead, depth) if k % 3 != 2 else (1, 2, 2, depth)
    out_shape = (*lead, units) if k % 3 != 2 else (1, 4, units)
    s_in = b.scale(0.005, 0.1)
    x = b.feed(in_shape, dtype, s_in, b.zp(dtype))
    per_channel = r.random() < 0.5
    scales = [b.scale(0.002, 0.02) for _ in range(units)] if per_channel else b.scale(0.002, 0.02)
    w_zp = 0 if per_channel else int(r.integers(-20, 21))
    w = b.tensor((units, depth), "int8", scales, w_zp, r.integers(-127, 128, (units, depth)))
    bias = _bias(b, dtype, units)
    s_out = _out_scale(b, dtype, s_in, float(np.mean(scales)), depth)
    y = b.tensor(out_shape, dtype, s_out, b.zp(dtype))
    return b.case(Op.FULLY_CONNECTED, [x, w, bias], y, {"activation": b.act()})


def gen_pool(b: Builder, k: int, dtype: str, op: Op) -> Case:
    r = b.rng
    fh, fw = (int(v) for v in r.integers(1, 5, 2))
    sh, sw = (int(v) for v in r.integers(1, 4, 2))
    padding = "SAME" if r.random() < 0.5 else "VALID"
    h, w = int(r.integers(fh, 11)), int(r.integers(fw, 11))
    oh = output_size_and_padding(h, fh, sh, 1, padding)[0]
    ow = output_size_and_padding(w, fw, sw, 1, padding)[0]
    n, ch = int(r.integers(1, 3)), int(r.integers(1, 5))
    s, zp = b.scale(0.01, 0.1), b.zp(dtype)
    x = b.feed((n, h, w, ch), dtype, s, zp)
    y = b.tensor((n, oh, ow, ch), dtype, s, zp)
    attrs = {"padding": padding, "stride_h": sh, "stride_w": sw, "filter_h": fh, "filter_w": fw,
             "activation": b.act()}
    return b.case(op, [x], y, attrs)


def _broadcast_shapes(b: Builder) -> tuple[tuple[int, ...], tuple[int, ...]]:
    r = b.rng
    rank = int(r.integers(1, 7))
    full = [int(v) for v in r.integers(1, 5, rank)]
    s1 = tuple(1 if r.random() < 0.3 else d for d in full)
    s2 = tuple(1 if r.random() < 0.3 else d for d in full)
    return s1[int(r.integers(0, rank)):] if r.random() < 0.3 else s1, s2


def gen_binary(b: Builder, k: int, dtype: str, op: Op) -> Case:
    s1, s2 = _broadcast_shapes(b) if k % 4 else ((2, 3, 4),) * 2
    a1, a2 = b.scale(0.01, 0.1), b.scale(0.01, 0.1)
    x1 = b.feed(s1, dtype, a1, b.zp(dtype))
    x2 = b.feed(s2, dtype, a2, b.zp(dtype))
    if op == Op.ADD:
        s_out = max(a1, a2) * b.rng.uniform(0.5, 3) * (256 if dtype == "int16" else 1)
    else:
        s_out = a1 * a2 * b.rng.uniform(50, 500) * (65536 if dtype == "int16" else 1)
    y = b.tensor(np.broadcast_shapes(s1, s2), dtype, s_out, b.zp(dtype))
    return b.case(op, [x1, x2], y, {"activation": b.act()})


def gen_quantize(b: Builder, k: int, src: str, dst: str) -> Case:
    r = b.rng
    shape = (int(r.integers(1, 4)), int(r.integers(1, 60)))
    s_out, zp_out = b.scale(0.001, 0.1), int(r.integers(-128, 128)) if dst == "int8" else int(r.integers(-300, 300))
    if src == "float32":
        info = np.iinfo(dst)
        real = r.uniform(s_out * (info.min - zp_out) * 1.2, s_out * (info.max - zp_out) * 1.2, shape)
        ties = np.float32(s_out) * (r.integers(info.min - zp_out, info.max - zp_out, shape) + 0.5).astype(np.float32)
        values = np.where(r.random(shape) < 0.3, ties, real).astype(np.float32)
        values.reshape(-1)[:3] = [1e15, -1e15, -0.0][: values.size]  # the host rule is defined below 2^63
        x = b.feed(shape, src, values=values)
    else:
        ratio = 2.0 ** (np.iinfo(dst).bits - np.iinfo(src).bits)  # maps the input range onto the output's
        s_in = s_out if k % 5 == 0 else s_out * ratio * b.scale(0.2, 5)
        x = b.feed(shape, src, s_in, int(r.integers(-128, 128)) if src != "int32" else int(r.integers(-5, 5)))
    y = b.tensor(shape, dst, s_out, zp_out)
    return b.case(Op.QUANTIZE, [x], y)


def gen_dequantize(b: Builder, k: int, src: str) -> Case:
    shape = (int(b.rng.integers(1, 5)), int(b.rng.integers(1, 50)))
    x = b.feed(shape, src, b.scale(1e-4, 10), int(b.rng.integers(-128, 128)))
    return b.case(Op.DEQUANTIZE, [x], b.tensor(shape, "float32"))


def gen_reshape(b: Builder, k: int, dtype: str) -> Case:
    shape = tuple(int(v) for v in b.rng.integers(1, 5, int(b.rng.integers(1, 5))))
    x = b.feed(shape, dtype, 0.1, 0)
    return b.case(Op.RESHAPE, [x], b.tensor((int(np.prod(shape)),), dtype, 0.1, 0), {"new_shape": None})


def gen_pad(b: Builder, k: int, dtype: str) -> Case:
    r = b.rng
    rank = int(r.integers(1, 6))
    shape = tuple(int(v) for v in r.integers(1, 5, rank))
    pads = r.integers(0, 3, (rank, 2))
    s, zp = 0.05, b.zp(dtype)
    x = b.feed(shape, dtype, s, zp)
    p = b.tensor((rank, 2), "int32", data=pads)
    ins = [x, p]
    if k % 2:
        ins.append(b.tensor((1,), dtype, s, zp, [int(r.integers(-100, 100))]))
    y = b.tensor(tuple(int(d + a + c) for d, (a, c) in zip(shape, pads)), dtype, s, zp)
    return b.case(Op.PAD, ins, y)


def gen_concatenation(b: Builder, k: int, dtype: str) -> Case:
    r = b.rng
    rank = int(r.integers(1, 5))
    base = [int(v) for v in r.integers(1, 4, rank)]
    axis = int(r.integers(-rank, rank))
    sizes = [int(v) for v in r.integers(1, 4, int(r.integers(1, 5)))]
    s, zp = 0.05, b.zp(dtype)
    ins = []
    for n in sizes:
        shape = list(base)
        shape[axis] = n
        ins.append(b.feed(tuple(shape), dtype, s, zp))
    out = list(base)
    out[axis] = sum(sizes)
    return b.case(Op.CONCATENATION, ins, b.tensor(tuple(out), dtype, s, zp), {"axis": axis, "activation": "NONE"})


def gen_mean(b: Builder, k: int, dtype: str) -> Case:
    r = b.rng
    rank = int(r.integers(1, 6))
    shape = tuple(int(v) for v in r.integers(1, 6, rank))
    axes = sorted({int(a) for a in r.integers(-rank, rank, int(r.integers(1, rank + 1)))})
    keep = bool(r.random() < 0.5)
    reduced = {a % rank for a in axes}
    out = tuple(1 if i in reduced else d for i, d in enumerate(shape) if keep or i not in reduced)
    s_in = b.scale(0.01, 0.1)
    zp = int(r.integers(-128, 128)) if dtype == "int8" else int(r.integers(-50, 50))
    x = b.feed(shape, dtype, s_in, zp)
    a = b.tensor((len(axes),), "int32", data=axes)
    # means of n uniform values spread ~1/sqrt(n) as wide: a finer output scale keeps them apart
    count = int(np.prod([shape[a] for a in reduced]))
    s_out = s_in * b.rng.uniform(0.5, 2) / (1 if k % 2 else count ** 0.5)
    y = b.tensor(out, dtype, s_out, int(r.integers(-128, 128)) if dtype == "int8" else 0)
    return b.case(Op.MEAN, [x, a], y, {"keep_dims": keep})


def gen_softmax(b: Builder, k: int, out_dtype: str) -> Case:
    r = b.rng
    shape = [(int(r.integers(1, 5)), int(r.integers(1, 40))), (1, 2, 3, int(r.integers(1, 20)))][k % 2]
    x = b.feed(shape, "int8", b.scale(0.01, 0.5), int(r.integers(-128, 128)))
    y = b.tensor(shape, out_dtype, *((1 / 256, -128) if out_dtype == "int8" else (1 / 65536, -32768)))
    beta = 1.0 if k % 3 == 0 else float(r.uniform(0.1, 3))
    return b.case(Op.SOFTMAX, [x], y, {"beta": beta})


def gen_sigmoid(b: Builder, k: int, op: Op) -> Case:
    scale = b.scale(1e-3, 1.0) if k % 8 else b.scale(20, 100)  # huge scales: radius 0, all saturate
    values = np.arange(-128, 128)
    x = b.feed((2, 128), "int8", scale, int(b.rng.integers(-128, 128)), values)
    y = b.tensor((2, 128), "int8", *((1 / 256, -128) if op == Op.LOGISTIC else (1 / 128, 0)))
    return b.case(op, [x], y)


def _bias_any(b: Builder, channels: int) -> int:
    """An int32 bias: constant (folded into channel_data), fed at run time (not folded), or none."""
    u = b.rng.random()
    values = b.rng.integers(-(1 << 14), 1 << 14, channels)
    if u < 0.15:
        return -1
    if u < 0.3:
        return b.feed((channels,), "int32", 1e-4, 0, values)
    return b.tensor((channels,), "int32", 1e-4, 0, values)


def gen_conv_wide(b: Builder, k: int) -> Case:
    """Shapes of real networks for the DSP path: 1x1 and 3x3 windows over many channels (some
    windows beyond its column block, which fall back to the plain path), strides, padding."""
    r = b.rng
    kh, kw = [(1, 1), (3, 3), (3, 3), (1, 1), (10, 4), (2, 3), (5, 5)][k % 7]
    ic = int(r.choice([1, 3, 4, 8, 13, 16, 32, 64, 80]))
    if k % 6 == 1:  # 3 x 3 x 64: four such windows pass through the column block in chunks
        kh, kw, ic = 3, 3, 64
    oc = int(r.integers(1, 21)) if k % 4 != 1 else int(r.integers(33, 70))  # beyond 32: several passes
    stride = [int(v) for v in r.integers(1, 3, 2)]
    dilation = [1, 1] if k % 5 else [2, 1]
    padding = "SAME" if r.random() < 0.6 else "VALID"
    h = max(int(r.integers(1, 10)), (kh - 1) * dilation[0] + 1)
    w = max(int(r.integers(1, 10)), (kw - 1) * dilation[1] + 1)
    oh = output_size_and_padding(h, kh, stride[0], dilation[0], padding)[0]
    ow = output_size_and_padding(w, kw, stride[1], dilation[1], padding)[0]
    n = int(r.integers(1, 3))
    s_in = b.scale(0.005, 0.1)
    x = b.feed((n, h, w, ic), "int8", s_in, b.zp("int8"))
    scales = [b.scale(0.002, 0.02) for _ in range(oc)] if r.random() < 0.8 else b.scale(0.002, 0.02)
    wt = b.weights((oc, kh, kw, ic), scales)
    bias = _bias_any(b, oc)
    s_out = _out_scale(b, "int8", s_in, float(np.mean(scales)), kh * kw * ic)
    y = b.tensor((n, oh, ow, oc), "int8", s_out, b.zp("int8"))
    attrs = {"padding": padding, "stride_h": stride[0], "stride_w": stride[1], "dilation_h": dilation[0],
             "dilation_w": dilation[1], "activation": b.act()}
    return b.case(Op.CONV_2D, [x, wt, bias], y, attrs)


def gen_depthwise_wide(b: Builder, k: int) -> Case:
    """Depthwise windows (3x3 mostly) over many channels, strides, padding, dilation."""
    r = b.rng
    kh, kw = [(3, 3), (3, 3), (3, 3), (5, 5), (1, 1), (2, 3)][k % 6]
    ic = int(r.choice([1, 3, 4, 5, 8, 16, 17, 64]))
    dm = 1 if k % 4 else int(r.integers(1, 3))
    oc = ic * dm
    stride = [int(v) for v in r.integers(1, 3, 2)]
    dilation = [1, 1] if k % 5 else [2, 2]
    padding = "SAME" if r.random() < 0.7 else "VALID"
    h = max(int(r.integers(1, 10)), (kh - 1) * dilation[0] + 1)
    w = max(int(r.integers(1, 10)), (kw - 1) * dilation[1] + 1)
    oh = output_size_and_padding(h, kh, stride[0], dilation[0], padding)[0]
    ow = output_size_and_padding(w, kw, stride[1], dilation[1], padding)[0]
    n = int(r.integers(1, 3))
    s_in = b.scale(0.005, 0.1)
    x = b.feed((n, h, w, ic), "int8", s_in, b.zp("int8"))
    scales = [b.scale(0.002, 0.05) for _ in range(oc)]
    wt = b.weights((1, kh, kw, oc), scales, axis=3)
    bias = _bias_any(b, oc)
    s_out = _out_scale(b, "int8", s_in, float(np.mean(scales)), kh * kw)
    y = b.tensor((n, oh, ow, oc), "int8", s_out, b.zp("int8"))
    attrs = {"padding": padding, "stride_h": stride[0], "stride_w": stride[1], "dilation_h": dilation[0],
             "dilation_w": dilation[1], "activation": b.act(), "depth_multiplier": dm}
    return b.case(Op.DEPTHWISE_CONV_2D, [x, wt, bias], y, attrs)


def gen_fully_connected_wide(b: Builder, k: int) -> Case:
    """Fully connected layers of real size (depth up to 1300, beyond the DSP block too),
    per-tensor with a filter zero point or per-channel, one to three batch rows."""
    r = b.rng
    depth = int(r.choice([1, 3, 4, 7, 64, 250, 640, 700, 1300]))
    units = int(r.integers(1, 21))
    batches = int(r.integers(1, 4))
    s_in = b.scale(0.005, 0.1)
    x = b.feed((batches, depth), "int8", s_in, b.zp("int8"))
    per_channel = r.random() < 0.5
    scales = [b.scale(0.002, 0.02) for _ in range(units)] if per_channel else b.scale(0.002, 0.02)
    w_zp = 0 if per_channel else int(r.integers(-20, 21))
    wt = b.tensor((units, depth), "int8", scales, w_zp, r.integers(-127, 128, (units, depth)))
    bias = _bias_any(b, units)
    s_out = _out_scale(b, "int8", s_in, float(np.mean(scales)), depth)
    y = b.tensor((batches, units), "int8", s_out, b.zp("int8"))
    return b.case(Op.FULLY_CONNECTED, [x, wt, bias], y, {"activation": b.act()})


def gen_add_wide(b: Builder, k: int) -> Case:
    """ADD over feature maps of real size (1,024 to 8,192 elements), flat or broadcasting, every
    relation of the two input scales (equal, close, far apart)."""
    r = b.rng
    h, w, c = int(r.integers(8, 33)), int(r.integers(8, 17)), int(r.choice([4, 8, 16]))
    s1 = (1, h, w, c)
    s2 = s1 if k % 3 else ((1, 1, 1, c) if k % 2 else (1, h, w, 1))
    a1 = b.scale(0.01, 0.1)
    factors = [0.5, 0.25, 0.0625, 2.0] if b.pow2 else [0.9, 0.5, 0.3, 0.05, 2.0]
    a2 = a1 if k % 5 == 0 else a1 * float(r.choice(factors))
    x1 = b.feed(s1, "int8", a1, b.zp("int8"))
    x2 = b.feed(s2, "int8", a2, b.zp("int8"))
    s_out = max(a1, a2) * (float(r.choice([0.5, 1.0, 2.0])) if b.pow2 else float(r.uniform(0.5, 3)))
    y = b.tensor(s1, "int8", s_out, b.zp("int8"))
    return b.case(Op.ADD, [x1, x2], y, {"activation": b.act()})


WIDE_GENERATORS = {
    "add_s8_wide": gen_add_wide,
    "conv2d_s8_wide": gen_conv_wide,
    "depthwise_conv2d_s8_wide": gen_depthwise_wide,
    "fully_connected_s8_wide": gen_fully_connected_wide,
}

GENERATORS = {
    "conv2d_s8": lambda b, k: gen_conv(b, k, "int8"),
    "conv2d_s16": lambda b, k: gen_conv(b, k, "int16"),
    "depthwise_conv2d_s8": lambda b, k: gen_depthwise(b, k, "int8"),
    "depthwise_conv2d_s16": lambda b, k: gen_depthwise(b, k, "int16"),
    "fully_connected_s8": lambda b, k: gen_fully_connected(b, k, "int8"),
    "fully_connected_s16": lambda b, k: gen_fully_connected(b, k, "int16"),
    **{f"{name}_{SUFFIX[t]}": (lambda op, t: lambda b, k: gen_pool(b, k, t, op))(op, t)
       for name, op in (("avg_pool", Op.AVERAGE_POOL_2D), ("max_pool", Op.MAX_POOL_2D)) for t in ("int8", "int16")},
    **{f"{op.lower()}_{SUFFIX[t]}": (lambda op, t: lambda b, k: gen_binary(b, k, t, op))(op, t)
       for op in (Op.ADD, Op.MUL) for t in ("int8", "int16")},
    **{f"quantize_{SUFFIX[s]}_to_{SUFFIX[d]}": (lambda s, d: lambda b, k: gen_quantize(b, k, s, d))(s, d)
       for s, ds in (("float32", ("int8", "int16")), ("int8", ("int8", "int16", "int32")),
                     ("int16", ("int8", "int16", "int32")), ("int32", ("int8", "int16"))) for d in ds},
    **{f"dequantize_{SUFFIX[t]}": (lambda t: lambda b, k: gen_dequantize(b, k, t))(t) for t in ("int8", "int16")},
    **{f"{name}_{SUFFIX[t]}": (lambda g, t: lambda b, k: g(b, k, t))(g, t)
       for name, g in (("reshape", gen_reshape), ("pad", gen_pad), ("concatenation", gen_concatenation))
       for t in ("int8", "int16", "int32")},
    **{f"mean_{SUFFIX[t]}": (lambda t: lambda b, k: gen_mean(b, k, t))(t) for t in ("int8", "int16")},
    "softmax_s8": lambda b, k: gen_softmax(b, k, "int8"),
    "softmax_s8_s16": lambda b, k: gen_softmax(b, k, "int16"),
    "logistic_s8": lambda b, k: gen_sigmoid(b, k, Op.LOGISTIC),
    "tanh_s8": lambda b, k: gen_sigmoid(b, k, Op.TANH),
}


# ---- calling the C kernels the way a runtime does --------------------------------------------


def run_c(c, graph: Graph, params, args: list[np.ndarray | None]) -> tuple[int, np.ndarray]:
    """Call the node's C kernel on ``args`` (all node inputs, None when absent): (status, output)."""
    ffi, lib = c
    node = graph.nodes[0]
    out_t = graph.tensor(node.outputs[0])
    out = np.zeros(out_t.shape, out_t.dtype)
    x = args[0]
    sfx = SUFFIX[x.dtype.name]
    p = CParams(ffi, params)
    s = p.struct
    P = (lambda a, ctype=None: ptr(ffi, a, ctype))  # noqa: E731
    o = P(out)
    op = node.op
    if op in (Op.CONV_2D, Op.DEPTHWISE_CONV_2D, Op.FULLY_CONNECTED):
        name = {Op.CONV_2D: "conv2d", Op.DEPTHWISE_CONV_2D: "depthwise_conv2d",
                Op.FULLY_CONNECTED: "fully_connected"}[op]
        bias = args[2] if len(args) > 2 else None
        status = getattr(lib, f"mcuq_{name}_{sfx}")(s, P(x), P(args[1]), P(bias), o)
    elif op in (Op.AVERAGE_POOL_2D, Op.MAX_POOL_2D):
        name = "avg_pool" if op == Op.AVERAGE_POOL_2D else "max_pool"
        status = getattr(lib, f"mcuq_{name}_{sfx}")(s, P(x), o)
    elif op in (Op.ADD, Op.MUL):
        status = getattr(lib, f"mcuq_{op.lower()}_{sfx}")(s, P(x), P(args[1]), o)
    elif op in (Op.QUANTIZE, Op.DEQUANTIZE, Op.PAD, Op.MEAN, Op.LOGISTIC, Op.TANH):
        status = getattr(lib, f"mcuq_{op.lower()}_{sfx}")(s, P(x), o)
    elif op == Op.RESHAPE:
        status = lib.mcuq_reshape(s, P(x), o)
    elif op == Op.CONCATENATION:
        fn = getattr(lib, f"mcuq_concatenation_{sfx}")
        status = next((st for k, a in enumerate(args) if (st := fn(s, k, P(a), o)) != 0), 0)
    elif op == Op.SOFTMAX:
        status = getattr(lib, "mcuq_softmax_s8" if out_t.dtype == "int8" else "mcuq_softmax_s8_s16")(s, P(x), o)
    else:
        raise AssertionError(f"no kernel for {op}")
    return status, out


def node_args(case: Case) -> list[np.ndarray | None]:
    feeds = iter(case.inputs)
    return [None if i < 0 else (case.graph.tensor(i).data if case.graph.tensor(i).is_const else next(feeds))
            for i in case.graph.nodes[0].inputs]


def stored_case(case: Case) -> tuple[object, list[np.ndarray | None], np.ndarray]:
    """A one-node case's params, its args as pack stores them (filters without their constant
    channels' rows: mcuq.pack.prune_filters) and the simulator's output from the model's args."""
    node = case.graph.nodes[0]
    prepare, evaluate = SIMULATOR[node.op]
    params = prepare(case.graph, node)
    args = node_args(case)
    stored = prune_filters(case.graph, [params])
    return params, [stored.get(t, a) for t, a in zip(node.inputs, args)], evaluate(params, args)


def first_mismatch(kernel: str, k: int, got: np.ndarray, want: np.ndarray) -> str | None:
    """(op, case, index, got, expected) of the first differing element, or None."""
    if got.dtype != want.dtype or got.shape != want.shape:
        return f"{kernel} case {k}: got {got.dtype}{list(got.shape)}, expected {want.dtype}{list(want.shape)}"
    if np.array_equal(got, want):
        return None
    idx = tuple(int(i) for i in np.argwhere(got != want)[0])
    n_bad = int(np.count_nonzero(got != want))
    return f"{kernel} case {k} index {idx}: got {got[idx]}, expected {want[idx]} ({n_bad} of {got.size} differ)"


def pow2_case(kernel: str, k: int) -> bool:
    """Every fourth wide case has power-of-two scales (the shift-only requantization)."""
    return kernel in WIDE_GENERATORS and k % 4 == 3


def seeded_cases(kernel: str, count: int):
    """(k, case, params, args, expected output) of ``kernel``'s first ``count`` seeded cases (the
    same on the host and on the target)."""
    gens = {**GENERATORS, **WIDE_GENERATORS}
    rng = np.random.default_rng([7, sorted(gens).index(kernel)])
    for k in range(count):
        case = gens[kernel](Builder(rng, pow2_case(kernel, k)), k)
        node = case.graph.nodes[0]
        prepare, evaluate = SIMULATOR[node.op]
        params = prepare(case.graph, node)
        args = node_args(case)
        yield k, case, params, args, evaluate(params, args)


def check_kernel(c, kernel: str, cases: int) -> None:
    for k, case, params, args, want in seeded_cases(kernel, cases):
        if pow2_case(kernel, k):
            assert params.shift_only, f"{kernel} case {k}: power-of-two scales, yet not shift_only"
        status, got = run_c(c, case.graph, params, args)
        assert status == 0, f"{kernel} case {k}: status {status}"
        assert (msg := first_mismatch(kernel, k, got, want)) is None, msg


@pytest.mark.parametrize("kernel", sorted(GENERATORS))
def test_kernel_matches_simulator(c, kernel: str) -> None:
    check_kernel(c, kernel, CASES)


@pytest.mark.parametrize("kernel", sorted(WIDE_GENERATORS))
def test_wide_kernel_matches_simulator(c, kernel: str) -> None:
    check_kernel(c, kernel, CASES)


@pytest.mark.parametrize("kernel", sorted({**GENERATORS, **WIDE_GENERATORS}))
def test_dsp_kernel_matches_simulator(c_dsp, kernel: str) -> None:
    """The DSP-extension paths (host twins of the intrinsics) equal the simulator too."""
    check_kernel(c_dsp, kernel, CASES)


def test_kernels_report_contract_violations(c) -> None:
    """MCUQ_ERR_PARAMS / MCUQ_ERR_RANGE where the contract says so."""
    ffi, lib = c
    b = Builder(np.random.default_rng(1))
    case = gen_conv(b, 1, "int8")
    params = SIMULATOR[Op.CONV_2D][0](case.graph, case.graph.nodes[0])
    status, _ = run_c(c, case.graph, replace(params, accumulator_bits=64), node_args(case))
    assert status == lib.MCUQ_ERR_PARAMS

    case = gen_quantize(b, 1, "int8", "int16")
    params = SIMULATOR[Op.QUANTIZE][0](case.graph, case.graph.nodes[0])
    assert run_c(c, case.graph, replace(params, output_bits=12), node_args(case))[0] == lib.MCUQ_ERR_PARAMS

    # float input beyond any quotient the host rule defines: saturation, NaN the type minimum
    x = np.array([np.inf, -np.inf, 3e38, -3e38, np.nan], np.float32)
    q = replace(params, size=x.size, output_bits=8, scale=0.5, output_offset=3)
    out = np.zeros(x.size, np.int8)
    assert lib.mcuq_quantize_f32(CParams(ffi, q).struct, ptr(ffi, x), ptr(ffi, out)) == lib.MCUQ_OK
    assert out.tolist() == [127, -128, 127, -128, -128]

    case = gen_binary(b, 0, "int8", Op.ADD)
    params = SIMULATOR[Op.ADD][0](case.graph, case.graph.nodes[0])
    bad = replace(params, input2_dims=(1, 1, 1, 5, 3, 4))
    assert run_c(c, case.graph, bad, node_args(case))[0] == lib.MCUQ_ERR_PARAMS

    case = gen_concatenation(b, 0, "int8")
    params = SIMULATOR[Op.CONCATENATION][0](case.graph, case.graph.nodes[0])
    x = node_args(case)[0]
    out = np.zeros(case.graph.tensor(case.graph.nodes[0].outputs[0]).shape, np.int8)
    status = lib.mcuq_concatenation_s8(CParams(ffi, params).struct, params.num_inputs, ptr(ffi, x),
                                       ptr(ffi, out))
    assert status == lib.MCUQ_ERR_PARAMS

    # a row of 5000 equal values: the sum of exponentials needs a shift above 31 (TFLM aborts)
    b = Builder(np.random.default_rng(2))
    x = b.feed((1, 5000), "int8", 0.1, 0, np.zeros(5000))
    y = b.tensor((1, 5000), "int8", 1 / 256, -128)
    case = b.case(Op.SOFTMAX, [x], y, {"beta": 1.0})
    params = SIMULATOR[Op.SOFTMAX][0](case.graph, case.graph.nodes[0])
    with pytest.raises(UnsupportedOpError, match="shift"):
        SIMULATOR[Op.SOFTMAX][1](params, node_args(case))
    assert run_c(c, case.graph, params, node_args(case))[0] == lib.MCUQ_ERR_RANGE


# ---- the requantize header against mcuq.fixedpoint -------------------------------------------


def _call(c, name: str, *arrays: np.ndarray) -> np.ndarray:
    ffi, lib = c
    arrays = [np.ascontiguousarray(a) for a in arrays]
    out = np.zeros(arrays[0].size, np.int32)
    getattr(lib, f"t_{name}")(*(ptr(ffi, a) for a in arrays), ptr(ffi, out), out.size)
    return out


def _assert_equal(what: str, args: tuple[np.ndarray, ...], got: np.ndarray, want: np.ndarray) -> None:
    bad = np.flatnonzero(got != want)
    assert not bad.size, (f"{what}{tuple(int(a[bad[0]]) for a in args)}: got {got[bad[0]]}, "
                          f"expected {want[bad[0]]} ({bad.size} of {got.size} differ)")


def test_requantize_equals_fixedpoint_mbqm(c) -> None:
    rng = np.random.default_rng(3)
    n = 200_000
    extremes = np.array([-(1 << 31), -(1 << 31) + 1, -(1 << 30), -1, 0, 1, (1 << 30), (1 << 31) - 1])
    x = np.concatenate([np.repeat(extremes, 62 * 4), rng.integers(-(1 << 31), 1 << 31, n)]).astype(np.int32)
    special_m = np.array([0, 1 << 30, (1 << 31) - 1, (1 << 30) + 1])
    m = np.where(rng.random(x.size) < 0.2, rng.choice(special_m, x.size),
                 rng.integers(1 << 30, 1 << 31, x.size)).astype(np.int32)
    m[: extremes.size * 62 * 4] = np.tile(np.repeat(special_m, 62), extremes.size)
    shift = rng.integers(-31, 31, x.size).astype(np.int32)
    shift[: extremes.size * 62 * 4] = np.tile(np.arange(-31, 31), extremes.size * 4)
    _assert_equal("mcuq_requantize", (x, m, shift), _call(c, "requantize", x, m, shift), mbqm(x, m, shift))


def _int32_cases(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, shift): every shift in [-31, 30] against the int32 extremes, then random pairs."""
    extremes = np.array([-(1 << 31), -(1 << 31) + 1, -(1 << 30) - 1, -(1 << 30), -3, -2, -1, 0, 1, 2, 3,
                         (1 << 30), (1 << 31) - 2, (1 << 31) - 1])
    shifts = np.arange(-31, 31)
    x = np.concatenate([np.repeat(extremes, shifts.size), rng.integers(-(1 << 31), 1 << 31, n)])
    shift = np.concatenate([np.tile(shifts, extremes.size), rng.integers(-31, 31, n)])
    return x.astype(np.int32), shift.astype(np.int32)


def test_requantize_pow2_equals_mbqm(c) -> None:
    """Shift-only requantization (multiplier 2^30): C, its Python twin and mbqm agree bit for bit."""
    rng = np.random.default_rng(6)
    x, shift = _int32_cases(rng, 300_000)
    want = mbqm(x, 1 << 30, shift)
    _assert_equal("requantize_pow2 (Python)", (x, shift), requantize_pow2(x, shift), want)
    _assert_equal("mcuq_requantize_pow2", (x, shift), _call(c, "requantize_pow2", x, shift), want)


def test_channel_data_requantize_equals_mbqm(c) -> None:
    """The firmware's per-channel fast requantization (channel_data rows, output offset folded in)
    equals mbqm + output offset, for every shift (fast and fallback) and extreme accumulators."""
    rng = np.random.default_rng(7)
    acc, shift = _int32_cases(rng, 300_000)
    m = np.where(rng.random(acc.size) < 0.1, rng.choice([0, 1 << 30, (1 << 31) - 1], acc.size),
                 rng.integers(1 << 30, 1 << 31, acc.size)).astype(np.int32)
    zp = rng.integers(-128, 128, acc.size).astype(np.int32)
    rows = channel_data(np.zeros(acc.size, np.int64), None, m, shift)
    assert np.array_equal(rows[:, 1], m)
    want = np.clip(mbqm(acc, m, shift) + zp, -(1 << 31), (1 << 31) - 1)  # the row helper clamps to int32
    got = _call(c, "requantize_channel", acc, rows[:, 1].copy(), rows[:, 2].copy(), rows[:, 3].copy(), zp)
    _assert_equal("mcuq_requantize_channel", (acc, m, shift, zp), got, want)
    assert np.count_nonzero(rows[:, 2]) > acc.size // 3  # the fast form is exercised


def test_requantize64_equals_simulator_mbqm64(c) -> None:
    rng = np.random.default_rng(4)
    n = 100_000
    x = np.concatenate([
        np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, -(1 << 47), 1 << 47, -1, 0, 1]),
        rng.integers(-(1 << 40), 1 << 40, n), rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, n // 10),
    ]).astype(np.int64)
    m = np.where(rng.random(x.size) < 0.2, rng.choice([0, 0x7FFF0000 - 1, 0x7FFF0000, (1 << 31) - 1], x.size),
                 rng.integers(1 << 30, 1 << 31, x.size)).astype(np.int32)
    shift = rng.integers(-31, 8, x.size).astype(np.int32)
    _assert_equal("mcuq_requantize64", (x, m, shift), _call(c, "requantize64", x, m, shift), mbqm64(x, m, shift))


def test_gemmlowp_functions_equal_simulator(c) -> None:
    rng = np.random.default_rng(5)
    edges = np.array([-(1 << 31), -(1 << 31) + 1, -(1 << 27), -1, 0])
    a = np.concatenate([edges, -rng.integers(0, 1 << 31, 100_000)]).astype(np.int32)
    for bits in (4, 5):
        got = _call(c, "exp_on_negative_values", a, np.full(a.size, bits, np.int32))
        _assert_equal(f"exp_on_negative_values[{bits}]", (a,), got, nonlinear._exp_on_negative_values(a, bits))
    z = np.concatenate([[0, 1, (1 << 31) - 1], rng.integers(0, 1 << 31, 100_000)]).astype(np.int32)
    _assert_equal("one_over_one_plus_x", (z,), _call(c, "one_over_one_plus_x", z), nonlinear._one_over_one_plus_x(z))
    _assert_equal("newton_one_over_one_plus_x", (z,), _call(c, "newton_one_over_one_plus_x", z),
                  nonlinear._newton_one_over_one_plus_x(z))


def test_no_undefined_behaviour(c_ubsan, capfd) -> None:
    """The kernel cases and the fixed-point comparisons again, built with UBSan: no report."""
    for kernel in sorted(GENERATORS):
        check_kernel(c_ubsan, kernel, UBSAN_CASES)
    test_kernels_report_contract_violations(c_ubsan)
    test_requantize_equals_fixedpoint_mbqm(c_ubsan)
    test_requantize_pow2_equals_mbqm(c_ubsan)
    test_channel_data_requantize_equals_mbqm(c_ubsan)
    test_requantize64_equals_simulator_mbqm64(c_ubsan)
    test_gemmlowp_functions_equal_simulator(c_ubsan)
    reports = [line for line in capfd.readouterr().err.splitlines() if "runtime error" in line]
    assert not reports, f"{len(reports)} UBSan report(s), first: {reports[0]}"


def test_dsp_paths_have_no_undefined_behaviour(tmp_path_factory, capfd) -> None:
    """The DSP paths (host twins of the intrinsics) under UBSan: no report."""
    try:
        c_dsp_ubsan = build(tmp_path_factory.mktemp("kernels_dsp_ubsan"), sanitize=True, dsp=True)
    except Exception as e:  # noqa: BLE001 - any build failure means no sanitizer here
        pytest.skip(f"no UBSan build: {e}")
    for kernel in sorted({**GENERATORS, **WIDE_GENERATORS}):
        check_kernel(c_dsp_ubsan, kernel, UBSAN_CASES)
    reports = [line for line in capfd.readouterr().err.splitlines() if "runtime error" in line]
    assert not reports, f"{len(reports)} UBSan report(s), first: {reports[0]}"


# ---- on the emulated boards ---------------------------------------------------------------------

def test_pack_knows_which_layers_need_the_plain_fallbacks(tmp_path) -> None:
    """mcuq.pack.takes_dsp_path mirrors the kernels' choice: built with every plain fallback left
    out (-DMCUQ_PLAIN_<KERNEL>=0, as `mcuq build` does when pack says no layer needs one), the
    DSP twins run exactly the cases pack says take the DSP path (equal to the simulator) and
    refuse the others with MCUQ_ERR_UNSUPPORTED; both kinds occur for every kernel."""
    lib = build(tmp_path, dsp=True, defines=tuple(f"-D{k.upper().replace('MCUQ_', 'MCUQ_PLAIN_', 1)}=0"
                                                  for k in PLAIN_FALLBACKS))
    for kernel in PLAIN_FALLBACKS:
        base = kernel.removeprefix("mcuq_")
        seen = set()
        for name in (base, base + "_wide"):
            for k, case, params, args, want in seeded_cases(name, CASES):
                if node_kernel(case.graph, case.graph.nodes[0]) != kernel:
                    continue
                dsp = takes_dsp_path(kernel, params)
                seen.add(dsp)
                status, got = run_c(lib, case.graph, params, args)
                if dsp:
                    assert status == 0, f"{name} case {k}: pack says DSP path, kernel says {status}"
                    assert (msg := first_mismatch(name, k, got, want)) is None, msg
                else:
                    assert status == -3, f"{name} case {k}: pack says plain fallback, kernel says {status}"
        assert seen == {True, False}, (kernel, seen)


TARGET_KERNELS = ("conv2d_s8", "conv2d_s8_wide", "depthwise_conv2d_s8", "depthwise_conv2d_s8_wide",
                  "fully_connected_s8", "fully_connected_s8_wide", "add_s8", "add_s8_wide", "conv2d_s16",
                  "fully_connected_s16")
TARGET_CASES = 24


def target_cases(kernels: tuple[str, ...], count: int) -> list[tuple[str, int, TargetCase]]:
    """(kernel, case number, case) for the on-target runs, the same seeded cases as on the host."""
    return [(kernel, k, TargetCase(case.graph, params, args, want))
            for kernel in kernels for k, case, params, args, want in seeded_cases(kernel, count)]


@pytest.mark.parametrize("board", ["qemu-m7", "qemu-m4"])
def test_kernels_bit_exact_on_emulator(board, tmp_path) -> None:
    """The kernels as the board's core runs them (DSP paths on M7/M4) equal the simulator on the
    same seeded cases, compared on the target; every case names itself on a mismatch."""
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None:
        pytest.skip("arm-none-eabi-gcc and qemu-system-arm are needed")
    cases = target_cases(TARGET_KERNELS, TARGET_CASES)
    elf = build_image([c for _, _, c in cases], board, tmp_path)
    results = run_image(elf, board, len(cases))
    for (kernel, k, case), res in zip(cases, results):
        assert res.status == 0, f"{board} {kernel} case {k}: status {res.status}"
        if res.first_bad >= 0:
            flat = case.expected.reshape(-1)
            index = res.first_bad // flat.itemsize
            pos = tuple(int(i) for i in np.unravel_index(index, case.expected.shape))
            raise AssertionError(f"{board} {kernel} case {k} index {pos}: differs from the expected {flat[index]}")


# ---- cross-compilation -----------------------------------------------------------------------

BOARD_FLAGS = sorted({b.cflags for b in all_boards()})


@pytest.mark.parametrize("cflags", BOARD_FLAGS, ids=lambda f: "_".join(a.split("=")[1] for a in f if "=" in a))
def test_kernels_compile_for_cortex_m(cflags, tmp_path) -> None:
    """Every kernel builds warning-free with arm-none-eabi-gcc for each board's core and FPU."""
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc is not installed (Debian: gcc-arm-none-eabi)")
    sources = sorted(KERNELS.glob("*.c"))
    subprocess.run(["arm-none-eabi-gcc", *cflags, *STRICT, "-I", str(INCLUDE), "-c", *map(str, sources)],
                   cwd=tmp_path, check=True)
    assert sorted(p.stem for p in tmp_path.glob("*.o")) == sorted(p.stem for p in sources)
