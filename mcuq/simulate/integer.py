"""The integer host simulator: runs a Graph with TFLM reference-kernel arithmetic, bit for bit.

Each op has a ``prepare_<op>(graph, node) -> Params`` deriving every integer parameter (the
packer emits the same values for the firmware) and an ``<op>(params, inputs) -> array``
kernel taking the node's input arrays in order (None for an absent optional input).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from mcuq.errors import CalibrationError
from mcuq.fixedpoint import quantize_real
from mcuq.ir import NO_TENSOR, Graph, Node, Op
from mcuq.simulate.common import unsupported
from mcuq.simulate.conv import (
    conv2d, depthwise_conv2d, fully_connected, prepare_conv2d, prepare_depthwise_conv2d,
    prepare_fully_connected,
)
from mcuq.simulate.elementwise import (
    add, dequantize, mul, prepare_add, prepare_dequantize, prepare_mul, prepare_quantize, quantize,
)
from mcuq.simulate.layout import (
    concatenation, mean, pad, prepare_concatenation, prepare_mean, prepare_pad, prepare_reshape, reshape,
)
from mcuq.simulate.nonlinear import logistic, prepare_logistic, prepare_softmax, prepare_tanh, softmax, tanh
from mcuq.simulate.pool import average_pool2d, max_pool2d, prepare_average_pool2d, prepare_max_pool2d

PrepareFn = Callable[[Graph, Node], Any]
EvalFn = Callable[[Any, list], np.ndarray]

KERNELS: dict[Op, tuple[PrepareFn, EvalFn]] = {
    Op.CONV_2D: (prepare_conv2d, conv2d),
    Op.DEPTHWISE_CONV_2D: (prepare_depthwise_conv2d, depthwise_conv2d),
    Op.FULLY_CONNECTED: (prepare_fully_connected, fully_connected),
    Op.AVERAGE_POOL_2D: (prepare_average_pool2d, average_pool2d),
    Op.MAX_POOL_2D: (prepare_max_pool2d, max_pool2d),
    Op.ADD: (prepare_add, add),
    Op.MUL: (prepare_mul, mul),
    Op.QUANTIZE: (prepare_quantize, quantize),
    Op.DEQUANTIZE: (prepare_dequantize, dequantize),
    Op.RESHAPE: (prepare_reshape, reshape),
    Op.PAD: (prepare_pad, pad),
    Op.CONCATENATION: (prepare_concatenation, concatenation),
    Op.MEAN: (prepare_mean, mean),
    Op.SOFTMAX: (prepare_softmax, softmax),
    Op.LOGISTIC: (prepare_logistic, logistic),
    Op.TANH: (prepare_tanh, tanh),
}


def prepare_graph(graph: Graph) -> list[Any]:
    """Derive every node's integer parameters, one Params per node, in execution order."""
    params = []
    for node in graph.nodes:
        entry = KERNELS.get(node.op) if isinstance(node.op, Op) else None
        if entry is None:
            raise unsupported(graph, node, "the integer simulator has no kernel for this op")
        params.append(entry[0](graph, node))
    return params


def _check_inputs(graph: Graph, inputs: Sequence[np.ndarray]) -> None:
    if len(inputs) != len(graph.inputs):
        raise CalibrationError(f"model {graph.name} takes {len(graph.inputs)} input(s), got {len(inputs)}")
    for k, (t, a) in enumerate(zip(graph.input_tensors(), inputs)):
        a = np.asarray(a)
        if a.shape != t.shape or a.dtype != np.dtype(t.dtype):
            raise CalibrationError(
                f"input {k} '{t.name}' must be {t.dtype} {list(t.shape)}, got {a.dtype} {list(a.shape)}"
            )


def run_integer(
    graph: Graph, inputs: Sequence[np.ndarray], all_tensors: bool = False, params: list[Any] | None = None
) -> list[np.ndarray] | dict[int, np.ndarray]:
    """Run the graph on ``inputs`` (one array per graph input, exact shape and dtype).

    Returns the graph outputs, or with ``all_tensors`` every tensor's value by tensor index
    (constants included). ``params`` reuses a prepare_graph result across runs.
    """
    _check_inputs(graph, inputs)
    if params is None:
        params = prepare_graph(graph)
    values: dict[int, np.ndarray] = {t.index: t.data for t in graph.tensors if t.data is not None}
    values.update((i, np.asarray(a)) for i, a in zip(graph.inputs, inputs))
    for node, p in zip(graph.nodes, params):
        args = [None if i == NO_TENSOR else values[i] for i in node.inputs]
        values[node.outputs[0]] = KERNELS[node.op][1](p, args)
    if all_tensors:
        return values
    return [values[i] for i in graph.outputs]


def as_inputs(graph: Graph, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Samples ([N, *shape] per graph input) in the graph's input dtypes; float values for an
    integer input are quantized with its scale and zero point (TFLM's AffineQuantize)."""
    if len(arrays) != len(graph.inputs):
        raise CalibrationError(f"model takes {len(graph.inputs)} input(s), got {len(arrays)} array(s)")
    n = arrays[0].shape[0]
    out = []
    for t, a in zip(graph.input_tensors(), arrays):
        a = np.asarray(a)
        if a.shape != (n, *t.shape):
            raise CalibrationError(f"input '{t.name}' needs [N, {', '.join(map(str, t.shape))}] with the same N "
                                   f"for every input, got {list(a.shape)}")
        if a.dtype != np.dtype(t.dtype):
            if not (a.dtype.kind == "f" and t.quant is not None and np.dtype(t.dtype).kind in "iu"):
                raise CalibrationError(f"input '{t.name}' needs {t.dtype} values, got {a.dtype}")
            a = quantize_real(a, t.quant.scale[0], t.quant.zero_point[0], t.dtype)
        out.append(a)
    return out
