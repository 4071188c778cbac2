"""Serialize an ir.Graph into a .tflite flatbuffer: the faithful inverse of mcuq.reader.

Used to build single-op test models and to hand quantized graphs to TensorFlow Lite Micro.
Writes schema version 3 with one subgraph; buffer 0 is the empty buffer, every constant
tensor gets its own 16-byte-aligned buffer. Non-constant tensors that are read but neither
written by a node nor fed as graph inputs are the model's state and are marked variable.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flatbuffers
import numpy as np
import tflite
from tflite.utils import BUILTIN_OPCODE2NAME

from mcuq.errors import ModelError
from mcuq.ir import ACTIVATIONS, NO_TENSOR, Graph, Node, Op, Quant, Tensor

SCHEMA_VERSION = 3
BUFFER_ALIGN = 16
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127  # deprecated_builtin_code is int8 in the schema

_NAME2OPCODE = {name: code for code, name in BUILTIN_OPCODE2NAME.items()}
_TENSOR_TYPES = {k.lower(): v for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
_PADDING = {"SAME": tflite.Padding.SAME, "VALID": tflite.Padding.VALID}
_WEIGHTS_FORMAT = {"DEFAULT": 0, "SHUFFLED4x16INT8": 1}

_Builder = flatbuffers.Builder
_Options = tuple[int, int]  # (BuiltinOptions enum value, table offset)


def write_model(graph: Graph) -> bytes:
    """Serialize ``graph`` to .tflite bytes that mcuq.reader and TFLM read back unchanged."""
    b = flatbuffers.Builder(1 << 16)
    n_t = len(graph.tensors)
    for n in graph.nodes:
        for t in (*n.inputs, *n.outputs):
            if t != NO_TENSOR and not 0 <= t < n_t:
                raise ModelError(f"node {n.index} ({n.op}) names tensor {t}, graph has {n_t}")

    buffer_of: dict[int, int] = {}
    data_vectors: list[int] = []
    for t in graph.tensors:
        raw = _tensor_bytes(t)
        if raw:
            buffer_of[t.index] = len(data_vectors) + 1
            data_vectors.append(_aligned_bytes(b, raw))
    buffers = [_buffer(b, None)] + [_buffer(b, v) for v in data_vectors]

    variables = _state_tensors(graph)
    tensors = [_tensor(b, t, buffer_of.get(t.index, 0), t.index in variables) for t in graph.tensors]

    code_keys: list[tuple[str, int]] = []
    operators = []
    for n in graph.nodes:
        key = (str(n.op), n.version)
        if key not in code_keys:
            code_keys.append(key)
        operators.append(_operator(b, n, code_keys.index(key)))
    opcodes = [_opcode(b, name, version) for name, version in code_keys]

    name = b.CreateString(graph.name)
    sg_tensors = _table_vector(b, tflite.SubGraphStartTensorsVector, tensors)
    sg_inputs = _int32_vector(b, graph.inputs)
    sg_outputs = _int32_vector(b, graph.outputs)
    sg_ops = _table_vector(b, tflite.SubGraphStartOperatorsVector, operators)
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, sg_tensors)
    tflite.SubGraphAddInputs(b, sg_inputs)
    tflite.SubGraphAddOutputs(b, sg_outputs)
    tflite.SubGraphAddOperators(b, sg_ops)
    tflite.SubGraphAddName(b, name)
    subgraph = tflite.SubGraphEnd(b)

    m_codes = _table_vector(b, tflite.ModelStartOperatorCodesVector, opcodes)
    m_subgraphs = _table_vector(b, tflite.ModelStartSubgraphsVector, [subgraph])
    m_buffers = _table_vector(b, tflite.ModelStartBuffersVector, buffers)
    description = b.CreateString("mcuq")
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, SCHEMA_VERSION)
    tflite.ModelAddOperatorCodes(b, m_codes)
    tflite.ModelAddSubgraphs(b, m_subgraphs)
    tflite.ModelAddDescription(b, description)
    tflite.ModelAddBuffers(b, m_buffers)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _state_tensors(graph: Graph) -> set[int]:
    """Tensors read by a node that nothing produces and the caller does not feed (e.g. RNN state)."""
    produced = set(graph.producers()) | set(graph.inputs)
    read = {t for n in graph.nodes for t in n.inputs if t != NO_TENSOR}
    return {t for t in read - produced if not graph.tensors[t].is_const}


def _tensor_bytes(t: Tensor) -> bytes:
    """Little-endian payload of a constant tensor (int4 packed two per byte, low nibble first)."""
    if t.data is None or t.data.size == 0:
        return b""
    if t.data.shape != t.shape:
        raise ModelError(f"tensor {t.index} '{t.name}': data shape {t.data.shape} is not {t.shape}")
    if t.dtype == "int4":
        values = np.asarray(t.data, np.int64).reshape(-1)
        if values.min() < -8 or values.max() > 7:
            raise ModelError(f"tensor {t.index} '{t.name}': int4 data outside [-8, 7]")
        nib = (values & 0xF).astype(np.uint8)
        if nib.size % 2:
            nib = np.append(nib, np.uint8(0))
        return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes()
    stored = np.ascontiguousarray(t.data, np.dtype(t.dtype).newbyteorder("<"))
    if t.data.dtype != stored.dtype and not np.array_equal(stored, t.data):
        raise ModelError(f"tensor {t.index} '{t.name}': {t.data.dtype} data does not fit {t.dtype}")
    return stored.tobytes()


def _aligned_bytes(b: _Builder, raw: bytes) -> int:
    """A ubyte vector whose first element is BUFFER_ALIGN-aligned in the final file."""
    b.StartVector(1, len(raw), BUFFER_ALIGN)
    b.head -= len(raw)
    b.Bytes[b.head : b.head + len(raw)] = raw
    return b.EndVector()


def _buffer(b: _Builder, data: int | None) -> int:
    tflite.BufferStart(b)
    if data is not None:
        tflite.BufferAddData(b, data)
    return tflite.BufferEnd(b)


def _tensor(b: _Builder, t: Tensor, buffer: int, variable: bool) -> int:
    if t.dtype not in _TENSOR_TYPES:
        raise ModelError(f"tensor {t.index} '{t.name}' has type {t.dtype}, which .tflite cannot store")
    name = b.CreateString(t.name)
    shape = _int32_vector(b, t.shape)
    quant = _quantization(b, t.quant) if t.quant is not None else None
    tflite.TensorStart(b)
    tflite.TensorAddShape(b, shape)
    tflite.TensorAddType(b, _TENSOR_TYPES[t.dtype])
    tflite.TensorAddBuffer(b, buffer)
    tflite.TensorAddName(b, name)
    if quant is not None:
        tflite.TensorAddQuantization(b, quant)
    if variable:
        tflite.TensorAddIsVariable(b, True)
    return tflite.TensorEnd(b)


def _quantization(b: _Builder, q: Quant) -> int:
    scale = b.CreateNumpyVector(np.asarray(q.scale, np.float32))
    zero_point = b.CreateNumpyVector(np.asarray(q.zero_point, np.int64))
    tflite.QuantizationParametersStart(b)
    tflite.QuantizationParametersAddScale(b, scale)
    tflite.QuantizationParametersAddZeroPoint(b, zero_point)
    tflite.QuantizationParametersAddQuantizedDimension(b, q.axis)
    return tflite.QuantizationParametersEnd(b)


def _opcode(b: _Builder, name: str, version: int) -> int:
    custom = None
    if name.startswith("CUSTOM:"):
        code = tflite.BuiltinOperator.CUSTOM
        custom = b.CreateString(name[len("CUSTOM:") :])
    elif name in _NAME2OPCODE:
        code = _NAME2OPCODE[name]
    elif name.startswith("UNKNOWN_OPCODE_"):
        code = int(name[len("UNKNOWN_OPCODE_") :])
    else:
        raise ModelError(f"operator {name} has no TFLite builtin code")
    tflite.OperatorCodeStart(b)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, _PLACEHOLDER_FOR_GREATER_OP_CODES))
    tflite.OperatorCodeAddBuiltinCode(b, code)
    tflite.OperatorCodeAddVersion(b, version)
    if custom is not None:
        tflite.OperatorCodeAddCustomCode(b, custom)
    return tflite.OperatorCodeEnd(b)


def _operator(b: _Builder, n: Node, opcode_index: int) -> int:
    writer = _OPTIONS.get(n.op)
    options = writer(b, n.attrs, n) if writer is not None else None
    inputs = _int32_vector(b, n.inputs)
    outputs = _int32_vector(b, n.outputs)
    tflite.OperatorStart(b)
    tflite.OperatorAddOpcodeIndex(b, opcode_index)
    tflite.OperatorAddInputs(b, inputs)
    tflite.OperatorAddOutputs(b, outputs)
    if options is not None:
        tflite.OperatorAddBuiltinOptionsType(b, options[0])
        tflite.OperatorAddBuiltinOptions(b, options[1])
    return tflite.OperatorEnd(b)


def _int32_vector(b: _Builder, values) -> int:
    return b.CreateNumpyVector(np.asarray(values, np.int32).reshape(-1))


def _table_vector(b: _Builder, start: Callable[[_Builder, int], Any], offsets: list[int]) -> int:
    start(b, len(offsets))
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _activation(a: Mapping[str, Any], n: Node) -> int:
    act = a.get("activation", "NONE")
    if act not in ACTIVATIONS:
        raise ModelError(f"node {n.index} ({n.op}) has unknown fused activation {act!r}")
    return ACTIVATIONS.index(act)


def _padding(a: Mapping[str, Any], n: Node) -> int:
    pad = a.get("padding", "SAME")
    if pad not in _PADDING:
        raise ModelError(f"node {n.index} ({n.op}) has unknown padding {pad!r}")
    return _PADDING[pad]


def _conv_options(b: _Builder, a: Mapping[str, Any], n: Node) -> _Options:
    if n.op == Op.CONV_2D:
        tflite.Conv2DOptionsStart(b)
        tflite.Conv2DOptionsAddPadding(b, _padding(a, n))
        tflite.Conv2DOptionsAddStrideW(b, a.get("stride_w", 1))
        tflite.Conv2DOptionsAddStrideH(b, a.get("stride_h", 1))
        tflite.Conv2DOptionsAddDilationWFactor(b, a.get("dilation_w", 1))
        tflite.Conv2DOptionsAddDilationHFactor(b, a.get("dilation_h", 1))
        tflite.Conv2DOptionsAddFusedActivationFunction(b, _activation(a, n))
        return tflite.BuiltinOptions.Conv2DOptions, tflite.Conv2DOptionsEnd(b)
    tflite.DepthwiseConv2DOptionsStart(b)
    tflite.DepthwiseConv2DOptionsAddPadding(b, _padding(a, n))
    tflite.DepthwiseConv2DOptionsAddStrideW(b, a.get("stride_w", 1))
    tflite.DepthwiseConv2DOptionsAddStrideH(b, a.get("stride_h", 1))
    tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, a.get("depth_multiplier", 1))
    tflite.DepthwiseConv2DOptionsAddDilationWFactor(b, a.get("dilation_w", 1))
    tflite.DepthwiseConv2DOptionsAddDilationHFactor(b, a.get("dilation_h", 1))
    tflite.DepthwiseConv2DOptionsAddFusedActivationFunction(b, _activation(a, n))
    return tflite.BuiltinOptions.DepthwiseConv2DOptions, tflite.DepthwiseConv2DOptionsEnd(b)


def _fc_options(b: _Builder, a: Mapping[str, Any], n: Node) -> _Options:
    fmt = a.get("weights_format", "DEFAULT")
    if fmt not in _WEIGHTS_FORMAT:
        raise ModelError(f"node {n.index} ({n.op}) has unknown weights_format {fmt!r}")
    tflite.FullyConnectedOptionsStart(b)
    tflite.FullyConnectedOptionsAddFusedActivationFunction(b, _activation(a, n))
    tflite.FullyConnectedOptionsAddWeightsFormat(b, _WEIGHTS_FORMAT[fmt])
    tflite.FullyConnectedOptionsAddKeepNumDims(b, bool(a.get("keep_num_dims", False)))
    return tflite.BuiltinOptions.FullyConnectedOptions, tflite.FullyConnectedOptionsEnd(b)


def _pool_options(b: _Builder, a: Mapping[str, Any], n: Node) -> _Options:
    tflite.Pool2DOptionsStart(b)
    tflite.Pool2DOptionsAddPadding(b, _padding(a, n))
    tflite.Pool2DOptionsAddStrideW(b, a.get("stride_w", 1))
    tflite.Pool2DOptionsAddStrideH(b, a.get("stride_h", 1))
    tflite.Pool2DOptionsAddFilterWidth(b, a.get("filter_w", 1))
    tflite.Pool2DOptionsAddFilterHeight(b, a.get("filter_h", 1))
    tflite.Pool2DOptionsAddFusedActivationFunction(b, _activation(a, n))
    return tflite.BuiltinOptions.Pool2DOptions, tflite.Pool2DOptionsEnd(b)


def _add_options(b: _Builder, a: Mapping[str, Any], n: Node) -> _Options:
    tflite.AddOptionsStart(b)
    tflite.AddOptionsAddFusedActivationFunction(b, _activation(a, n))
    return tflite.BuiltinOptions.AddOptions, tflite.AddOptionsEnd(b)


def _mul_options(b: _Builder, a: Mapping[str, Any], n: Node) -> _Options:
    tflite.MulOptionsStart(b)
    tflite.MulOptionsAddFusedActivationFunction(b, _activation(a, n))
    return tflite.BuiltinOptions.MulOptions, tflite.MulOptionsEnd(b)


def _sub_options(b: _Builder, a: Mapping[str, Any], n: Node) -> _Options:
    tflite.SubOptionsStart(b)
    tflite.SubOptionsAddFusedActivationFunction(b, _activation(a, n))
    return tflite.BuiltinOptions.SubOptions, tflite.SubOptionsEnd(b)


def _concat_options(b: _Builder, a: Mapping[str, Any], n: Node) -> _Options:
    tflite.ConcatenationOptionsStart(b)
    tflite.ConcatenationOptionsAddAxis(b, a.get("axis", 0))
    tflite.ConcatenationOptionsAddFusedActivationFunction(b, _activation(a, n))
    return tflite.BuiltinOptions.ConcatenationOptions, tflite.ConcatenationOptionsEnd(b)


def _softmax_options(b: _Builder, a: Mapping[str, Any], n: Node) -> _Options:
    tflite.SoftmaxOptionsStart(b)
    tflite.SoftmaxOptionsAddBeta(b, float(a.get("beta", 1.0)))
    return tflite.BuiltinOptions.SoftmaxOptions, tflite.SoftmaxOptionsEnd(b)


def _reshape_options(b: _Builder, a: Mapping[str, Any], n: Node) -> _Options | None:
    new_shape = a.get("new_shape")
    if new_shape is None:
        return None
    vec = _int32_vector(b, new_shape)
    tflite.ReshapeOptionsStart(b)
    tflite.ReshapeOptionsAddNewShape(b, vec)
    return tflite.BuiltinOptions.ReshapeOptions, tflite.ReshapeOptionsEnd(b)


def _mean_options(b: _Builder, a: Mapping[str, Any], n: Node) -> _Options:
    tflite.ReducerOptionsStart(b)
    tflite.ReducerOptionsAddKeepDims(b, bool(a.get("keep_dims", False)))
    return tflite.BuiltinOptions.ReducerOptions, tflite.ReducerOptionsEnd(b)


def _empty_options(start: Callable, end: Callable, kind: int) -> Callable[..., _Options]:
    def write(b: _Builder, a: Mapping[str, Any], n: Node) -> _Options:
        start(b)
        return kind, end(b)

    return write


_OPTIONS: dict[Op | str, Callable[[_Builder, Mapping[str, Any], Node], _Options | None]] = {
    Op.CONV_2D: _conv_options,
    Op.DEPTHWISE_CONV_2D: _conv_options,
    Op.FULLY_CONNECTED: _fc_options,
    Op.AVERAGE_POOL_2D: _pool_options,
    Op.MAX_POOL_2D: _pool_options,
    Op.ADD: _add_options,
    Op.MUL: _mul_options,
    "SUB": _sub_options,
    Op.CONCATENATION: _concat_options,
    Op.SOFTMAX: _softmax_options,
    Op.RESHAPE: _reshape_options,
    Op.MEAN: _mean_options,
    Op.PAD: _empty_options(tflite.PadOptionsStart, tflite.PadOptionsEnd, tflite.BuiltinOptions.PadOptions),
    Op.QUANTIZE: _empty_options(
        tflite.QuantizeOptionsStart, tflite.QuantizeOptionsEnd, tflite.BuiltinOptions.QuantizeOptions
    ),
    Op.DEQUANTIZE: _empty_options(
        tflite.DequantizeOptionsStart, tflite.DequantizeOptionsEnd, tflite.BuiltinOptions.DequantizeOptions
    ),
}
