"""The overlap contract of firmware/include/mcuq_kernels.h, kernel by kernel: each kernel run on the
host with its output over its input, exactly as the arena planner may place them (windowed ops:
output starting mcuq.plan.min_shift bytes below the input, at that exact distance and rounded up
to the arena's 16-byte alignment; elementwise "in place" ops: output = input), must give the
np.array_equal result of a run into a separate buffer (int4-filter kernels: the simulator's).
Plain and DSP-path builds both; the shapes are those of real networks (3x3 depthwise, 1x1 and
3x3 convolutions, pools, strides, padding)."""

from __future__ import annotations

import numpy as np
import pytest

from dataclasses import replace

from kernels_ffi import CParams, build, ptr
from mcuq.ir import Op
from mcuq.pack import packed_int4
from mcuq.plan import min_shift
from mcuq.simulate.integer import KERNELS as SIMULATOR
from test_kernels import GENERATORS, SUFFIX, Builder, Case, node_args, run_c

CASES = 24
ALIGN = 16


@pytest.fixture(scope="module", params=["plain", "dsp"])
def c(request, tmp_path_factory):
    """The kernels built for the host: plain C paths, or the DSP paths over the intrinsics' twins."""
    return build(tmp_path_factory.mktemp(f"inplace_{request.param}"), dsp=request.param == "dsp")


def _geometry(b: Builder, k: int) -> dict:
    r = b.rng
    kh, kw = [(3, 3), (3, 3), (1, 1), (2, 2), (3, 1), (5, 5)][k % 6]
    stride = [(1, 1), (2, 2), (1, 1), (1, 2)][k % 4]
    dilation = (2, 2) if k % 7 == 5 else (1, 1)
    padding = "SAME" if k % 5 else "VALID"
    h, w = int(r.integers(max(kh * dilation[0], 3), 14)), int(r.integers(max(kw * dilation[1], 3), 14))
    from mcuq.simulate.common import output_size_and_padding
    oh = output_size_and_padding(h, kh, stride[0], dilation[0], padding)[0]
    ow = output_size_and_padding(w, kw, stride[1], dilation[1], padding)[0]
    act = ["RELU", "NONE", "RELU6"][k % 3]
    return {"n": 1 + (k % 9 == 4), "h": h, "w": w, "kh": kh, "kw": kw, "oh": oh, "ow": ow,
            "attrs": {"padding": padding, "stride_h": stride[0], "stride_w": stride[1],
                      "dilation_h": dilation[0], "dilation_w": dilation[1], "activation": act}}


def _scales(b: Builder, n: int) -> list[float]:
    return [b.scale(0.002, 0.02) for _ in range(n)]


def gen_windowed(b: Builder, k: int, op: Op, dtype: str) -> Case:
    """A layer of a real network's shape: channels multiples of 4 (some not), int8 or int16."""
    g = _geometry(b, k)
    ic = int(b.rng.choice([4, 8, 16, 32, 64, 140] if op != Op.CONV_2D else [1, 3, 4, 8, 16, 32]))
    s_in = b.scale(0.01, 0.1)
    zp = b.zp(dtype)
    x = b.feed((g["n"], g["h"], g["w"], ic), dtype, s_in, zp)
    if op in (Op.AVERAGE_POOL_2D, Op.MAX_POOL_2D):
        g["attrs"] = {k2: v for k2, v in g["attrs"].items() if not k2.startswith("dilation")}
        if g["attrs"]["padding"] == "VALID" or (g["kh"], g["kw"]) == (1, 1):
            g["attrs"]["padding"] = "SAME"
        from mcuq.simulate.common import output_size_and_padding
        oh = output_size_and_padding(g["h"], g["kh"], g["attrs"]["stride_h"], 1, "SAME")[0]
        ow = output_size_and_padding(g["w"], g["kw"], g["attrs"]["stride_w"], 1, "SAME")[0]
        y = b.tensor((g["n"], oh, ow, ic), dtype, s_in, zp)
        return b.case(op, [x], y, {**g["attrs"], "filter_h": g["kh"], "filter_w": g["kw"]})
    if op == Op.CONV_2D:
        oc = int(b.rng.choice([4, 8, 16, 24, 64]))
        w = b.weights((oc, g["kh"], g["kw"], ic), _scales(b, oc))
        attrs = g["attrs"]
        taps = g["kh"] * g["kw"] * ic
    else:
        oc = ic
        w = b.weights((1, g["kh"], g["kw"], oc), _scales(b, oc), axis=3)
        attrs = {**g["attrs"], "depth_multiplier": 1}
        taps = g["kh"] * g["kw"]
    bias_type = "int32" if dtype == "int8" else "int64"
    bias = b.tensor((oc,), bias_type, 1e-4, 0, b.rng.integers(-(1 << 12), 1 << 12, oc))
    std = s_in * 0.01 * (74.0 if dtype == "int8" else 18900.0) * 74.0 * taps ** 0.5
    y = b.tensor((g["n"], g["oh"], g["ow"], oc), dtype, float(np.float32(3 * std / np.iinfo(dtype).max)),
                 b.zp(dtype))
    return b.case(op, [x, w, bias], y, attrs)


