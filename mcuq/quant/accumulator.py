"""Overflow-aware accumulators (Xie et al.): the worst-case accumulator of every weighted layer.

For output channel c the kernel accumulates sum w[c, k] * (x[k] - zp_in) and then adds bias[c]
(TFLM-INTEGER.md sections 4-6). With x limited to the integer range its producer can emit (the
producer's fused-activation clamp, else the input type's range), no partial or final sum
exceeds sum_k |w[c, k]| * max |x - zp_in| + |bias[c]| in magnitude: that bound, taken over the
channels, is a proof of the accumulator width the layer needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcuq.errors import UnsupportedOpError
from mcuq.ir import NO_TENSOR, Graph, Op
from mcuq.simulate import prepare_graph

_WEIGHTED = (Op.CONV_2D, Op.DEPTHWISE_CONV_2D, Op.FULLY_CONNECTED)


@dataclass(frozen=True)
class LayerAccumulator:
    """The worst-case accumulator magnitude of one layer and the signed bits it needs."""

    node: int
    op: str
    name: str  # output tensor
    worst: int
    bits: int  # signed two's-complement bits that hold [-worst, worst]
    kernel_bits: int  # the accumulator the kernel uses: 32, or 64 for 16x8 layers with an int64 bias

    @property
    def fits_int16(self) -> bool:
        return self.bits <= 16

    @property
    def fits_int32(self) -> bool:
        return self.bits <= 32


def signed_bits(v: int) -> int:
    """Bits of the two's-complement integer type that holds every value in [-v, v]."""
    return int(v).bit_length() + 1


def accumulator_bits(graph: Graph) -> tuple[LayerAccumulator, ...]:
    """Worst-case accumulator of every conv, depthwise and fully connected node of an integer graph."""
    params = prepare_graph(graph)
    producers = {n.outputs[0]: k for k, n in enumerate(graph.nodes)}
    out = []
    for node, p in zip(graph.nodes, params):
        if node.op not in _WEIGHTED:
            continue
        x, w = graph.tensor(node.inputs[0]), graph.tensor(node.inputs[1])
        info = np.iinfo(x.dtype)
        lo, hi = int(info.min), int(info.max)
        src = producers.get(x.index)
        if src is not None and hasattr(params[src], "act_min"):
            lo, hi = max(lo, params[src].act_min), min(hi, params[src].act_max)
        zp = x.quant.zero_point[0] if x.dtype == "int8" and x.quant is not None else 0
        x_max = max(abs(hi - zp), abs(lo - zp))
        wa = np.abs(np.asarray(w.data, np.int64))
        zp_w = w.quant.zero_point[0] if w.quant is not None and not w.quant.per_channel else 0
        if zp_w:  # per-tensor fully connected applies the filter offset
            wa = np.abs(np.asarray(w.data, np.int64) - zp_w)
        if node.op == Op.DEPTHWISE_CONV_2D:
            per_channel = wa.reshape(-1, wa.shape[3]).sum(axis=0)
        else:
            per_channel = wa.reshape(wa.shape[0], -1).sum(axis=1)
        b = node.inputs[2] if len(node.inputs) > 2 else NO_TENSOR
        bias = np.abs(np.asarray(graph.tensor(b).data, np.int64)) if b != NO_TENSOR else 0
        worst = int((per_channel * x_max + bias).max(initial=0))
        out.append(LayerAccumulator(node.index, str(node.op), graph.tensor(node.outputs[0]).name, worst,
                                    signed_bits(worst), p.accumulator_bits))
    return tuple(out)


def check_accumulators(graph: Graph) -> tuple[LayerAccumulator, ...]:
    """accumulator_bits, refusing a graph where some layer's accumulator could overflow."""
    layers = accumulator_bits(graph)
    for a in layers:
        if a.bits > a.kernel_bits:
            raise UnsupportedOpError(f"{graph.name}: node {a.node} ({a.op}, output '{a.name}') could overflow "
                                     f"its int{a.kernel_bits} accumulator (worst case |acc| = {a.worst:,}, needs {a.bits} bits)")
    return layers
