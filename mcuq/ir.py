"""The graph IR every stage passes along: tensors, nodes, graph (frozen dataclasses).

The reader fills it faithfully from a .tflite file; passes and the quantizer return new
graphs; the simulators, planner and packer only read it.

Node attribute keys (``Node.attrs``), by op (absent optional inputs are -1 in ``inputs``):
  CONV_2D            padding, stride_h, stride_w, dilation_h, dilation_w, activation
  DEPTHWISE_CONV_2D  as CONV_2D plus depth_multiplier
  FULLY_CONNECTED    activation, keep_num_dims, weights_format
  AVERAGE_POOL_2D,
  MAX_POOL_2D        padding, stride_h, stride_w, filter_h, filter_w, activation
  ADD, MUL, SUB      activation
  CONCATENATION      axis, activation
  SOFTMAX            beta
  RESHAPE            new_shape (tuple, or None when given by the second input)
  MEAN               keep_dims (axes are the constant second input)
  PAD                (paddings are the constant second input)
  QUANTIZE, DEQUANTIZE, LOGISTIC, TANH: no attributes
``padding`` is "SAME" or "VALID"; ``activation`` is one of ACTIVATIONS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping

import numpy as np


class Op(StrEnum):
    """Operators mcuq can simulate and run; other ops are kept as their TFLite name (a str)."""

    CONV_2D = "CONV_2D"
    DEPTHWISE_CONV_2D = "DEPTHWISE_CONV_2D"
    FULLY_CONNECTED = "FULLY_CONNECTED"
    ADD = "ADD"
    MUL = "MUL"
    AVERAGE_POOL_2D = "AVERAGE_POOL_2D"
    MAX_POOL_2D = "MAX_POOL_2D"
    RESHAPE = "RESHAPE"
    SOFTMAX = "SOFTMAX"
    QUANTIZE = "QUANTIZE"
    DEQUANTIZE = "DEQUANTIZE"
    PAD = "PAD"
    MEAN = "MEAN"
    CONCATENATION = "CONCATENATION"
    LOGISTIC = "LOGISTIC"
    TANH = "TANH"


ACTIVATIONS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")
NO_TENSOR = -1


@dataclass(frozen=True)
class Quant:
    """Affine quantization: real = scale * (q - zero_point), per tensor or along ``axis``."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return len(self.scale) > 1


@dataclass(frozen=True, eq=False)
class Tensor:
    """One tensor; ``data`` holds the constant value (read-only array) or None for activations."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: int8, int16, int32, int64, uint8, float32, ...
    quant: Quant | None = None
    data: np.ndarray | None = None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        if self.dtype == "int4":  # two per byte, as packed in a .tflite and in flash
            return (self.size + 1) // 2
        return self.size * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Node:
    """One operator application, in execution order."""

    index: int
    op: Op | str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    version: int = 1

    @property
    def supported(self) -> bool:
        return isinstance(self.op, Op)


@dataclass(frozen=True)
class Graph:
    """A whole model: tensors by index, nodes in execution order, graph inputs and outputs."""

    tensors: tuple[Tensor, ...]
    nodes: tuple[Node, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    name: str = "model"

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]

    def input_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.inputs]

    def output_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.outputs]

    def reads(self, index: int) -> int:
        """How many node inputs read tensor ``index``."""
        return sum(t == index for n in self.nodes for t in n.inputs)

    def producers(self) -> dict[int, Node]:
        """Tensor index -> the node that writes it."""
        return {t: n for n in self.nodes for t in n.outputs if t != NO_TENSOR}

    def activation_tensors(self) -> list[Tensor]:
        """Non-constant tensors that are read or written at run time (planner candidates)."""
        used = set(self.inputs) | set(self.outputs)
        for n in self.nodes:
            used.update(t for t in (*n.inputs, *n.outputs) if t != NO_TENSOR)
        return [self.tensors[i] for i in sorted(used) if not self.tensors[i].is_const]

    def unsupported_ops(self) -> list[str]:
        return sorted({str(n.op) for n in self.nodes if not n.supported})