def with_int4_filter(case: Case, rng: np.random.Generator) -> Case:
    """The case with its filter made int4 (values in [-8, 7]) and a 16 times finer output scale."""
    g, node = case.graph, case.graph.nodes[0]
    w, y = g.tensor(node.inputs[1]), g.tensor(node.outputs[0])
    tensors = list(g.tensors)
    tensors[w.index] = replace(w, dtype="int4", data=rng.integers(-8, 8, w.shape).astype(np.int8))
    tensors[y.index] = replace(y, quant=replace(y.quant, scale=tuple(v / 16 for v in y.quant.scale)))
    return Case(replace(g, tensors=tuple(tensors)), case.inputs)


WINDOWED = {f"{name}_{SUFFIX[t]}": (op, t) for name, op in (
    ("conv2d", Op.CONV_2D), ("depthwise_conv2d", Op.DEPTHWISE_CONV_2D), ("avg_pool", Op.AVERAGE_POOL_2D),
    ("max_pool", Op.MAX_POOL_2D)) for t in ("int8", "int16")}
WINDOWED |= {"conv2d_s8_s4": (Op.CONV_2D, "int4"), "depthwise_conv2d_s8_s4": (Op.DEPTHWISE_CONV_2D, "int4")}
ELEMENTWISE = ["add_s8", "add_s16", "mul_s8", "mul_s16", "logistic_s8", "tanh_s8", "quantize_s8_to_s8",
               "quantize_s16_to_s16"]


def run_overlapped(c, case: Case, params, out_start: int, in_start: int, size: int) -> tuple[int, np.ndarray]:
    """Run the node's kernel with input 0 at byte in_start and the output at out_start of one
    buffer (16-byte aligned base); other inputs as usual. (status, output)."""
    ffi, lib = c
    graph, node = case.graph, case.graph.nodes[0]
    args = node_args(case)
    x, out_t = args[0], graph.tensor(node.outputs[0])
    raw = np.zeros(size + 2 * ALIGN, np.uint8)
    base = -raw.ctypes.data % ALIGN
    buf = raw[base:base + size]
    buf[in_start:in_start + x.nbytes] = np.frombuffer(x.tobytes(), np.uint8)
    out_view = buf[out_start:out_start + out_t.nbytes]
    o = ffi.from_buffer(f"{np.dtype(out_t.dtype).name}_t[]", out_view)
    xin = ffi.from_buffer(f"{x.dtype.name}_t[]", buf[in_start:in_start + x.nbytes])
    s = CParams(ffi, params)
    sfx = SUFFIX[x.dtype.name]
    P = (lambda a: ptr(ffi, a))  # noqa: E731
    op = node.op
    if op in (Op.CONV_2D, Op.DEPTHWISE_CONV_2D):
        name = "conv2d" if op == Op.CONV_2D else "depthwise_conv2d"
        if graph.tensor(node.inputs[1]).dtype == "int4":
            name, sfx, args[1] = f"{name}_s8", "s4", packed_int4(args[1])
        status = getattr(lib, f"mcuq_{name}_{sfx}")(s.struct, xin, P(args[1]), P(args[2]), o)
    elif op in (Op.AVERAGE_POOL_2D, Op.MAX_POOL_2D):
        name = "avg_pool" if op == Op.AVERAGE_POOL_2D else "max_pool"
        status = getattr(lib, f"mcuq_{name}_{sfx}")(s.struct, xin, o)
    elif op in (Op.ADD, Op.MUL):
        status = getattr(lib, f"mcuq_{op.lower()}_{sfx}")(s.struct, xin, P(args[1]), o)
    else:
        status = getattr(lib, f"mcuq_{op.lower()}_{sfx}")(s.struct, xin, o)
    return status, out_view.view(out_t.dtype).reshape(out_t.shape).copy()


