"""int8 activations x int4 weights: the firmware's s8_s4 kernels, packing, and a model on qemu-m7.

Kernel cases are test_kernels.py's seeded random graphs with the filter made int4 (values in
[-8, 7]; fully connected per-tensor, as TFLM requires). The C kernels get the filter packed two
per byte as flash holds it (mcuq.pack.packed_int4) and must equal the numpy simulator, which
runs the unpacked values (TFLM's int4 semantics), with np.array_equal: plain C, and the DSP
paths over the host twins of the intrinsics, then on the emulated Cortex-M7 and M4. The same
int4 graphs written as .tflite run in tflite-micro exactly like the simulator. The digits CNN's
pow2 model with searched bitwidths goes pack -> build -> flash -> verify on qemu-m7.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import kernel_target
from kernel_target import TargetCase, build_image, run_image
from kernels_ffi import CParams, build, ptr
from mcuq import pipeline
from mcuq.graphfile import load_graph
from mcuq.hostsim import HostModel
from mcuq.ir import Graph, Op, Quant
from mcuq.pack import packed_int4
from mcuq.plan import min_shift
from mcuq.quant import Budget, EvalData, Scheme, quantize
from mcuq.quant.build import weight_bytes
from mcuq.simulate import run_integer
from mcuq.simulate.common import output_size_and_padding
from mcuq.simulate.integer import KERNELS as SIMULATOR
from mcuq.writer import write_model
from test_kernels import (  # noqa: F401  (c, c_dsp: the session's kernel builds, as fixtures)
    Builder, Case, _out_scale, c, c_dsp, first_mismatch, gen_conv, gen_conv_wide, gen_depthwise, gen_depthwise_wide,
    gen_fully_connected, gen_fully_connected_wide, node_args,
)
from test_inplace import ALIGN, gen_windowed
from test_ops_vs_tflm import build as build_tflm_case
from test_quant import assert_bit_exact_in_tflm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import digits_cnn  # noqa: E402

CASES = 40
TARGET_CASES = 12
def gen_depthwise_big(b: Builder, k: int) -> Case:
    """Depthwise filters of more than 2048 weights (beyond the kernel's unpacked buffer: the
    nibble loop), 3x3 and 5x5 windows, any stride and padding."""
    r = b.rng
    kh, kw = [(3, 3), (5, 5)][k % 2]
    ic = int(r.integers(240, 300))
    stride = [int(v) for v in r.integers(1, 3, 2)]
    padding = "SAME" if r.random() < 0.7 else "VALID"
    h, w = max(int(r.integers(1, 5)), kh), max(int(r.integers(1, 5)), kw)
    oh = output_size_and_padding(h, kh, stride[0], 1, padding)[0]
    ow = output_size_and_padding(w, kw, stride[1], 1, padding)[0]
    s_in = b.scale(0.005, 0.1)
    x = b.feed((1, h, w, ic), "int8", s_in, b.zp("int8"))
    scales = [b.scale(0.002, 0.05) for _ in range(ic)]
    wt = b.weights((1, kh, kw, ic), scales, axis=3)
    bias = b.tensor((ic,), "int32", 1e-4, 0, r.integers(-(1 << 14), 1 << 14, ic))
    s_out = _out_scale(b, "int8", s_in, float(np.mean(scales)), kh * kw)
    y = b.tensor((1, oh, ow, ic), "int8", s_out, b.zp("int8"))
    attrs = {"padding": padding, "stride_h": stride[0], "stride_w": stride[1], "dilation_h": 1, "dilation_w": 1,
             "activation": b.act(), "depth_multiplier": 1}
    return b.case(Op.DEPTHWISE_CONV_2D, [x, wt, bias], y, attrs)


NAMES = {Op.CONV_2D: "conv2d", Op.DEPTHWISE_CONV_2D: "depthwise_conv2d", Op.FULLY_CONNECTED: "fully_connected"}
GENERATORS = {
    "conv2d": lambda b, k: gen_conv(b, k, "int8"),
    "conv2d_wide": gen_conv_wide,
    "depthwise_conv2d": lambda b, k: gen_depthwise(b, k, "int8"),
    "depthwise_conv2d_wide": gen_depthwise_wide,
    "depthwise_conv2d_big": gen_depthwise_big,
    "fully_connected": lambda b, k: gen_fully_connected(b, k, "int8"),
    "fully_connected_wide": gen_fully_connected_wide,
}
HAS_ARM = shutil.which("arm-none-eabi-gcc") is not None and shutil.which("qemu-system-arm") is not None


def as_int4(case: Case, rng: np.random.Generator, fill: int | None = None) -> Case:
    """The case with an int4 filter (uniform in [-8, 7], or all ``fill``) and an output scale 16
    times finer (int4 products are about 16 times smaller than int8 ones)."""
    g = case.graph
    node = g.nodes[0]
    w, y = g.tensor(node.inputs[1]), g.tensor(node.outputs[0])
    q = w.quant
    if node.op == Op.FULLY_CONNECTED and q.per_channel:
        q = Quant(q.scale[:1], q.zero_point[:1], 0)
    data = rng.integers(-8, 8, w.shape) if fill is None else np.full(w.shape, fill)
    tensors = list(g.tensors)
    tensors[w.index] = replace(w, dtype="int4", quant=q, data=data.astype(np.int8))
    tensors[y.index] = replace(y, quant=replace(y.quant, scale=tuple(s / 16 for s in y.quant.scale)))
    return Case(replace(g, tensors=tuple(tensors)), case.inputs)


def int4_cases(kernel: str, count: int) -> list[tuple[Case, object, list, np.ndarray]]:
    """(case, params, node args, simulator output) for ``count`` seeded cases; every fourth has
    power-of-two scales (shift-only requantization)."""
    rng = np.random.default_rng([11, sorted(GENERATORS).index(kernel)])
    out = []
    for k in range(count):
        case = as_int4(GENERATORS[kernel](Builder(rng, pow2=k % 4 == 3), k), rng)
        node = case.graph.nodes[0]
        prepare, evaluate = SIMULATOR[node.op]
        params = prepare(case.graph, node)
        args = node_args(case)
        out.append((case, params, args, evaluate(params, args)))
    return out


def run_s4(c, graph: Graph, params, args: list) -> tuple[int, np.ndarray]:
    """mcuq_<op>_s8_s4 on args, the filter packed two per byte: (status, output)."""
    ffi, lib = c
    node = graph.nodes[0]
    out_t = graph.tensor(node.outputs[0])
    out = np.zeros(out_t.shape, np.int8)
    cp = CParams(ffi, params)
    bias = args[2] if len(args) > 2 else None
    fn = getattr(lib, f"mcuq_{NAMES[node.op]}_s8_s4")
    status = fn(cp.struct, ptr(ffi, args[0]), ptr(ffi, packed_int4(args[1])), ptr(ffi, bias), ptr(ffi, out))
    return status, out


def check(c, kernel: str, cases) -> None:
    for k, (case, params, args, want) in enumerate(cases):
        status, got = run_s4(c, case.graph, params, args)
        assert status == 0, f"{kernel} int4 case {k}: status {status}"
        assert (msg := first_mismatch(f"{kernel} int4", k, got, want)) is None, msg


def test_packed_int4_is_the_tflite_layout() -> None:
    """Low nibble first, two's complement, an odd count padded with a zero nibble."""
    v = np.array([1, -1, -8, 7, 3], np.int8)
    assert packed_int4(v).tolist() == [0xF1, 0x78, 0x03]
    assert packed_int4(v).dtype == np.uint8


