"""CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED, bit-exact with TFLM's reference kernels.

Accumulation is int64 numpy (im2col + matmul for conv); int32 accumulators are then wrapped
to int32 as C would, int64 ones (16x8 with int64 bias) are rescaled with MBQM64
(../shared/TFLM-INTEGER.md sections 1, 4-6). Multipliers are per output channel, shift > 0
meaning a left shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcuq.fixedpoint import mbqm, quantize_multiplier, wrap32
from mcuq.ir import Graph, Node, Tensor
from mcuq.simulate.common import (
    activation_range, expect_dtype, host_only, node_input, node_output, output_size_and_padding,
    quant, unsupported, windows,
)


def mbqm64(x, multiplier, shift) -> np.ndarray:
    """MultiplyByQuantizedMultiplier for an int64 accumulator: one rounding, 16-bit multiplier."""
    x = np.asarray(x, np.int64)
    m = np.asarray(multiplier, np.int64)
    m16 = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)
    total = 15 - np.asarray(shift, np.int64)
    return wrap32((x * m16 + (np.int64(1) << (total - 1))) >> total)


@dataclass(frozen=True, eq=False)
class ConvParams:
    """Integer parameters of CONV_2D and DEPTHWISE_CONV_2D: input [batches, input_h, input_w,
    input_c], output [batches, output_h, output_w, output_c] (NHWC).

    Conv filter [output_c, filter_h, filter_w, input_c / groups]; output channel c reads input
    channels g * input_c / groups ... with g = c / (output_c / groups). Depthwise filter
    [1, filter_h, filter_w, output_c]; output channel c reads input channel c / depth_multiplier.
    acc[c] = sum w * (x + input_offset) + bias[c] over in-image taps (filter zero point ignored);
    y = clamp(MBQM(acc, multiplier[c], shift[c]) + output_offset, act_min, act_max), with
    MBQM64 when ``accumulator_bits`` is 64.

    Pack-time data for the firmware's fast paths (the simulator does not read them):
    ``channel_data`` (see channel_data()), ``bias_folded`` (its bias column includes the bias
    tensor, which is constant or absent), ``shift_only`` (every multiplier is 2^30, so
    requantization needs no multiplication: mcuq.fixedpoint.requantize_pow2) and ``shifts_fast``
    (every channel_data row has r > 0 and M != 0: one 64-bit multiply-add requantizes each
    channel, none is constant). A CONV_2D channel whose int8 filter row is all zero (a pruned
    channel; the filter read by this node alone) outputs the same value y whatever the input:
    its row is constant_row(y); pack leaves its filter row out of flash (mcuq.pack.prune_filters)
    and the firmware stores y without computing anything.
    """

    batches: int
    input_h: int
    input_w: int
    input_c: int
    filter_h: int
    filter_w: int
    output_h: int
    output_w: int
    output_c: int
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    pad_top: int
    pad_left: int
    groups: int
    depth_multiplier: int
    input_offset: int
    output_offset: int
    multiplier: np.ndarray
    shift: np.ndarray
    act_min: int
    act_max: int
    accumulator_bits: int
    channel_data: np.ndarray
    bias_folded: bool
    shift_only: bool
    shifts_fast: bool


@dataclass(frozen=True, eq=False)
class FullyConnectedParams:
    """Integer parameters of FULLY_CONNECTED: input read as [batches, depth], filter [units, depth].

    acc[o] = sum (w + filter_offset) * (x + input_offset) + bias[o];
    y = clamp(MBQM(acc, multiplier, shift) + output_offset, act_min, act_max). ``multiplier``
    and ``shift`` have one entry per unit when ``per_channel`` (filter_offset 0), else one entry
    (per-tensor, filter_offset applied); MBQM64 when ``accumulator_bits`` is 64.
    ``channel_data``, ``bias_folded``, ``shift_only`` and ``shifts_fast`` as for ConvParams; the
    bias column holds bias + input_offset * sum(w + filter_offset) (the filter_offset * sum(x) term
    depends on the input and stays in the kernel).
    """

    batches: int
    depth: int
    units: int
    per_channel: bool
    input_offset: int
    filter_offset: int
    output_offset: int
    multiplier: np.ndarray
    shift: np.ndarray
    act_min: int
    act_max: int
    accumulator_bits: int
    channel_data: np.ndarray
    bias_folded: bool
    shift_only: bool
    shifts_fast: bool
    output_shape: tuple[int, ...] = host_only()


FAST_SHIFTS = (-31, -2)  # shifts whose requantization channel_data() turns into one 64-bit multiply-add


def channel_data(offset_sums: np.ndarray, bias: np.ndarray | None, multiplier: np.ndarray,
                 shift: np.ndarray) -> np.ndarray:
    """Per output channel, the four int32 values the firmware's int8 fast paths read together:
    {b, M, r, h} with b = wrap32(bias + offset_sums) (the input zero point folded into the bias,
    ``offset_sums`` = input_offset * sum of the channel's weights) and M the multiplier.

    For shift s in FAST_SHIFTS (a right shift by e = -s): r = e - 1 and h = 2^(e-2), so that
    MBQM(acc, M, s) = (((h - [acc < 0]) * 2^32 + (2^30 ^ (acc & 2^31)) + acc * M) >> 32) >> r:
    TFLM's two roundings (the nudge 2^30, then half away from zero on the sign of acc) as one
    64-bit multiply-add and one shift. Otherwise r = 0 and h = s (the kernel applies MBQM itself).
    """
    n = offset_sums.shape[0]
    b = offset_sums.astype(np.int64) + (0 if bias is None else bias.astype(np.int64))
    m = np.broadcast_to(np.asarray(multiplier, np.int64), (n,))
    s = np.broadcast_to(np.asarray(shift, np.int64), (n,))
    fast = (s >= FAST_SHIFTS[0]) & (s <= FAST_SHIFTS[1])
    e = np.where(fast, -s, 2)
    r = np.where(fast, e - 1, 0)
    h = np.where(fast, np.int64(1) << (e - 2), s)
    return np.stack([wrap32(b), m, r, h], axis=1).astype(np.int32)


def constant_row(y: np.ndarray, output_offset: int) -> np.ndarray:
    """channel_data rows {0, 0, 1, 2 (y - output_offset)} of channels whose output is y whatever
    the input: M = 0 with r > 0 marks them (constant_channels()), and the fast formula of
    channel_data() gives y from the sum 0 (bias 0, no products): the firmware stores
    (h >> 1) + output_offset."""
    y = np.asarray(y, np.int64)
    zeros = np.zeros_like(y)
    return np.stack([zeros, zeros, zeros + 1, 2 * (y - output_offset)], axis=1).astype(np.int32)


def constant_channels(params) -> np.ndarray:
    """Mask of a node's constant channels (constant_row()); empty for params without channel_data."""
    cd = getattr(params, "channel_data", np.zeros((0, 4), np.int32))
    return (cd[:, 1] == 0) & (cd[:, 2] > 0)


def _fast_path_data(bias: Tensor | None, offset_sums: np.ndarray | None, multiplier: np.ndarray,
                    shift: np.ndarray, constant: tuple[np.ndarray, int, int, int] | None = None
                    ) -> tuple[np.ndarray, bool, bool, bool]:
    """(channel_data, bias_folded, shift_only, shifts_fast) for a node; channel_data is empty
    [0, 4] (and shifts_fast False) when the node has no int8 fast path (``offset_sums`` None:
    int16 activations). ``constant``: (mask of the channels whose filter row is all zero,
    output_offset, act_min, act_max); with a folded bias their rows become constant_row()."""
    shift_only = bool(np.all(np.asarray(multiplier) == (1 << 30)))
    if offset_sums is None:
        return np.zeros((0, 4), np.int32), False, shift_only, False
    folded = bias is None or bias.data is not None
    b = bias.data if bias is not None and folded else None
    data = channel_data(offset_sums, b, multiplier, shift)
    if constant is not None and folded and constant[0].any():
        dead, zp, lo, hi = constant
        m = np.broadcast_to(np.asarray(multiplier), dead.shape)[dead]
        s = np.broadcast_to(np.asarray(shift), dead.shape)[dead]
        y = np.clip(mbqm(data[dead, 0], m, s) + zp, lo, hi)
        data[dead] = constant_row(y, zp)
    return data, folded, shift_only, bool(np.all((data[:, 2] > 0) & (data[:, 1] != 0)))


def _filter_io(graph: Graph, node: Node, int16_bias: tuple[str, ...]
               ) -> tuple[Tensor, Tensor, Tensor | None, Tensor, int]:
    """(input, filter, bias or None, output, accumulator bits) after the dtype checks TFLM makes.

    int8 activations take int8/int4 filters and an int32 bias (32-bit accumulator); int16
    activations take int8 filters and an int32 (32-bit) or int64/absent (64-bit) bias.
    """
    x, w, bias = (node_input(graph, node, k) for k in range(3))
    y = node_output(graph, node)
    if x is None or w is None:
        raise unsupported(graph, node, "needs an input and a filter tensor")
    expect_dtype(graph, node, x, ("int8", "int16"))
    expect_dtype(graph, node, w, ("int8", "int4") if x.dtype == "int8" else ("int8",))
    expect_dtype(graph, node, y, (x.dtype,))
    if bias is not None:
        expect_dtype(graph, node, bias, ("int32",) if x.dtype == "int8" else int16_bias)
    if w.data is None:
        raise unsupported(graph, node, f"filter '{w.name}' must be constant")
    quant(graph, node, w)
    bits = 32 if x.dtype == "int8" or (bias is not None and bias.dtype == "int32") else 64
    return x, w, bias, y, bits


def _check_shifts(graph: Graph, node: Node, shift: np.ndarray, bits: int) -> None:
    if bits == 64 and not np.all((shift >= -31) & (shift < 8)):
        raise unsupported(graph, node, "a multiplier shift is outside [-31, 8), as 64-bit rescaling needs")


def _multipliers(graph: Graph, node: Node, s_in: float, w_scales: tuple[float, ...], s_out: float,
                 channels: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """PopulateConvolutionQuantizationParams: QuantizeMultiplier(s_in * s_w[c] / s_out) per channel."""
    if len(w_scales) not in (1, channels):
        raise unsupported(graph, node, f"filter has {len(w_scales)} scales for {channels} output channels")
    scales = w_scales if len(w_scales) > 1 else w_scales * channels
    pairs = [quantize_multiplier(s_in * s_w / s_out) for s_w in scales]
    m = np.array([p[0] for p in pairs], np.int32)
    s = np.array([p[1] for p in pairs], np.int32)
    _check_shifts(graph, node, s, bits)
    return m, s


def _prepare_conv_like(graph: Graph, node: Node, depthwise: bool) -> ConvParams:
    x, w, bias, y, bits = _filter_io(graph, node, ("int64",) if depthwise else ("int32", "int64"))
    if len(x.shape) != 4 or len(w.shape) != 4 or len(y.shape) != 4:
        raise unsupported(graph, node, "input, filter and output must be 4-D (NHWC)")
    if depthwise and x.dtype == "int16" and bias is None:  # no reference: TFLM's kernel crashes there
        raise unsupported(graph, node, "int16 depthwise convolution needs an int64 bias")
    a = node.attrs
    n, h, wd, ic = x.shape
    if depthwise:
        _, kh, kw, oc = w.shape
        dm = a["depth_multiplier"]
        if w.shape[0] != 1 or oc != ic * dm:
            raise unsupported(graph, node, f"filter {list(w.shape)} does not match {ic} input channels "
                                           f"x depth multiplier {dm}")
        groups = 1
    else:
        oc, kh, kw, icf = w.shape
        dm = 1
        if icf == 0 or ic % icf or oc % (ic // icf):
            raise unsupported(graph, node, f"filter {list(w.shape)} does not split {ic} input channels "
                                           "into groups")
        groups = ic // icf
    oh, pt = output_size_and_padding(h, kh, a["stride_h"], a["dilation_h"], a["padding"])
    ow, pl = output_size_and_padding(wd, kw, a["stride_w"], a["dilation_w"], a["padding"])
    if y.shape != (n, oh, ow, oc):
        raise unsupported(graph, node, f"output shape {list(y.shape)} is not the computed {[n, oh, ow, oc]}")
    if bias is not None and bias.shape != (oc,):
        raise unsupported(graph, node, f"bias '{bias.name}' shape {list(bias.shape)} is not [{oc}]")
    s_in, zp_in = quant(graph, node, x)
    s_out, zp_out = quant(graph, node, y)
    m, s = _multipliers(graph, node, s_in, w.quant.scale, s_out, oc, bits)
    lo, hi = activation_range(graph, node, y.dtype, s_out, zp_out)
    offsets = (-zp_in, zp_out) if x.dtype == "int8" else (0, 0)  # 16x8 kernels assume zero points 0
    sums = constant = None
    if x.dtype == "int8":
        rows = w.data.astype(np.int64).reshape(-1, oc).T if depthwise else w.data.astype(np.int64).reshape(oc, -1)
        sums = offsets[0] * rows.sum(1)
        if not depthwise and w.dtype == "int8" and graph.reads(w.index) == 1:
            constant = (~rows.any(1), offsets[1], lo, hi)
    fast = _fast_path_data(bias, sums, m, s, constant)
    return ConvParams(
        n, h, wd, ic, kh, kw, oh, ow, oc, a["stride_h"], a["stride_w"], a["dilation_h"],
        a["dilation_w"], pt, pl, groups, dm, offsets[0], offsets[1], m, s, lo, hi, bits, *fast,
    )


def prepare_conv2d(graph: Graph, node: Node) -> ConvParams:
    """Derive CONV_2D's integer parameters (TFLM conv_common.cc)."""
    return _prepare_conv_like(graph, node, depthwise=False)


def prepare_depthwise_conv2d(graph: Graph, node: Node) -> ConvParams:
    """Derive DEPTHWISE_CONV_2D's integer parameters (TFLM depthwise_conv_common.cc)."""
    return _prepare_conv_like(graph, node, depthwise=True)


def _rescale(p: ConvParams | FullyConnectedParams, acc: np.ndarray, bias, dtype) -> np.ndarray:
    """Bias, requantize, output offset and clamp; the shared tail of all three kernels."""
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    if p.accumulator_bits == 32:
        y = mbqm(wrap32(acc), p.multiplier, p.shift)
    else:
        y = mbqm64(acc, p.multiplier, p.shift)
    return np.clip(y + p.output_offset, p.act_min, p.act_max).astype(dtype)


def _bias(inputs: list) -> np.ndarray | None:
    return inputs[2] if len(inputs) > 2 else None


def conv2d(p: ConvParams, inputs: list[np.ndarray | None]) -> np.ndarray:
    """CONV_2D: im2col over the offset input (padding reads zero = skipped tap), int64 matmul."""
    x, w = inputs[0], inputs[1]
    n, oh, ow, oc, kh, kw = p.batches, p.output_h, p.output_w, p.output_c, p.filter_h, p.filter_w
    icf = p.input_c // p.groups
    win = windows(x.astype(np.int64) + p.input_offset, kh, kw, (p.stride_h, p.stride_w),
                  (p.dilation_h, p.dilation_w), (p.pad_top, p.pad_left), (oh, ow), 0)
    ocg = oc // p.groups
    acc = np.empty((n * oh * ow, oc), np.int64)
    for g in range(p.groups):
        cols = win[..., g * icf:(g + 1) * icf].reshape(n * oh * ow, kh * kw * icf)
        acc[:, g * ocg:(g + 1) * ocg] = cols @ w[g * ocg:(g + 1) * ocg].reshape(ocg, -1).astype(np.int64).T
    return _rescale(p, acc, _bias(inputs), x.dtype).reshape(n, oh, ow, oc)


def depthwise_conv2d(p: ConvParams, inputs: list[np.ndarray | None]) -> np.ndarray:
    """DEPTHWISE_CONV_2D: per-tap multiply-accumulate over the channel-repeated input."""
    x, w = inputs[0], inputs[1]
    n, oh, ow, oc, kh, kw = p.batches, p.output_h, p.output_w, p.output_c, p.filter_h, p.filter_w
    xr = x.astype(np.int64) + p.input_offset
    if p.depth_multiplier > 1:
        xr = np.repeat(xr, p.depth_multiplier, axis=3)
    win = windows(xr, kh, kw, (p.stride_h, p.stride_w), (p.dilation_h, p.dilation_w),
                  (p.pad_top, p.pad_left), (oh, ow), 0)
    w64 = w.astype(np.int64)
    acc = np.zeros((n, oh, ow, oc), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            acc += win[:, :, :, ky, kx, :] * w64[0, ky, kx]
    return _rescale(p, acc, _bias(inputs), x.dtype)


def prepare_fully_connected(graph: Graph, node: Node) -> FullyConnectedParams:
    """Derive FULLY_CONNECTED's parameters (TFLM fully_connected_common.cc), float32 quirk included."""
    x, w, bias, y, bits = _filter_io(graph, node, ("int32", "int64"))
    fmt = node.attrs.get("weights_format", "DEFAULT")
    if fmt != "DEFAULT":
        raise unsupported(graph, node, f"filter '{w.name}' has weights format {fmt}; only DEFAULT runs")
    if len(w.shape) != 2 or not y.shape:
        raise unsupported(graph, node, f"filter {list(w.shape)} must be 2-D and the output at least 1-D")
    units, depth = w.shape
    batches = int(np.prod(y.shape[:-1], dtype=np.int64))
    if y.shape[-1] != units or x.size != batches * depth:
        raise unsupported(graph, node, f"input {list(x.shape)}, filter {list(w.shape)} "
                                       f"and output {list(y.shape)} disagree")
    if bias is not None and bias.shape != (units,):
        raise unsupported(graph, node, f"bias '{bias.name}' shape {list(bias.shape)} is not [{units}]")
    s_in, zp_in = quant(graph, node, x)
    s_w, zp_w = quant(graph, node, w)
    s_out, zp_out = quant(graph, node, y)
    if w.quant.per_channel:
        if w.dtype == "int4":
            raise unsupported(graph, node, f"int4 filter '{w.name}' is per-channel; TFLM runs int4 FC "
                                           "per-tensor only")
        m, s = _multipliers(graph, node, s_in, w.quant.scale, s_out, units, bits)
        filter_offset = 0
    else:
        real = float(np.float32(s_in) * np.float32(s_w)) / s_out  # product rounded to float32 first
        m, s = (np.array([v], np.int32) for v in quantize_multiplier(real))
        _check_shifts(graph, node, s, bits)
        filter_offset = -zp_w
    lo, hi = activation_range(graph, node, y.dtype, s_out, zp_out)
    sums = None
    if x.dtype == "int8":
        sums = -zp_in * (w.data.astype(np.int64).sum(1) + depth * filter_offset)
    fast = _fast_path_data(bias, sums, m, s)
    return FullyConnectedParams(
        batches, depth, units, w.quant.per_channel, -zp_in, filter_offset, zp_out, m, s, lo, hi, bits,
        *fast, y.shape,
    )


def fully_connected(p: FullyConnectedParams, inputs: list[np.ndarray | None]) -> np.ndarray:
    """FULLY_CONNECTED: [batches, depth] x [units, depth]^T in int64."""
    x, w = inputs[0], inputs[1]
    xf = x.reshape(p.batches, p.depth).astype(np.int64) + p.input_offset
    acc = xf @ (w.astype(np.int64) + p.filter_offset).T
    return _rescale(p, acc, _bias(inputs), x.dtype).reshape(p.output_shape)