@pytest.mark.parametrize("kernel", sorted(WINDOWED))
def test_windowed_kernel_overlapped_at_min_shift(c, kernel):
    op, dtype = WINDOWED[kernel]
    rng = np.random.default_rng([11, sorted(WINDOWED).index(kernel)])
    overlapping = 0
    for k in range(CASES):
        case = gen_windowed(Builder(rng), k, op, "int8" if dtype == "int4" else dtype)
        if dtype == "int4":
            case = with_int4_filter(case, rng)
        node = case.graph.nodes[0]
        shift = min_shift(case.graph, node)
        x_bytes, y_bytes = (case.graph.tensor(t).nbytes for t in (node.inputs[0], node.outputs[0]))
        x_shape = case.graph.tensor(node.inputs[0]).shape
        if shift is None:  # only depthwise layers beyond the one-pass bound are refused
            channels, (_, kh, kw, _) = x_shape[3], case.graph.tensor(node.inputs[1]).shape
            assert op == Op.DEPTHWISE_CONV_2D and (channels % 4 or channels * kh * kw > 1280), kernel
            continue
        params = SIMULATOR[op][0](case.graph, node)
        if dtype == "int4":  # against the simulator (the s8_s4 kernels equal it: tests/test_int4.py)
            want = SIMULATOR[op][1](params, node_args(case))
        else:
            status, want = run_c(c, case.graph, params, node_args(case))
            assert status == 0, f"{kernel} case {k}: status {status}"
        for d in sorted({shift, -(-shift // ALIGN) * ALIGN}):
            if d >= y_bytes:
                continue  # no overlap at all
            overlapping += 1
            out_start, in_start = (0, d) if d >= 0 else (-d, 0)
            size = max(in_start + x_bytes, out_start + y_bytes)
            status, got = run_overlapped(c, case, params, out_start, in_start, size)
            assert status == 0, f"{kernel} case {k} shift {d}: status {status}"
            if not np.array_equal(got, want):
                idx = tuple(int(i) for i in np.argwhere(got != want)[0])
                pytest.fail(f"{kernel} case {k} ({case.graph.tensor(node.inputs[0]).shape} -> {want.shape}, "
                            f"{node.attrs}) with the output {d} bytes below the input: index {idx} got "
                            f"{got[idx]}, expected {want[idx]}")
    assert overlapping >= CASES // 2, f"{kernel}: only {overlapping} overlapping runs"


@pytest.mark.parametrize("kernel", ELEMENTWISE)
def test_elementwise_kernel_in_place(c, kernel):
    """Same-shape elementwise kernels with the output buffer equal to input 0."""
    rng = np.random.default_rng([12, ELEMENTWISE.index(kernel)])
    ran = 0
    for k in range(4 * CASES):
        case = GENERATORS[kernel](Builder(rng), k)
        node = case.graph.nodes[0]
        x, y = (case.graph.tensor(t) for t in (node.inputs[0], node.outputs[0]))
        if (x.shape, x.dtype) != (y.shape, y.dtype) or any(
                case.graph.tensor(t).shape != y.shape for t in node.inputs if t >= 0):
            continue
        params = SIMULATOR[node.op][0](case.graph, node)
        status, want = run_c(c, case.graph, params, node_args(case))
        assert status == 0
        status, got = run_overlapped(c, case, params, 0, 0, x.nbytes)
        assert status == 0 and np.array_equal(got, want), f"{kernel} case {k}: in place differs"
        ran += 1
    assert ran >= 4, f"{kernel}: only {ran} same-shape cases"
