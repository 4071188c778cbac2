"""Row-paired FULLY_CONNECTED filters: pack's layout, its eligibility bound, and the kernel reading
them (mcuq_fully_connected_s8_paired).

A paired weight word holds two rows' weights for two inputs, so one SMLAD sums both rows at once
and the second row's sum is read back from the upper 24 bits of a 32-bit accumulator; pack pairs
a layer only when that cannot overflow (mcuq.pack.PAIR_ROW_BOUND). The cases here get the filter
as pack stores it (mcuq.pack.pair_filters) and must equal the numpy simulator, which runs the
filter as the model holds it, with np.array_equal: plain C, the DSP path over the host twins of
the intrinsics, then the assembly on the emulated Cortex-M7 and M4. Shapes cover 4 to 64 units
(four-row sets), depths of 2 and 0 groups modulo 4 (the assembly's two entries) up to one
column block (1280), ReLU at the int8 clamp, batches of two, and second rows at the bound with
every input at -128.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernel_target import TargetCase, assert_bit_exact_on
from mcuq.ir import Op
from kernels_ffi import CParams, ptr
from mcuq.pack import PAIR_ROW_BOUND, node_kernel, pair_filters, paired_filter, unpaired_filter
from mcuq.simulate.integer import KERNELS as SIMULATOR
from test_kernels import (  # noqa: F401  (c, c_dsp: the session's kernel builds, as fixtures)
    Builder, Case, c, c_dsp, first_mismatch, node_args,
)

UNITS = (4, 8, 12, 16, 20, 32, 64)
DEPTHS = (8, 16, 24, 40, 64, 128, 504, 640, 1280)
CASES = 40
KERNEL = "mcuq_fully_connected_s8_paired"


def test_layout_of_four_rows() -> None:
    """Rows a, b, c, d of 4 inputs: pair (a, b)'s word 0 holds inputs 0 and 2, its word 1 inputs
    1 and 3, each lane a[i] XOR 0x80 then b[i]; then pair (c, d)'s two words (mcuq_kernels.h)."""
    w = np.array([[1, -2, 3, -4], [-5, 6, -7, 127], [-128, 0, 9, 10], [11, -12, 13, -14]], np.int8)
    a, b, c, d = w[0].view(np.uint8) ^ 0x80, w[1].view(np.uint8), w[2].view(np.uint8) ^ 0x80, w[3].view(np.uint8)
    assert paired_filter(w).view(np.uint8).tolist() == [a[0], b[0], a[2], b[2], a[1], b[1], a[3], b[3],
                                                        c[0], d[0], c[2], d[2], c[1], d[1], c[3], d[3]]


@pytest.mark.parametrize("units", UNITS)
@pytest.mark.parametrize("depth", (4, 8, 12, 64))
def test_unpaired_inverts_paired(units: int, depth: int) -> None:
    w = np.random.default_rng([units, depth]).integers(-128, 128, (units, depth)).astype(np.int8)
    p = paired_filter(w)
    assert p.size == w.size and np.array_equal(unpaired_filter(p, units, depth), w)


def gen_paired(b: Builder, k: int, extreme: bool = False) -> Case:
    """A FULLY_CONNECTED pack pairs (symmetric filter, constant or no bias, int8 clamp); ``extreme``: every second row's
    weights at -128 up to the bound and every input -128, outputs scaled to stay unsaturated."""
    r = b.rng
    units, depth = UNITS[k % len(UNITS)], DEPTHS[k % len(DEPTHS)]
    batches = 1 + k % 3 // 2
    if extreme:
        depth = PAIR_ROW_BOUND // 128 - PAIR_ROW_BOUND // 128 % 8
    s_in = b.scale(0.005, 0.1)
    x = b.feed((batches, depth), "int8", s_in, b.zp("int8"),
               np.full((batches, depth), -128) if extreme else None)
    per_channel = r.random() < 0.5
    scales = [b.scale(0.002, 0.02) for _ in range(units)] if per_channel else b.scale(0.002, 0.02)
    values = r.integers(-127, 128, (units, depth)) // (1 if depth < 1000 else 3)  # 1280: under the bound
    if extreme:
        values[1::2] = -128
    w = b.tensor((units, depth), "int8", scales, 0, values)
    bias = -1 if r.random() < 0.2 else b.tensor((units,), "int32", 1e-4, 0, r.integers(-(1 << 14), 1 << 14, units))
    spread = float(np.sqrt(depth)) * 128 * 73 if not extreme else depth * 128 * 128 / 100
    s_out = s_in * float(np.mean(scales)) * spread / 100
    relu = r.random() < 0.5  # with the output zero point at -128: still the int8 clamp
    y = b.tensor((batches, units), "int8", s_out, -128 if relu else b.zp("int8"))
    return b.case(Op.FULLY_CONNECTED, [x, w, bias], y, {"activation": "RELU" if relu else "NONE"})


