"""Constant channels: an int8 CONV_2D output channel whose filter row is all zero (a pruned
channel: vww_96_int8 has 971) outputs one value whatever the input. Pack gives it the channel_data
row constant_row(y) (mcuq.simulate.conv) and leaves its filter row out of flash
(mcuq.pack.prune_filters); the firmware stores y without reading a weight.

The cases are one-node convolutions with a random subset of zeroed filter rows (none, some, all),
1x1 at stride 1 over pixel counts of every remainder modulo 4 (the 4-row blocks and the 1-row
leftovers), general windows (some of 360 elements: the chunked path, 32 channels at a time) and every
activation, the bias constant, absent or fed at run time (then nothing is constant: the bias is
unknown at pack time). The kernels get the filter as pack stores it and must equal the numpy
simulator, which runs the model's filter, with np.array_equal: plain C, the DSP path over the
host twins, and the emulated Cortex-M7 and M4.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernel_target import TargetCase, assert_bit_exact_on
from kernels_ffi import CParams, ptr
from mcuq.ir import Op
from mcuq.pack import unpruned_filter
from mcuq.simulate.common import output_size_and_padding
from mcuq.simulate.conv import channel_data, constant_row
from test_kernels import (  # noqa: F401  (c, c_dsp: the session's kernel builds, as fixtures)
    ACTIVATIONS, Builder, Case, c, c_dsp, first_mismatch, stored_case,
)

CASES = 36


def gen_constant(b: Builder, k: int) -> Case:
    """A CONV_2D whose zeroed filter rows are a random subset (every ninth case all of them)."""
    r = b.rng
    one = k % 2 == 0  # 1x1 at stride 1: pixels of every remainder modulo 4
    long = k % 6 == 1  # 3x3 windows of 360 elements: the chunked path
    kh, kw = (1, 1) if one else (3, 3) if long else (int(v) for v in r.integers(1, 4, 2))
    stride = 1 if one else int(r.integers(1, 3))
    h, w = (int(r.integers(1, 9)), int(r.integers(1, 9))) if not one else (1 + k // 2 % 4, int(r.integers(1, 9)))
    padding = "SAME" if one or r.random() < 0.5 else "VALID"
    h, w = max(h, kh), max(w, kw)
    ic = int(r.choice([4, 8, 16, 3, 6])) if one else 40 if long else int(r.integers(1, 9))
    oc = int(r.integers(33, 80)) if long else int(r.integers(1, 25))  # long: several chunks of 32 channels
    oh = output_size_and_padding(h, kh, stride, 1, padding)[0]
    ow = output_size_and_padding(w, kw, stride, 1, padding)[0]
    s_in = b.scale(0.005, 0.1)
    x = b.feed((1, h, w, ic), "int8", s_in, b.zp("int8"))
    scales = [b.scale(0.002, 0.02) for _ in range(oc)]
    values = r.integers(-127, 128, (oc, kh, kw, ic))
    dead = r.random(oc) < (1.0 if k % 9 == 4 else 0.5)
    values[dead] = 0
    weights = b.tensor((oc, kh, kw, ic), "int8", scales, 0, values)
    if k % 6 == 5:
        bias = b.feed((oc,), "int32", 1e-4, 0, r.integers(-(1 << 14), 1 << 14, oc))
    elif k % 6 == 3:
        bias = -1
    else:  # some biases far out, so that constant outputs reach the clamp
        bias = b.tensor((oc,), "int32", 1e-4, 0, r.integers(-(1 << 14), 1 << 14, oc) * r.choice([1, 1, 4096], oc))
    s_out = s_in * float(np.mean(scales)) * 74 * 74 * (kh * kw * ic) ** 0.5 / 40
    y = b.tensor((1, oh, ow, oc), "int8", s_out, b.zp("int8"))
    attrs = {"padding": padding, "stride_h": stride, "stride_w": stride, "dilation_h": 1, "dilation_w": 1,
             "activation": str(r.choice(ACTIVATIONS))}
    return b.case(Op.CONV_2D, [x, weights, bias], y, attrs)


def cases(seed: int = 11) -> list[tuple[int, Case, object, list, np.ndarray, np.ndarray]]:
    """(k, case, params, args as pack stores them, expected output from the model's args, mask of
    zeroed filter rows) per seeded case."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(CASES):
        case = gen_constant(Builder(rng), k)
        params, stored, want = stored_case(case)
        w = case.graph.tensor(case.graph.nodes[0].inputs[1]).data
        out.append((k, case, params, stored, want, ~w.reshape(w.shape[0], -1).any(1)))
    return out


def test_pack_marks_the_constant_channels() -> None:
    """Zeroed rows (with a bias known at pack time) get constant_row(y), y the simulator's output
    in that channel at every pixel, and flash holds the filter without them (unpruned_filter()
    gives the model's back); the other rows stay channel_data()'s; shifts_fast is 0 when a row is
    constant. A fed bias leaves every row and the filter as they are."""
    seen = 0
    for k, case, p, args, want, zero in cases():
        bias = args[2] if len(args) > 2 else None
        w = case.graph.tensor(case.graph.nodes[0].inputs[1]).data
        plain = channel_data(p.input_offset * w.reshape(len(zero), -1).astype(np.int64).sum(1),
                             bias if p.bias_folded else None, p.multiplier, p.shift)
        marked = zero & p.bias_folded
        assert np.array_equal(args[1], w[~marked]), f"case {k}"
        if p.bias_folded:
            assert np.array_equal(unpruned_filter(args[1], w), w), f"case {k}"
        assert np.array_equal(p.channel_data[~marked], plain[~marked]), f"case {k}"
        if marked.any():
            y = want[..., marked].reshape(-1, marked.sum())
            assert (y == y[0]).all(), f"case {k}: a zeroed channel's output varies"
            assert np.array_equal(p.channel_data[marked], constant_row(y[0], p.output_offset)), f"case {k}"
            assert not p.shifts_fast, f"case {k}"
            seen += 1
    assert seen >= CASES // 2


@pytest.mark.parametrize("build", ["c", "c_dsp"])
def test_constant_channels_match_simulator(build: str, request) -> None:
    """Plain C and the DSP path's C twins on the filter as pack stores it."""
    ffi, lib = request.getfixturevalue(build)
    for k, case, params, args, want, zero in cases():
        got, struct = np.zeros(want.shape, want.dtype), CParams(ffi, params)
        status = lib.mcuq_conv2d_s8(struct.struct, *(ptr(ffi, a) for a in args), ptr(ffi, got))
        assert status == 0, f"case {k}: status {status}"
        assert (msg := first_mismatch("conv2d_s8 constant", k, got, want)) is None, msg


@pytest.mark.parametrize("board", ["qemu-m7", "qemu-m4"])
def test_constant_channels_bit_exact_on_emulator(board: str, tmp_path) -> None:
    """The assembly and C twins as the core runs them."""
    assert_bit_exact_on(board, [(f"case {k}", TargetCase(case.graph, params, args, want))
                                for k, case, params, args, want, _ in cases()], tmp_path)