UNPACKED_BYTES = 1280  # filters up to this many weights run unpacked by the int8 kernel (mcuq_support_s4.h)


@pytest.mark.parametrize("kernel", sorted(GENERATORS))
def test_int4_kernel_matches_simulator(c, kernel: str) -> None:
    cases = int4_cases(kernel, CASES)
    if kernel in ("conv2d_wide", "fully_connected_wide", "depthwise_conv2d_big"):  # the kernels' own int4 loops
        large = sum(case.graph.tensor(case.graph.nodes[0].inputs[1]).size > UNPACKED_BYTES for case, *_ in cases)
        assert large >= CASES // 4, f"{kernel}: only {large} of {CASES} filters beyond the unpacked buffer"
    check(c, kernel, cases)


@pytest.mark.parametrize("kernel", sorted(GENERATORS))
def test_int4_dsp_kernel_matches_simulator(c_dsp, kernel: str) -> None:
    """The DSP paths (nibbles unpacked by AND into 4096-scaled lanes, host twins of SMLAD)."""
    check(c_dsp, kernel, int4_cases(kernel, CASES))


@pytest.mark.parametrize("kernel", ["conv2d_wide", "fully_connected_wide"])
def test_int4_extreme_sums_are_exact(c, c_dsp, kernel: str) -> None:
    """Every weight -8 and every input -128: the largest product (1024) in every MAC, over rows
    of 504+ elements (several 4096-scaled chunks on the DSP path) and odd row starts."""
    rng = np.random.default_rng(5)
    cases = []
    for k in range(12):
        base = GENERATORS[kernel](Builder(rng), k)
        base = Case(base.graph, [np.full_like(a, -128 if a.dtype == np.int8 else 0) for a in base.inputs])
        case = as_int4(base, rng, fill=-8)
        node = case.graph.nodes[0]
        prepare, evaluate = SIMULATOR[node.op]
        params = prepare(case.graph, node)
        args = node_args(case)
        cases.append((case, params, args, evaluate(params, args)))
    check(c, kernel, cases)
    check(c_dsp, kernel, cases)


