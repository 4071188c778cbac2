"""Per-layer and whole-model figures for `mcuq inspect`: MACs, bytes, quantization kind."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

import numpy as np

from mcuq.ir import NO_TENSOR, Graph, Node, Op

_WEIGHTED = (Op.CONV_2D, Op.DEPTHWISE_CONV_2D, Op.FULLY_CONNECTED)


class QuantKind(StrEnum):
    """How a model computes: integer-only, float, or float activations with int8 weights."""

    FULL_INTEGER = "full-integer"
    FLOAT = "float"
    HYBRID = "dynamic-range hybrid"


@dataclass(frozen=True)
class LayerSummary:
    index: int
    op: str
    input_shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...]
    macs: int
    weight_bytes: int
    activation_bytes: int
    supported: bool


@dataclass(frozen=True)
class ModelSummary:
    name: str
    kind: QuantKind
    float_io: bool
    layers: tuple[LayerSummary, ...]
    unsupported_ops: tuple[str, ...]

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def weight_bytes(self) -> int:
        return sum(layer.weight_bytes for layer in self.layers)

    @property
    def activation_bytes(self) -> int:
        return sum(layer.activation_bytes for layer in self.layers)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(kind=str(self.kind), macs=self.macs, weight_bytes=self.weight_bytes,
                 activation_bytes=self.activation_bytes)
        return d


def node_macs(graph: Graph, node: Node) -> int:
    """Multiply-accumulates of one node (0 for ops without a weight operand)."""
    if node.op not in _WEIGHTED or len(node.inputs) < 2:
        return 0
    out = graph.tensor(node.outputs[0])
    w = graph.tensor(node.inputs[1]).shape
    if node.op == Op.CONV_2D:
        return out.size * int(np.prod(w[1:]))
    if node.op == Op.DEPTHWISE_CONV_2D:
        return out.size * w[1] * w[2]
    return out.size * w[-1]


def quant_kind(graph: Graph) -> QuantKind:
    """Integer-only when weighted layers see integer activations; hybrid when float meets int8."""
    kinds = set()
    for node in graph.nodes:
        if node.op not in _WEIGHTED or len(node.inputs) < 2:
            continue
        act = graph.tensor(node.inputs[0]).dtype
        weight = graph.tensor(node.inputs[1]).dtype
        if act == "float32":
            kinds.add(QuantKind.HYBRID if weight in ("int8", "int4", "uint8") else QuantKind.FLOAT)
        else:
            kinds.add(QuantKind.FULL_INTEGER)
    if QuantKind.HYBRID in kinds:
        return QuantKind.HYBRID
    if QuantKind.FLOAT in kinds or (not kinds and graph.input_tensors()
                                     and all(t.dtype == "float32" for t in graph.output_tensors())
                                     and not any(n.op == Op.QUANTIZE for n in graph.nodes)):
        return QuantKind.FLOAT
    return QuantKind.FULL_INTEGER


def summarize(graph: Graph) -> ModelSummary:
    """Figures per layer, in execution order."""
    layers = []
    for node in graph.nodes:
        consts = [graph.tensor(t) for t in node.inputs if t != NO_TENSOR and graph.tensor(t).is_const]
        outs = [graph.tensor(t) for t in node.outputs if t != NO_TENSOR]
        layers.append(LayerSummary(
            index=node.index,
            op=str(node.op),
            input_shapes=tuple(graph.tensor(t).shape for t in node.inputs
                               if t != NO_TENSOR and not graph.tensor(t).is_const),
            output_shape=outs[0].shape if outs else (),
            macs=node_macs(graph, node),
            weight_bytes=sum(t.nbytes for t in consts),
            activation_bytes=sum(t.nbytes for t in outs),
            supported=node.supported,
        ))
    kind = quant_kind(graph)
    float_io = any(t.dtype == "float32" for t in (*graph.input_tensors(), *graph.output_tensors()))
    return ModelSummary(graph.name, kind, float_io, tuple(layers), tuple(graph.unsupported_ops()))