def paired_cases(count: int, seed: int) -> list[tuple[int, Case, object, list, np.ndarray]]:
    """(k, case, params, args as pack stores them, expected output from the args as the model
    holds them) for ``count`` seeded cases, every fifth one extreme."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        case = gen_paired(Builder(rng), k, extreme=k % 5 == 4)
        node = case.graph.nodes[0]
        prepare, evaluate = SIMULATOR[node.op]
        params = prepare(case.graph, node)
        paired = pair_filters(case.graph)
        args = node_args(case)
        stored = [paired.get(t, a) for t, a in zip(node.inputs, args)]
        out.append((k, case, params, stored, evaluate(params, args)))
    return out


def test_cases_are_paired_within_the_bound() -> None:
    """pack pairs every case (the extreme ones sit at most 127 under the bound)."""
    for k, case, *_ in paired_cases(CASES, 3):
        node = case.graph.nodes[0]
        w = case.graph.tensor(node.inputs[1]).data.astype(np.int64)
        assert node_kernel(case.graph, node) == KERNEL, f"case {k} {w.shape} was not paired"
        assert np.abs(w[1::2]).sum(1).max() <= PAIR_ROW_BOUND


def test_what_pack_does_not_pair() -> None:
    """A second row summing to PAIR_ROW_BOUND + 1 in magnitude keeps the layer unpaired (at the
    bound it pairs), and so do units not a multiple of 4, a depth not a multiple of 8 or above
    1280, a bias fed at run time and a clamp narrower than int8 (RELU6)."""
    for extra, units, depth, fed, act, want in ((0, 4, 1024, False, "NONE", True), (1, 4, 1024, False, "NONE", False),
                                                 (0, 6, 1024, False, "NONE", False), (0, 4, 1020, False, "NONE", False),
                                                 (0, 4, 1288, False, "NONE", False), (0, 4, 1024, True, "NONE", False),
                                                 (0, 4, 1024, False, "RELU6", False)):
        b = Builder(np.random.default_rng(0))
        x = b.feed((1, depth), "int8", 0.05, 0)
        values = np.zeros((units, depth), np.int64)
        values[1, :516] = -127
        values[1, 516] = -(PAIR_ROW_BOUND + extra - 516 * 127)
        w = b.tensor((units, depth), "int8", 0.01, 0, values)
        bias = b.feed((units,), "int32", 5e-4, 0) if fed else -1
        y = b.tensor((1, units), "int8", 1.0, 0)
        case = b.case(Op.FULLY_CONNECTED, [x, w, bias], y, {"activation": act})
        kernel = node_kernel(case.graph, case.graph.nodes[0])
        assert (kernel == KERNEL) is want and (w in pair_filters(case.graph)) is want, (extra, units, depth, fed, act)


@pytest.mark.parametrize("build", ["c", "c_dsp"])
def test_paired_kernel_matches_simulator(build: str, request) -> None:
    """Plain C (c) and the DSP path's C twin (c_dsp) on the filter as pack stores it."""
    ffi, lib = request.getfixturevalue(build)
    for k, case, params, stored, want in paired_cases(CASES, 3):
        got, struct = np.zeros(want.shape, want.dtype), CParams(ffi, params)  # struct keeps its arrays alive
        status = lib.mcuq_fully_connected_s8_paired(struct.struct, *(ptr(ffi, a) for a in stored), ptr(ffi, got))
        assert status == 0, f"case {k}: status {status}"
        assert (msg := first_mismatch("fully_connected_s8 paired", k, got, want)) is None, msg


@pytest.mark.parametrize("board", ["qemu-m7", "qemu-m4"])
def test_paired_kernel_bit_exact_on_emulator(board: str, tmp_path) -> None:
    """The assembly (four-row sets) and its C twin as the board's core compiles them."""
    assert_bit_exact_on(board, [(f"case {k}", TargetCase(case.graph, params, stored, want, KERNEL))
                                for k, case, params, stored, want in paired_cases(CASES, 3)], tmp_path)