def test_int4_dsp_paths_have_no_undefined_behaviour(tmp_path_factory, capfd) -> None:
    """The s8_s4 DSP paths (host twins of the intrinsics) under UBSan: no report."""
    try:
        c_dsp_ubsan = build(tmp_path_factory.mktemp("kernels_s4_dsp_ubsan"), sanitize=True, dsp=True)
    except Exception as e:  # noqa: BLE001 - any build failure means no sanitizer here
        pytest.skip(f"no UBSan build: {e}")
    for kernel in sorted(GENERATORS):
        check(c_dsp_ubsan, kernel, int4_cases(kernel, 8))
    reports = [line for line in capfd.readouterr().err.splitlines() if "runtime error" in line]
    assert not reports, f"{len(reports)} UBSan report(s), first: {reports[0]}"


def test_int4_graphs_run_in_tflm_like_the_simulator(c) -> None:
    """TFLM runs int4 filters as the simulator does (every tensor), and so does the C kernel:
    test_ops_vs_tflm's single-op models (built for TFLM's checks) with int4 filters."""
    for op in NAMES:
        for i in range(8):
            base = build_tflm_case(op, i)
            case = as_int4(Case(base.graph, list(base.inputs)), np.random.default_rng(i))
            assert_bit_exact_in_tflm(case.graph, [case.inputs])
            node = case.graph.nodes[0]
            prepare, evaluate = SIMULATOR[node.op]
            params = prepare(case.graph, node)
            check(c, f"{op} (TFLM case)", [(case, params, node_args(case), evaluate(params, node_args(case)))])


@pytest.mark.skipif(not HAS_ARM, reason="arm-none-eabi-gcc and qemu-system-arm are needed")
@pytest.mark.parametrize("board", ["qemu-m7", "qemu-m4"])
def test_int4_kernels_bit_exact_on_emulator(board, tmp_path, monkeypatch) -> None:
    """The s8_s4 kernels as the board's core runs them (DSP paths) equal the simulator."""
    monkeypatch.setitem(kernel_target._CTYPE, "uint8", "uint8_t")
    monkeypatch.setitem(kernel_target._SUFFIX, "int8", "s8_s4")  # every case here has an int4 filter
    cases = []
    for kernel in sorted(GENERATORS):
        for k, (case, params, args, want) in enumerate(int4_cases(kernel, TARGET_CASES)):
            packed = [a if i != 1 else packed_int4(a) for i, a in enumerate(args)]
            cases.append((kernel, k, TargetCase(case.graph, params, packed, want)))
    results = run_image(build_image([t for _, _, t in cases], board, tmp_path), board, len(cases))
    for (kernel, k, _), res in zip(cases, results):
        assert res.status == 0 and res.first_bad == -1, f"{board} {kernel} int4 case {k}: {res}"


