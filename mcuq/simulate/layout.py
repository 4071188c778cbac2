"""RESHAPE, PAD, CONCATENATION (raw copies) and MEAN (integer mean with a folded 1/N multiplier).

See ../shared/TFLM-INTEGER.md sections 11 and 15.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcuq.fixedpoint import mbqm, quantize_multiplier, wrap32
from mcuq.ir import Graph, Node
from mcuq.simulate.common import (
    MAX_DIMS, const_data, expect_dtype, fixed_dims, host_only, node_input, node_output, quant,
    type_range, unsupported,
)

_RAW = ("int8", "int16", "int32")


@dataclass(frozen=True)
class ReshapeParams:
    """RESHAPE: a copy of ``bytes`` bytes (none when input and output share memory)."""

    bytes: int
    output_shape: tuple[int, ...] = host_only()


@dataclass(frozen=True)
class PadParams:
    """PAD of the MAX_DIMS-D ``input_dims``: ``pad_before`` / ``pad_after`` new elements per axis,
    all set to ``pad_value``; input values are copied unchanged."""

    input_dims: tuple[int, ...]
    pad_before: tuple[int, ...]
    pad_after: tuple[int, ...]
    pad_value: int
    output_shape: tuple[int, ...] = host_only()


@dataclass(frozen=True)
class ConcatenationParams:
    """CONCATENATION, raw copy: every tensor is read as [outer_size, axis, inner_size]; input k
    fills output axis positions axis_offsets[k] .. axis_offsets[k + 1] - 1 (``num_inputs`` + 1
    offsets, the last one the output's axis size)."""

    outer_size: int
    inner_size: int
    num_inputs: int
    axis_offsets: tuple[int, ...]
    output_shape: tuple[int, ...] = host_only()


@dataclass(frozen=True)
class MeanParams:
    """MEAN of the MAX_DIMS-D ``input_dims`` over the axes where ``reduce`` is 1, each output
    summing ``count`` raw values into S (int32);
    y = clamp(MBQM(S + input_offset * count, multiplier, shift) + output_offset) to the type
    range. multiplier/shift already fold 1/count into s_in/s_out (TFLM QuantizedMeanOrSum)."""

    input_dims: tuple[int, ...]
    reduce: tuple[int, ...]
    count: int
    input_offset: int
    output_offset: int
    multiplier: int
    shift: int
    output_shape: tuple[int, ...] = host_only()


def _in_out(graph: Graph, node: Node, dtypes: tuple[str, ...]):
    x, y = node_input(graph, node, 0), node_output(graph, node)
    if x is None:
        raise unsupported(graph, node, "needs an input tensor")
    expect_dtype(graph, node, x, dtypes)
    expect_dtype(graph, node, y, (x.dtype,))
    return x, y


def prepare_reshape(graph: Graph, node: Node) -> ReshapeParams:
    """RESHAPE only checks element count and type; the output tensor's shape is the truth."""
    x, y = _in_out(graph, node, _RAW)
    if x.size != y.size:
        raise unsupported(graph, node, f"cannot reshape {list(x.shape)} into {list(y.shape)}")
    return ReshapeParams(y.nbytes, y.shape)


def reshape(p: ReshapeParams, inputs: list[np.ndarray | None]) -> np.ndarray:
    """RESHAPE: copy."""
    return inputs[0].reshape(p.output_shape).copy()


def prepare_pad(graph: Graph, node: Node) -> PadParams:
    """Derive PAD's constant paddings and pad value (zp_out for int8 unless given, else 0)."""
    x, y = _in_out(graph, node, _RAW)
    pads_t = node_input(graph, node, 1)
    if pads_t is None:
        raise unsupported(graph, node, "needs a paddings tensor")
    pads = const_data(graph, node, pads_t).astype(np.int64)
    if pads.shape != (len(x.shape), 2) or len(x.shape) > 5 or (pads < 0).any():
        raise unsupported(graph, node, f"paddings '{pads_t.name}' {pads.tolist()} do not fit a "
                                       f"rank-{len(x.shape)} (<= 5) input")
    out = tuple(int(d + a + b) for d, (a, b) in zip(x.shape, pads))
    if out != y.shape:
        raise unsupported(graph, node, f"output shape {list(y.shape)} differs from computed {list(out)}")
    cv = node_input(graph, node, 2)
    if cv is not None:
        expect_dtype(graph, node, cv, (x.dtype,))
        if x.dtype == "int8" and quant(graph, node, cv) != quant(graph, node, y):
            raise unsupported(graph, node, f"constant_values '{cv.name}' must have the output's quantization")
        value = int(const_data(graph, node, cv).reshape(-1)[0])
    else:
        value = quant(graph, node, y)[1] if x.dtype == "int8" else 0
    before, after = fixed_dims(pads[:, 0], 0), fixed_dims(pads[:, 1], 0)
    return PadParams(fixed_dims(x.shape), before, after, value, y.shape)


def pad(p: PadParams, inputs: list[np.ndarray | None]) -> np.ndarray:
    """PAD: copy into a ``pad_value``-filled output."""
    x = inputs[0].reshape(p.input_dims)
    y = np.pad(x, tuple(zip(p.pad_before, p.pad_after)), constant_values=p.pad_value)
    return y.reshape(p.output_shape)


def prepare_concatenation(graph: Graph, node: Node) -> ConcatenationParams:
    """CONCATENATION: int8 inputs must have the output's exact scale and zero point (no rescale)."""
    y = node_output(graph, node)
    expect_dtype(graph, node, y, _RAW)
    if node.attrs.get("activation", "NONE") != "NONE":
        raise unsupported(graph, node, f"fused activation {node.attrs['activation']} is not supported")
    rank = len(y.shape)
    axis = node.attrs.get("axis", 0)
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank:
        raise unsupported(graph, node, f"axis {node.attrs.get('axis')} is out of range for rank {rank}")
    xs = [node_input(graph, node, k) for k in range(len(node.inputs))]
    if not xs or any(x is None for x in xs):
        raise unsupported(graph, node, "has an absent input")
    for x in xs:
        expect_dtype(graph, node, x, (y.dtype,))
        if y.dtype == "int8" and quant(graph, node, x) != quant(graph, node, y):
            raise unsupported(graph, node, f"input '{x.name}' has another scale or zero point than "
                                           "the output")
        if y.dtype == "int16" and (quant(graph, node, x)[1], quant(graph, node, y)[1]) != (0, 0):
            raise unsupported(graph, node, "int16 CONCATENATION needs zero points 0")
    shapes = [x.shape for x in xs]
    if any(len(s) != rank or s[:axis] + s[axis + 1:] != y.shape[:axis] + y.shape[axis + 1:] for s in shapes) \
            or sum(s[axis] for s in shapes) != y.shape[axis]:
        raise unsupported(graph, node, f"input shapes {[list(s) for s in shapes]} do not concatenate "
                                       f"to {list(y.shape)}")
    outer = int(np.prod(y.shape[:axis], dtype=np.int64))
    inner = int(np.prod(y.shape[axis + 1:], dtype=np.int64))
    offsets = tuple(int(v) for v in np.cumsum([0, *(s[axis] for s in shapes)]))
    return ConcatenationParams(outer, inner, len(xs), offsets, y.shape)


def concatenation(p: ConcatenationParams, inputs: list[np.ndarray | None]) -> np.ndarray:
    """CONCATENATION: raw copy, each input read as [outer_size, its axis size, inner_size]."""
    sizes = np.diff(p.axis_offsets)
    parts = [x.reshape(p.outer_size, int(n), p.inner_size) for x, n in zip(inputs, sizes)]
    return np.concatenate(parts, axis=1).reshape(p.output_shape)


def prepare_mean(graph: Graph, node: Node) -> MeanParams:
    """Derive MEAN's folded multiplier: QuantizeMultiplier(s_in/s_out), then 1/N folded in."""
    x, y = _in_out(graph, node, ("int8", "int16"))
    axes_t = node_input(graph, node, 1)
    if axes_t is None:
        raise unsupported(graph, node, "needs an axes tensor")
    rank = len(x.shape)
    if rank > MAX_DIMS:
        raise unsupported(graph, node, f"input {list(x.shape)} has more than {MAX_DIMS} dimensions")
    raw = const_data(graph, node, axes_t).reshape(-1).astype(np.int64)
    if ((raw < -rank) | (raw >= rank)).any():
        raise unsupported(graph, node, f"axes {raw.tolist()} are out of range for rank {rank}")
    axes = tuple(sorted({int(a) % rank for a in raw}))
    kept = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    if int(np.prod(kept)) != y.size:
        raise unsupported(graph, node, f"output shape {list(y.shape)} does not match reducing "
                                       f"{list(x.shape)} over {list(axes)}")
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    if count == 0:
        raise unsupported(graph, node, "reduces over an empty axis")
    s_in, zp_in = quant(graph, node, x)
    s_out, zp_out = quant(graph, node, y)
    m, s = quantize_multiplier(s_in / s_out)
    k = min(count.bit_length() - 1, 32, 31 + s)
    reduce = fixed_dims(tuple(int(i in axes) for i in range(rank)), 0)
    return MeanParams(fixed_dims(x.shape), reduce, count, -zp_in, zp_out, int((m << k) // count), s - k,
                      y.shape)


def mean(p: MeanParams, inputs: list[np.ndarray | None]) -> np.ndarray:
    """MEAN: int32 sum over the reduced axes, one requantization, clamp to the type range."""
    x = inputs[0]
    axes = tuple(i for i, r in enumerate(p.reduce) if r)
    total = wrap32(x.reshape(p.input_dims).astype(np.int64).sum(axis=axes))
    y = mbqm(wrap32(total + p.input_offset * p.count), p.multiplier, p.shift) + p.output_offset
    lo, hi = type_range(x.dtype.name)
    return np.clip(y, lo, hi).astype(x.dtype).reshape(p.output_shape)
