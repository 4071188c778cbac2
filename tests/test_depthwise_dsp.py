"""The int8 depthwise kernel's 3x3 DSP paths against the simulator, on shapes chosen to reach each.

mcuq_depthwise_conv2d_s8's DSP path sends a 3x3 layer with the int8 clamp and small enough
requantization terms through run4 (four neighbouring pixels whose six window columns are inside
the image, pad rows read as a column step of 0) and pixel3x3 (every other pixel), and any
other layer (a narrower clamp, a bias beyond 2^29, a right shift beyond 22, stride_w 3) through
the generic tap loop. Each case below names the part it exercises; outputs must be
np.array_equal with the simulator: on the host (the DSP paths over the portable twins of the
instructions, run4's C twin) and on the emulated Cortex-M7 and M4 (run4's assembly).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from kernel_target import TargetCase, build_image, run_image
from mcuq.ir import Op
from mcuq.simulate.common import output_size_and_padding
from mcuq.simulate.integer import KERNELS as SIMULATOR
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


def cases() -> list[tuple[str, TargetCase]]:
    """(name, case with the simulator's expected output) for every shape, seeded."""
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
        out.append((shape[0], TargetCase(case.graph, params, args, evaluate(params, args))))
    return out


def test_dsp_paths_match_simulator_on_host(c_dsp) -> None:
    for k, (name, case) in enumerate(cases()):
        status, got = run_c(c_dsp, case.graph, case.params, case.args)
        assert status == 0, f"{name}: status {status}"
        assert (msg := first_mismatch(name, k, got, case.expected)) is None, msg


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