@pytest.mark.parametrize("op", [Op.CONV_2D, Op.DEPTHWISE_CONV_2D])
@pytest.mark.parametrize("dsp", [False, True])
def test_int4_kernels_overlapped_at_min_shift(c, c_dsp, op, dsp) -> None:
    """The overlap contract (mcuq_kernels.h): output starting mcuq.plan.min_shift bytes below the
    input (exactly, and rounded up to the arena's alignment) gives the separate-buffer result."""
    ffi, lib = c_dsp if dsp else c
    fn = getattr(lib, f"mcuq_{NAMES[op]}_s8_s4")
    rng = np.random.default_rng([13, int(dsp), list(NAMES).index(op)])
    overlapping = 0
    for k in range(16):
        case = as_int4(gen_windowed(Builder(rng), k, op, "int8"), rng)
        node = case.graph.nodes[0]
        shift = min_shift(case.graph, node)
        if shift is None:  # depthwise beyond the one-pass bound: never overlapped
            continue
        params = SIMULATOR[op][0](case.graph, node)
        args = node_args(case)
        want = SIMULATOR[op][1](params, args)
        cp, w, bias = CParams(ffi, params), packed_int4(args[1]), args[2]
        x = args[0]
        for d in sorted({shift, -(-shift // ALIGN) * ALIGN}):
            if d >= want.nbytes:
                continue
            overlapping += 1
            out_start, in_start = (0, d) if d >= 0 else (-d, 0)
            raw = np.zeros(max(in_start + x.nbytes, out_start + want.nbytes) + 2 * ALIGN, np.uint8)
            buf = raw[-raw.ctypes.data % ALIGN:]
            buf[in_start:in_start + x.nbytes] = x.reshape(-1).view(np.uint8)
            status = fn(cp.struct, ffi.from_buffer("int8_t[]", buf[in_start:]), ptr(ffi, w), ptr(ffi, bias),
                        ffi.from_buffer("int8_t[]", buf[out_start:]))
            got = buf[out_start:out_start + want.nbytes].view(np.int8).reshape(want.shape)
            assert status == 0 and (msg := first_mismatch(f"{op} int4 overlapped by {d}", k, got, want)) is None, msg
    assert overlapping >= 8, f"{op}: only {overlapping} overlapping runs"


# ---- a whole int4 model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_int4(tmp_path_factory) -> tuple[Path, Graph, int]:
    """The digits CNN, pow2 with the per-layer 8/4-bit search (max drop 1 point) as in
    bench/accuracy.py, written as .tflite and packed for qemu-m7; (pack dir, graph, 8-bit bytes)."""
    rng = np.random.default_rng(0)
    xtr, ytr, xte, yte = digits_cnn.load_digits_split(0)
    net = digits_cnn.Net(rng)
    net.train(xtr, ytr, 12, rng)
    r = quantize(net.to_graph(), [xtr[:256, None]], Scheme.POW2, eval_data=EvalData((xte[:, None],), yte),
                 budget=Budget(max_drop=1.0))
    work = tmp_path_factory.mktemp("digits_int4")
    model = work / "digits_int4.tflite"
    model.write_bytes(write_model(r.graph))
    pipeline.pack(model, "qemu-m7", work / "pack", pipeline.QuantOptions(), warn=lambda s: None)
    return work / "pack", r.graph, r.report.bitwidth.weight_bytes_8bit


def test_int4_model_packs_into_half_bytes(digits_int4) -> None:
    pack, qg, bytes_8bit = digits_int4
    graph = load_graph(pack / "graph")
    four = [t for t in graph.tensors if t.dtype == "int4"]
    assert four, "the search put no layer at 4 bits"
    src = (pack / "src" / "mcuq_model.c").read_text()
    for t in four:
        assert f"static MCUQ_CONST uint8_t mcuq_t{t.index}[{(t.size + 1) // 2}]" in src, t.name
    manifest = (pack / "manifest.json").read_text()
    assert f'"weight_bytes": {weight_bytes(qg)}' in manifest and weight_bytes(qg) < 0.7 * bytes_8bit


def test_int4_model_host_c_equals_simulator(digits_int4) -> None:
    """The firmware C on the host (runtime dispatch to the s8_s4 kernels): every tensor."""
    pack, _, _ = digits_int4
    graph = load_graph(pack / "graph")
    host = HostModel(pack)
    rng = np.random.default_rng(3)
    for _ in range(5):
        x = rng.integers(-128, 128, graph.input_tensors()[0].shape).astype(np.int8)
        got, want = host.run([x], all_tensors=True), run_integer(graph, [x], all_tensors=True)
        for t, v in want.items():
            assert np.array_equal(got[t], v), f"tensor {t} '{graph.tensor(t).name}'"


@pytest.mark.skipif(not HAS_ARM, reason="arm-none-eabi-gcc and qemu-system-arm are needed")
def test_int4_model_bit_exact_on_qemu_m7(digits_int4) -> None:
    from test_target import run_on_emulator

    pack, _, _ = digits_int4
    result = run_on_emulator(pack, 3)
    assert result.ok and result.exact == result.samples == 3, result.format_table()
    assert result.board == "qemu-m7" and all(c.count > 0 for c in result.layers)
