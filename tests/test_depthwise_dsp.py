"""The int8 depthwise kernel's 3x3 DSP paths against the simulator, on shapes chosen to reach each.

mcuq_depthwise_conv2d_s8's DSP path sends a 3x3 layer with the int8 clamp and small enough
requantization terms through run4 (four neighbouring pixels whose six window columns are inside
the image, pad rows read as a column step of 0) and pixel3x3 (every other pixel); a narrow image
(4 or 5 columns, up to 64 channels in fours) through narrow_rows (run4 and pixel3x3 over ring
copies of the input rows with a pad pixel on either side); any other layer (a narrower clamp,
a bias beyond 2^29, a right shift beyond 22, stride_w 3) through the generic tap loop. Each case
below names the part it exercises; outputs must be np.array_equal with the simulator: on the
host (the DSP paths over the portable twins of the instructions, run4's C twin; the narrow
shapes also with the output overlapping the input as the arena planner may place it) and on
the emulated Cortex-M7 and M4 (run4's assembly).
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from kernel_target import TargetCase, build_image, run_image
from mcuq.ir import Op
from mcuq.plan import min_shift
from mcuq.simulate.common import output_size_and_padding
from mcuq.simulate.integer import KERNELS as SIMULATOR
from test_inplace import ALIGN, run_overlapped
from test_kernels import Builder, Case, _out_scale, c_dsp, first_mismatch, node_args, run_c  # noqa: F401

# (name, batches, h, w, channels, (stride_h, stride_w), dilation_h, padding, activation, extra)
SHAPES = [
    ("runs and border pixels", 1, 5, 9, 8, (1, 1), 1, "SAME", "NONE", None),
    ("two batches, three runs a row", 2, 4, 14, 12, (1, 1), 1, "SAME", "NONE", None),
    ("two channel chunks (140 + 8)", 1, 3, 6, 148, (1, 1), 1, "SAME", "NONE", None),
    ("channels 4 + 2 one by one", 1, 6, 11, 6, (1, 1), 1, "VALID", "NONE", None),
    ("stride_h 2, dilation_h 2", 1, 7, 10, 4, (2, 1), 2, "SAME", "NONE", None),
    ("one input row: pad rows above and below", 1, 1, 8, 16, (1, 1), 1, "SAME", "NONE", None),
    ("stride_w 2: single pixels", 1, 5, 9, 20, (1, 2), 1, "SAME", "NONE", None),
    ("stride_w 3: generic path", 1, 5, 11, 8, (1, 3), 1, "SAME", "NONE", None),
    ("RELU6 clamp: generic path", 1, 5, 9, 8, (1, 1), 1, "SAME", "RELU6", None),
    ("bias beyond 2^29: generic path", 1, 5, 9, 8, (1, 1), 1, "SAME", "NONE", "big_bias"),
    ("right shift beyond 22: generic path", 1, 5, 9, 8, (1, 1), 1, "SAME", "NONE", "tiny_scale"),
    ("narrow 25x5x64 (kws): ring runs", 1, 25, 5, 64, (1, 1), 1, "SAME", "NONE", None),
    ("narrow 4x4x64: ring runs", 1, 4, 4, 64, (1, 1), 1, "SAME", "NONE", None),
    ("narrow 30x5x64, two batches: ring across batches", 2, 30, 5, 64, (1, 1), 1, "SAME", "NONE", None),
    ("narrow 11x5x64, stride_h 2: ring rows skipped", 1, 11, 5, 64, (2, 1), 1, "SAME", "NONE", None),
    ("narrow 5x5x12, one input row per pixel row", 1, 5, 5, 12, (1, 1), 1, "SAME", "NONE", None),
    ("narrow 30x6x64: runs inside the image", 1, 30, 6, 64, (1, 1), 1, "SAME", "NONE", None),
    ("narrow 9x6x64 VALID: runs inside the image", 1, 9, 6, 64, (1, 1), 1, "VALID", "NONE", None),
    ("narrow 9x5x64 VALID: 3 columns, no runs", 1, 9, 5, 64, (1, 1), 1, "VALID", "NONE", None),
    ("narrow 6x4x64 VALID: 2 columns", 1, 6, 4, 64, (1, 1), 1, "VALID", "NONE", None),
    ("narrow 5x5x68: more channels than the ring takes", 1, 5, 5, 68, (1, 1), 1, "SAME", "NONE", None),
    ("narrow 6x5x62: channels not in fours", 1, 6, 5, 62, (1, 1), 1, "SAME", "NONE", None),
    ("narrow 9x5x16, dilation_h 2: no ring", 1, 9, 5, 16, (1, 1), 2, "SAME", "NONE", None),
]


def gen_case(b: Builder, k: int) -> Case:
    _, n, h, w, ch, stride, dil_h, padding, act, extra = SHAPES[k]
    oh = output_size_and_padding(h, 3, stride[0], dil_h, padding)[0]
    ow = output_size_and_padding(w, 3, stride[1], 1, padding)[0]
    s_in = b.scale(0.005, 0.1)
    x = b.feed((n, h, w, ch), "int8", s_in, b.zp("int8"))
    scales = [b.scale(0.002, 0.05) for _ in range(ch)]
    wt = b.weights((1, 3, 3, ch), scales, axis=3)
    values = b.rng.integers(-(1 << 14), 1 << 14, ch)
    if extra == "big_bias":
        values[ch // 2] = (1 << 30) + 12345
    bias = b.tensor((ch,), "int32", 1e-4, 0, values)
    s_out = _out_scale(b, "int8", s_in, float(np.mean(scales)), 9)
    if extra == "tiny_scale":
        s_out = float(np.float32(s_in * float(np.mean(scales)) * 2.0 ** 24))
    y = b.tensor((n, oh, ow, ch), "int8", s_out, b.zp("int8"))
    attrs = {"padding": padding, "stride_h": stride[0], "stride_w": stride[1], "dilation_h": dil_h,
             "dilation_w": 1, "activation": act, "depth_multiplier": 1}
    return b.case(Op.DEPTHWISE_CONV_2D, [x, wt, bias], y, attrs)


def generated() -> list[tuple[str, Case, TargetCase]]:
    """(name, case, the case with the simulator's expected output) for every shape, seeded."""
    rng = np.random.default_rng(20261126)
    out = []
    for k, shape in enumerate(SHAPES):
        case = gen_case(Builder(rng), k)
        node = case.graph.nodes[0]
        prepare, evaluate = SIMULATOR[node.op]
        params = prepare(case.graph, node)
        if shape[-1] == "tiny_scale":
            assert min(int(s) for s in np.atleast_1d(params.shift)) < -22, "the case must leave the fast bound"
        args = node_args(case)
        out.append((shape[0], case, TargetCase(case.graph, params, args, evaluate(params, args))))
    return out


def cases() -> list[tuple[str, TargetCase]]:
    """(name, case with the simulator's expected output) for every shape."""
    return [(name, target) for name, _, target in generated()]


def test_dsp_paths_match_simulator_on_host(c_dsp) -> None:
    for k, (name, case) in enumerate(cases()):
        status, got = run_c(c_dsp, case.graph, case.params, case.args)
        assert status == 0, f"{name}: status {status}"
        assert (msg := first_mismatch(name, k, got, case.expected)) is None, msg


def test_narrow_image_with_other_padding_on_host(c_dsp) -> None:
    """A narrow layer whose params pad 0 or 2 columns on the left (no TFLite padding gives that;
    the kernel takes any) leaves the ring path: its windows reach past the ring's columns."""
    name, source, case = next(g for g in generated() if g[0].startswith("narrow 25x5x64"))
    for pad_left in (0, 2):
        params = replace(case.params, pad_left=pad_left)
        want = SIMULATOR[Op.DEPTHWISE_CONV_2D][1](params, case.args)
        status, got = run_c(c_dsp, case.graph, params, case.args)
        assert status == 0, f"{name} pad_left {pad_left}: status {status}"
        assert (msg := first_mismatch(f"{name} pad_left {pad_left}", 0, got, want)) is None, msg


def test_narrow_ring_runs_overlapped_at_min_shift(c_dsp) -> None:
    """The narrow-image path reads ring copies of the input rows: with the output at min_shift
    bytes below the input (and rounded up to the arena's alignment), as the planner may place
    it, the outputs still equal the simulator's."""
    overlapped = 0
    for name, source, case in generated():
        node = case.graph.nodes[0]
        shift = min_shift(case.graph, node)
        x_bytes, y_bytes = (case.graph.tensor(t).nbytes for t in (node.inputs[0], node.outputs[0]))
        if not name.startswith("narrow") or shift is None:
            continue
        for d in sorted({shift, -(-shift // ALIGN) * ALIGN}):
            if d >= y_bytes:
                continue
            out_start, in_start = (0, d) if d >= 0 else (-d, 0)
            size = max(in_start + x_bytes, out_start + y_bytes)
            status, got = run_overlapped(c_dsp, source, case.params, out_start, in_start, size)
            assert status == 0, f"{name} shift {d}: status {status}"
            assert (msg := first_mismatch(f"{name} shift {d}", 0, got, case.expected)) is None, msg
            overlapped += 1
    assert overlapped >= 10, f"only {overlapped} overlapped runs"


@pytest.mark.parametrize("board", ["qemu-m7", "qemu-m4"])
def test_dsp_paths_match_simulator_on_emulator(board, tmp_path) -> None:
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None:
        pytest.skip("arm-none-eabi-gcc and qemu-system-arm are needed")
    named = cases()
    elf = build_image([c for _, c in named], board, tmp_path)
    results = run_image(elf, board, len(named))
    assert len(results) == len(named)
    for (name, _), res in zip(named, results):
        assert res.status == 0 and res.first_bad < 0, (
            f"{board} {name}: status {res.status}, first differing output byte {res.first_bad}")
