"""The Helium (MVE) matrix product of the Cortex-M55 (firmware/kernels/mcuq_matmul_s8_mve.c): 1x1
CONV_2D at stride 1 and FULLY_CONNECTED read their int8 rows in place, other convolutions copy
their windows into rows first (mcuq_conv2d_s8.c conv_mve()); 16 products per VMLAVA.S8 in a
tail-predicated loop, four pixels' sums of a channel requantized as one vector.

The cases run on the emulated Cortex-M55 (qemu-m55) and must equal the numpy simulator byte for
byte: 1x1 convolutions over depths 1 to 300 (multiples of 16 and not: the predicated last turn;
up to 16: the loop-free form), 1 to 40 output channels, pixel counts of every remainder modulo 4
(runs of four, leftover rows), constant channels with their filter rows left out as pack stores
them, every activation, shifts outside the fast range (left shifts, no right shift) beside fast
ones under the int8 clamp (the assembly's runs split around them), a bias fed at run time (the
plain path); other windows (strides, dilation, padding, several images); FULLY_CONNECTED
per-tensor with a filter offset and per-channel, one to three batch rows, depths up to 1300
(past the DSP path's 1280). Nothing of the product may compile for cores without Helium.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from kernel_target import TargetCase, assert_bit_exact_on
from kernels_ffi import INCLUDE, KERNELS, STRICT
from mcuq.boards import load_board
from mcuq.ir import Op
from mcuq.simulate.common import output_size_and_padding
from test_kernels import ACTIVATIONS, Builder, Case, stored_case

DEPTHS = (1, 3, 15, 16, 17, 31, 32, 33, 48, 64, 100, 127, 128, 250, 256, 300)
CASES = 48


def _output_scale(b: Builder, s_in: float, s_w: float, depth: int, k: int) -> float:
    """Mostly ~3 standard deviations of the sum in range; every eighth case a scale so small that
    the shift is positive (a left shift), every eighth other one giving shift -1 or 0."""
    s = s_in * s_w * 74 * 74 * depth ** 0.5 / 40 * b.rng.uniform(0.3, 3)
    if k % 8 == 3:
        return s_in * s_w / 4
    if k % 8 == 7:
        return s_in * s_w * 1.5
    return float(np.float32(s))


def gen_1x1(b: Builder, k: int) -> Case:
    """A 1x1 stride-1 CONV_2D; some filter rows zero (constant channels), every ninth case all."""
    r = b.rng
    depth = DEPTHS[k % len(DEPTHS)]
    oc = int(r.integers(1, 41))
    n, h, w = 1 + k % 5 // 4, 1 + k % 3, int(r.integers(1, 8))
    x = b.feed((n, h, w, depth), "int8", s_in := b.scale(0.005, 0.1), b.zp("int8"))
    scales = [b.scale(0.002, 0.02) for _ in range(oc)]
    values = r.integers(-128, 128, (oc, 1, 1, depth))
    values[r.random(oc) < (1.0 if k % 9 == 4 else 0.3)] = 0
    weights = b.tensor((oc, 1, 1, depth), "int8", scales, 0, values)
    if k % 6 == 5:  # fed at run time: not folded, so the DSP path
        bias = b.feed((oc,), "int32", 1e-4, 0, r.integers(-(1 << 14), 1 << 14, oc))
    elif k % 6 == 3:
        bias = -1
    else:  # some far out, so that constant outputs reach the clamp
        bias = b.tensor((oc,), "int32", 1e-4, 0, r.integers(-(1 << 14), 1 << 14, oc) * r.choice([1, 1, 4096], oc))
    y = b.tensor((n, h, w, oc), "int8", _output_scale(b, s_in, float(np.mean(scales)), depth, k), b.zp("int8"))
    attrs = {"padding": "SAME" if k % 2 else "VALID", "stride_h": 1, "stride_w": 1, "dilation_h": 1,
             "dilation_w": 1, "activation": ACTIVATIONS[(k // 8 if k % 4 == 3 else k) % len(ACTIVATIONS)]}
    return b.case(Op.CONV_2D, [x, weights, bias], y, attrs)


def gen_window(b: Builder, k: int) -> Case:
    """A CONV_2D with other windows (1x1 at stride 2 too): sizes 1x1 to 5x5, strides 1 and 2,
    dilation 1 or 2, SAME or VALID, 1 to 20 input channels (windows of up to 500 elements, in
    multiples of 16 and not), some filter rows zero (constant channels)."""
    r = b.rng
    kh, kw = (1, 1) if k % 7 == 0 else (int(v) for v in r.integers(1, 6, 2))
    stride = 2 if k % 7 == 0 else int(r.integers(1, 3))
    dilation = 2 if k % 5 == 1 else 1
    ic = int(r.integers(1, 21))
    padding = "SAME" if k % 2 else "VALID"
    n, h, w = 1 + k % 4 // 3, int(r.integers(1, 10)), int(r.integers(1, 10))
    if padding == "VALID":
        h, w = max(h, (kh - 1) * dilation + 1), max(w, (kw - 1) * dilation + 1)
    oh = output_size_and_padding(h, kh, stride, dilation, padding)[0]
    ow = output_size_and_padding(w, kw, stride, dilation, padding)[0]
    x = b.feed((n, h, w, ic), "int8", s_in := b.scale(0.005, 0.1), b.zp("int8"))
    oc = int(r.integers(1, 41))
    scales = [b.scale(0.002, 0.02) for _ in range(oc)]
    values = r.integers(-128, 128, (oc, kh, kw, ic))
    values[r.random(oc) < 0.3] = 0
    weights = b.tensor((oc, kh, kw, ic), "int8", scales, 0, values)
    bias = -1 if k % 6 == 3 else b.tensor((oc,), "int32", 1e-4, 0, r.integers(-(1 << 14), 1 << 14, oc))
    y = b.tensor((n, oh, ow, oc), "int8", _output_scale(b, s_in, float(np.mean(scales)), kh * kw * ic, k),
                 b.zp("int8"))
    attrs = {"padding": padding, "stride_h": stride, "stride_w": stride, "dilation_h": dilation,
             "dilation_w": dilation, "activation": ACTIVATIONS[(k // 8 if k % 4 == 3 else k) % len(ACTIVATIONS)]}
    return b.case(Op.CONV_2D, [x, weights, bias], y, attrs)


def gen_fc(b: Builder, k: int) -> Case:
    """FULLY_CONNECTED, per-tensor with a filter zero point (every other case) or per-channel."""
    r = b.rng
    depth = 1300 if k == CASES - 1 else DEPTHS[k % len(DEPTHS)]  # past the DSP path's 1280 too
    units, batches = int(r.integers(1, 41)), 1 + k % 3
    x = b.feed((batches, depth), "int8", s_in := b.scale(0.005, 0.1), b.zp("int8"))
    per_channel = k % 2 == 1
    scales = [b.scale(0.002, 0.02) for _ in range(units)] if per_channel else b.scale(0.002, 0.02)
    w_zp = 0 if per_channel else int(r.integers(-20, 21))
    w = b.tensor((units, depth), "int8", scales, w_zp, r.integers(-127, 128, (units, depth)))
    bias = -1 if k % 5 == 2 else b.tensor((units,), "int32", 1e-4, 0, r.integers(-(1 << 14), 1 << 14, units))
    y = b.tensor((batches, units), "int8", _output_scale(b, s_in, float(np.mean(scales)), depth, k), b.zp("int8"))
    return b.case(Op.FULLY_CONNECTED, [x, w, bias], y, {"activation": ACTIVATIONS[k // 2 % len(ACTIVATIONS)]})


def cases(gen, seed: int) -> list[tuple[str, TargetCase]]:
    """(name, case) per seeded case, the filter as pack stores it (constant channels' rows out)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(CASES):
        case = gen(Builder(rng), k)
        node = case.graph.nodes[0]
        params, stored, want = stored_case(case)
        x_shape, w_shape = stored[0].shape, case.graph.tensor(node.inputs[1]).shape
        out.append((f"{node.op} case {k} x{list(x_shape)} w{list(w_shape)}",
                    TargetCase(case.graph, params, stored, want)))
    return out


def test_cases_cover_the_product() -> None:
    """The conv cases hold constant channels (also all of them), every pixel count modulo 4, fast and
    other shifts, the int8 clamp and narrower ones; the FC cases a filter offset and batches."""
    conv = [c for _, c in cases(gen_1x1, 5)]
    pixels = {c.expected.size // c.expected.shape[-1] % 4 for c in conv}
    assert pixels == {0, 1, 2, 3}
    assert any((c.params.channel_data[:, 1] == 0).all() and c.params.bias_folded for c in conv)
    assert sum(c.args[1].shape[0] < c.expected.shape[-1] for c in conv) >= CASES // 3  # pruned rows
    assert any((c.params.channel_data[:, 2] <= 0).any() and np.asarray(c.params.shift).max() > 0 for c in conv)
    full = [c for c in conv if (c.params.act_min, c.params.act_max) == (-128, 127)]
    assert 0 < len(full) < len(conv)
    assert any((c.params.channel_data[:, 2] <= 0).any() and (c.params.channel_data[:, 2] > 0).any() and
               c.params.bias_folded for c in full)  # runs of r > 0 in assembly, the other channels in C
    windows = [c for _, c in cases(gen_window, 7)]
    depths = {c.args[1].size // max(1, c.args[1].shape[0]) for c in windows}
    assert max(depths) > 320 and {d % 16 for d in depths} > {0}
    assert {c.expected.size // c.expected.shape[-1] % 4 for c in windows} == {0, 1, 2, 3}
    assert {(c.params.stride_h, c.params.dilation_h, c.params.pad_top > 0) for c in windows} >= {
        (1, 1, True), (2, 1, False), (1, 2, True)}
    fc = [c for _, c in cases(gen_fc, 6)]
    assert any(c.params.filter_offset != 0 for c in fc) and any(c.params.per_channel for c in fc)
    assert {c.params.batches for c in fc} == {1, 2, 3} and max(c.params.depth for c in fc) > 1280


@pytest.mark.parametrize("gen,seed", [(gen_1x1, 5), (gen_window, 7), (gen_fc, 6)],
                         ids=["conv1x1", "conv_windows", "fully_connected"])
def test_mve_product_bit_exact_on_m55(gen, seed, tmp_path) -> None:
    """The kernels as the Cortex-M55 compiles them (MVE product) equal the simulator on the target."""
    assert_bit_exact_on("qemu-m55", cases(gen, seed), tmp_path)


@pytest.mark.parametrize("board", ["qemu-m7", "qemu-m4", "qemu-m55"])
def test_product_compiles_only_for_helium(board: str, tmp_path) -> None:
    """mcuq_matmul_s8_mve() exists in the Cortex-M55 build only; on M7 and M4 its file is empty."""
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc is not installed (Debian: gcc-arm-none-eabi)")
    obj = tmp_path / "mve.o"
    subprocess.run(["arm-none-eabi-gcc", *load_board(board).cflags, *STRICT, "-I", str(INCLUDE), "-c",
                    str(KERNELS / "mcuq_matmul_s8_mve.c"), "-o", str(obj)], check=True)
    symbols = subprocess.run(["arm-none-eabi-nm", "--defined-only", str(obj)], check=True, capture_output=True,
                             text=True).stdout
    assert ("mcuq_matmul_s8_mve" in symbols) is (board == "qemu-m55"), symbols
