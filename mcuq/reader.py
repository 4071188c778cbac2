"""Read a .tflite flatbuffer into an ir.Graph, faithfully: no math, no fusion.

Every failure of a corrupt, truncated or hostile file becomes one ModelError naming the file
and what is wrong; sizes are checked against the file before anything is allocated.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable

import numpy as np
import tflite
from tflite.utils import BUILTIN_OPCODE2NAME

from mcuq.errors import ModelError
from mcuq.ir import ACTIVATIONS, NO_TENSOR, Graph, Node, Op, Quant, Tensor

# What a file may ask for, checked before anything is allocated or iterated (a file past a cap is
# refused with a ModelError naming it). The caps sit far above any model a microcontroller runs
# (the largest board has 4 MiB of RAM; a float tensor shrinks 4x when quantized to int8) and
# bound the host's memory and time on a hostile file.
MAX_FILE_BYTES = 512 << 20
MAX_TENSOR_BYTES = 16 << 20  # one tensor
MAX_GRAPH_BYTES = 256 << 20  # all tensors together (the simulator may hold them all)
MAX_RANK = 8  # dimensions of a tensor (TFLM handles up to 6)
MAX_COUNT = 1 << 15  # tensors, operators, operator codes, buffers (the firmware's indices are int16)
MAX_OPERANDS = 1024  # inputs or outputs of one operator or of the graph
MAX_OVERHANG = 64  # elements a convolution or pooling window may reach past its input (padding)

_DTYPES = {
    tflite.TensorType.FLOAT32: "float32",
    tflite.TensorType.FLOAT16: "float16",
    tflite.TensorType.FLOAT64: "float64",
    tflite.TensorType.INT32: "int32",
    tflite.TensorType.UINT8: "uint8",
    tflite.TensorType.INT64: "int64",
    tflite.TensorType.BOOL: "bool",
    tflite.TensorType.INT16: "int16",
    tflite.TensorType.INT8: "int8",
    tflite.TensorType.UINT16: "uint16",
    tflite.TensorType.UINT32: "uint32",
    tflite.TensorType.UINT64: "uint64",
    tflite.TensorType.INT4: "int4",
}
_TYPE_NAMES = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
_PADDING = {tflite.Padding.SAME: "SAME", tflite.Padding.VALID: "VALID"}
# Operands of the ops mcuq knows (TFLite's schema): (min inputs, max inputs, {operand: rank}), where
# an operand is an input index or "out"; ranks only where attributes name axes of fixed layouts.
_CONV_RANKS = {0: 4, 1: 4, 2: 1, "out": 4}
_OPERANDS = {
    Op.CONV_2D: (2, 3, _CONV_RANKS), Op.DEPTHWISE_CONV_2D: (2, 3, _CONV_RANKS),
    Op.FULLY_CONNECTED: (2, 3, {1: 2, 2: 1}),
    Op.AVERAGE_POOL_2D: (1, 1, {0: 4, "out": 4}), Op.MAX_POOL_2D: (1, 1, {0: 4, "out": 4}),
    Op.ADD: (2, 2, {}), Op.MUL: (2, 2, {}), Op.RESHAPE: (1, 2, {}), Op.SOFTMAX: (1, 1, {}),
    Op.QUANTIZE: (1, 1, {}), Op.DEQUANTIZE: (1, 1, {}), Op.PAD: (2, 2, {1: 2}), Op.MEAN: (2, 2, {1: 1}),
    Op.CONCATENATION: (1, MAX_OPERANDS, {}), Op.LOGISTIC: (1, 1, {}), Op.TANH: (1, 1, {}),
}
_WEIGHTED = (Op.CONV_2D, Op.DEPTHWISE_CONV_2D, Op.FULLY_CONNECTED)
_CONSTANT_DATA_OK = (Op.ADD, Op.MUL, Op.CONCATENATION, Op.DEQUANTIZE)  # ops whose input 0 may be a constant
_INTEGER = ("int8", "uint8", "int16")  # zero points must lie in these types' ranges
# Window attributes that must be at least 1.
_POSITIVE = ("stride_h", "stride_w", "dilation_h", "dilation_w", "filter_h", "filter_w", "depth_multiplier")


def read_model(path: str | Path) -> Graph:
    """Parse the .tflite file at ``path`` into a Graph (raises ModelError on any defect)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ModelError(f"{path}: cannot open ({e.strerror})") from None
    if size > MAX_FILE_BYTES:
        raise ModelError(f"{path}: {size} bytes is larger than the {MAX_FILE_BYTES}-byte limit")
    return read_model_bytes(path.read_bytes(), name=path.name, origin=str(path))


def read_model_bytes(buf: bytes, name: str = "model", origin: str = "<bytes>") -> Graph:
    """Parse .tflite bytes; ``origin`` names the source in error messages."""
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelError(f"{origin}: not a .tflite file (no TFL3 flatbuffer identifier)")
    try:
        return _Reader(buf, name, origin).graph()
    except ModelError:
        raise
    except (struct.error, IndexError, ValueError, TypeError, OverflowError, AttributeError) as e:
        raise ModelError(f"{origin}: corrupt or truncated flatbuffer ({type(e).__name__}: {e})") from None


Fail = Callable[[str], ModelError]


def _check_shape(name: str, shape: tuple[int, ...], dtype: str, fail: Fail) -> int:
    """The element count of a tensor of a known type, rank and size (ModelError otherwise)."""
    if dtype not in _DTYPES.values():
        raise fail(f"tensor '{name}' has type {dtype}, which mcuq does not handle")
    if len(shape) > MAX_RANK:
        raise fail(f"tensor '{name}' has {len(shape)} dimensions, limit {MAX_RANK}")
    if any(d < 0 for d in shape):
        raise fail(f"tensor '{name}' has a negative dimension {list(shape)}")
    count = 1
    for d in shape:
        count *= d
    nbytes = (count + 1) // 2 if dtype == "int4" else count * np.dtype(dtype).itemsize
    if nbytes > MAX_TENSOR_BYTES:
        raise fail(f"tensor '{name}' {list(shape)} {dtype} takes {nbytes:,} bytes, limit {MAX_TENSOR_BYTES:,}")
    return count


def _check_quant(name: str, q: Quant, shape: tuple[int, ...], dtype: str, fail: Fail) -> None:
    if len(q.scale) != len(q.zero_point):
        raise fail(f"tensor '{name}' has {len(q.scale)} scales and {len(q.zero_point)} zero points")
    if len(q.scale) > 1 and not (0 <= q.axis < len(shape) and shape[q.axis] == len(q.scale)):
        raise fail(f"tensor '{name}' has {len(q.scale)} scales but dimension {q.axis} of {list(shape)}")
    if not all(np.isfinite(s) and s > 0 for s in q.scale):
        raise fail(f"tensor '{name}' has a non-positive or non-finite scale")
    info = np.iinfo(dtype if dtype in _INTEGER else "int32")
    if not all(info.min <= z <= info.max for z in q.zero_point):
        raise fail(f"tensor '{name}' has a zero point outside [{info.min}, {info.max}]")


def _check_total(tensors: tuple[Tensor, ...], fail: Fail) -> None:
    total = sum(t.nbytes for t in tensors)
    if total > MAX_GRAPH_BYTES:
        raise fail(f"tensors take {total:,} bytes together, limit {MAX_GRAPH_BYTES:,}")


def _check_dataflow(graph: Graph, fail: Fail) -> None:
    """What every later stage relies on: inputs and outputs; window attributes of at least 1;
    operand counts and ranks of the ops mcuq knows; each tensor a node of mcuq's reads is a graph
    input, a constant or written by an earlier node; no tensor is written twice, no constant or
    graph input is overwritten; every graph output is written by a node. Nodes of other ops are
    only refused later, by name."""
    if not graph.inputs or not graph.outputs:
        raise fail(f"graph has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs, "
                   "needs at least one of each")
    written = set(graph.inputs)
    for t in graph.inputs:
        if graph.tensors[t].is_const:
            raise fail(f"graph input '{graph.tensors[t].name}' is a constant")
    for node in graph.nodes:
        where = f"operator {node.index} ({node.op})"
        for key in _POSITIVE:
            if key in node.attrs and node.attrs[key] < 1:
                raise fail(f"{where} has {key} {node.attrs[key]}, needs at least 1")
        if node.supported:
            _check_operands(node, graph.tensors, where, fail)
            for t in node.inputs:
                if t != NO_TENSOR and t not in written and not graph.tensors[t].is_const:
                    raise fail(f"{where} reads tensor '{graph.tensors[t].name}' before any operator writes it")
        if not node.outputs or NO_TENSOR in node.outputs:
            raise fail(f"{where} has no output tensor")
        for t in node.outputs:
            if t in written or graph.tensors[t].is_const:
                raise fail(f"{where} writes tensor '{graph.tensors[t].name}', which is a graph input, "
                           "a constant or written before")
            written.add(t)
    for t in graph.outputs:
        if t not in written or t in graph.inputs:
            raise fail(f"graph output '{graph.tensors[t].name}' is not written by any operator")


def _check_window(node: Node, tensors: tuple[Tensor, ...], where: str, fail: Fail) -> None:
    """A window (dilated filter or pool) reaches at most MAX_OVERHANG elements past its input,
    so padding it stays small (a dilation of 65536 would pad a 6x6 input to 6x131078)."""
    a, x = node.attrs, tensors[node.inputs[0]].shape
    if node.op in (Op.CONV_2D, Op.DEPTHWISE_CONV_2D):
        kh, kw = tensors[node.inputs[1]].shape[1:3]
    else:
        kh, kw = a["filter_h"], a["filter_w"]
    for axis, k, d, size in (("height", kh, a.get("dilation_h", 1), x[1]),
                             ("width", kw, a.get("dilation_w", 1), x[2])):
        extent = (k - 1) * d + 1
        if extent > size + MAX_OVERHANG:
            raise fail(f"{where} has a window {extent} wide over an input {axis} of {size}, "
                       f"limit {size + MAX_OVERHANG}")


def _check_operands(node: Node, tensors: tuple[Tensor, ...], where: str, fail: Fail) -> None:
    lo, hi, ranks = _OPERANDS[node.op]
    if not lo <= len(node.inputs) <= hi or len(node.outputs) != 1:
        need = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise fail(f"{where} has {len(node.inputs)} inputs and {len(node.outputs)} outputs, "
                   f"needs {need} inputs and 1 output")
    for k in range(min(lo, 2)):  # the data input and a required second operand are never absent
        if node.inputs[k] == NO_TENSOR:
            raise fail(f"{where} input {k} is absent")
    if node.op not in _CONSTANT_DATA_OK and tensors[node.inputs[0]].is_const:
        raise fail(f"{where} data input '{tensors[node.inputs[0]].name}' is a constant")
    if node.op in _WEIGHTED and not tensors[node.inputs[1]].is_const:
        raise fail(f"{where} filter '{tensors[node.inputs[1]].name}' is not a constant")
    for t in (*node.inputs, *node.outputs):
        if t != NO_TENSOR and 0 in tensors[t].shape:
            raise fail(f"{where} operand '{tensors[t].name}' {list(tensors[t].shape)} has no elements")
    for k, rank in ranks.items():
        t = node.outputs[0] if k == "out" else node.inputs[k] if k < len(node.inputs) else NO_TENSOR
        if t != NO_TENSOR and len(tensors[t].shape) != rank:
            raise fail(f"{where} {'output' if k == 'out' else f'input {k}'} '{tensors[t].name}' has "
                       f"shape {list(tensors[t].shape)}, needs {rank} dimensions")
    if node.op in (Op.CONV_2D, Op.DEPTHWISE_CONV_2D, Op.AVERAGE_POOL_2D, Op.MAX_POOL_2D):
        _check_window(node, tensors, where, fail)


def _text(raw: bytes | None, limit: int = 120) -> str:
    """A name from the file, printable on one line (and in a C comment): control characters and
    '*/' replaced, long names cut."""
    text = "".join(c if c.isprintable() else "?" for c in (raw or b"").decode("utf-8", "replace"))
    text = text.replace("*/", "*?")
    return text if len(text) <= limit else text[:limit] + "..."


class _Reader:
    def __init__(self, buf: bytes, name: str, origin: str):
        self.buf = buf
        self.name = name
        self.origin = origin
        self.model = tflite.Model.GetRootAs(buf, 0)

    def fail(self, what: str) -> ModelError:
        return ModelError(f"{self.origin}: {what}")

    def count(self, n: int, what: str, limit: int = MAX_COUNT) -> int:
        if n > limit:
            raise self.fail(f"{what}: {n:,}, limit {limit:,}")
        return n

    def graph(self) -> Graph:
        m = self.model
        if m.SubgraphsLength() < 1:
            raise self.fail("model has no subgraph")
        self.count(m.BuffersLength(), "buffers")
        sg = m.Subgraphs(0)
        opnames, versions = self.opcodes()
        n_t = self.count(sg.TensorsLength(), "tensors")
        tensors = tuple(self.tensor(sg.Tensors(i), i) for i in range(n_t))
        _check_total(tensors, self.fail)
        nodes = []
        for i in range(self.count(sg.OperatorsLength(), "operators")):
            op = sg.Operators(i)
            code = op.OpcodeIndex()
            if not 0 <= code < len(opnames):
                raise self.fail(f"operator {i} names opcode {code}, model has {len(opnames)}")
            ins = self.indices(op.InputsAsNumpy() if op.InputsLength() else [], n_t, f"operator {i} input")
            outs = self.indices(op.OutputsAsNumpy() if op.OutputsLength() else [], n_t, f"operator {i} output")
            name = opnames[code]
            kind = Op(name) if name in Op.__members__ else name
            attrs = self.attributes(kind, op, i)
            nodes.append(Node(i, kind, ins, outs, attrs, versions[code]))
        inputs = self.indices(sg.InputsAsNumpy() if sg.InputsLength() else [], n_t, "graph input")
        outputs = self.indices(sg.OutputsAsNumpy() if sg.OutputsLength() else [], n_t, "graph output")
        if NO_TENSOR in inputs or NO_TENSOR in outputs:
            raise self.fail("graph input or output index -1")
        graph = Graph(tensors, tuple(nodes), inputs, outputs, self.name)
        _check_dataflow(graph, self.fail)
        return graph

    def opcodes(self) -> tuple[list[str], list[int]]:
        names, versions = [], []
        for i in range(self.count(self.model.OperatorCodesLength(), "operator codes")):
            oc = self.model.OperatorCodes(i)
            code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
            if code == tflite.BuiltinOperator.CUSTOM:
                custom = oc.CustomCode()
                names.append("CUSTOM:" + (_text(custom) or "?"))
            else:
                names.append(BUILTIN_OPCODE2NAME.get(code, f"UNKNOWN_OPCODE_{code}"))
            versions.append(int(oc.Version()))
        return names, versions

    def indices(self, arr, n_tensors: int, what: str) -> tuple[int, ...]:
        self.count(len(arr), f"{what}s", MAX_OPERANDS)
        out = tuple(int(x) for x in arr)
        for x in out:
            if x != NO_TENSOR and not 0 <= x < n_tensors:
                raise self.fail(f"{what} names tensor {x}, model has {n_tensors}")
        return out

    def tensor(self, t, index: int) -> Tensor:
        name = _text(t.Name()) or f"tensor_{index}"
        dtype = _DTYPES.get(t.Type())
        if dtype is None:
            raise self.fail(f"tensor '{name}' has type {_TYPE_NAMES.get(t.Type(), t.Type())}, "
                            "which mcuq does not handle")
        self.count(t.ShapeLength(), f"tensor '{name}' dimensions", MAX_RANK)
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        if t.ShapeSignatureLength():
            sig = [int(d) for d in t.ShapeSignatureAsNumpy()]
            if len(sig) == len(shape) and any(d < 0 for d in sig[1:]):
                raise self.fail(f"tensor '{name}' has a dynamic shape {sig}; mcuq needs static shapes")
        count = _check_shape(name, shape, dtype, self.fail)
        quant = self.quantization(t.Quantization(), name, shape, dtype)
        data = self.constant(t.Buffer(), name, dtype, shape, count)
        return Tensor(index, name, shape, dtype, quant, data)

    def quantization(self, q, name: str, shape: tuple[int, ...], dtype: str) -> Quant | None:
        if q is None or q.ScaleLength() == 0:
            return None
        scale = tuple(float(s) for s in q.ScaleAsNumpy())
        zps = tuple(int(z) for z in q.ZeroPointAsNumpy()) if q.ZeroPointLength() else (0,)
        if len(zps) < len(scale):
            zps = zps + (zps[0],) * (len(scale) - len(zps))  # TFLM: channels without one use zp[0]
        quant = Quant(scale, zps[: len(scale)], int(q.QuantizedDimension()))
        _check_quant(name, quant, shape, dtype, self.fail)
        return quant

    def constant(self, index: int, name: str, dtype: str, shape, count: int) -> np.ndarray | None:
        if index == 0:
            return None
        if not 0 <= index < self.model.BuffersLength():
            raise self.fail(f"tensor '{name}' names buffer {index}, model has {self.model.BuffersLength()}")
        b = self.model.Buffers(index)
        offset, size = int(b.Offset()), int(b.Size())
        if offset > 1:  # large-model layout: data lives after the flatbuffer
            if offset + size > len(self.buf):
                raise self.fail(f"tensor '{name}': buffer {index} runs past the end of the file")
            raw = self.buf[offset : offset + size]
        elif b.DataLength():
            raw = b.DataAsNumpy().tobytes()
        else:
            return None
        if dtype == "int4":
            need = (count + 1) // 2
            if len(raw) != need:
                raise self.fail(f"tensor '{name}': int4 buffer has {len(raw)} bytes, shape needs {need}")
            packed = np.frombuffer(raw, np.uint8)
            nib = np.empty(count, np.int8)
            nib[0::2] = (packed[: (count + 1) // 2] & 0xF).astype(np.int8)[: len(nib[0::2])]
            nib[1::2] = (packed[: count // 2] >> 4).astype(np.int8)
            nib = np.where(nib > 7, nib - 16, nib).astype(np.int8)
            arr = nib.reshape(shape)
        else:
            dt = np.dtype(dtype)
            if len(raw) != count * dt.itemsize:
                raise self.fail(
                    f"tensor '{name}': buffer {index} has {len(raw)} bytes, shape {list(shape)} "
                    f"of {dtype} needs {count * dt.itemsize}"
                )
            arr = np.frombuffer(raw, dt.newbyteorder("<")).astype(dt).reshape(shape)
            if dt.kind == "f" and not np.isfinite(arr).all():
                raise self.fail(f"tensor '{name}' holds NaN or infinite values")
        arr.setflags(write=False)
        return arr

    def attributes(self, op_kind, op, i: int) -> dict:
        """Decode the builtin options of the ops mcuq knows; others keep no attributes."""
        def opts(cls):
            table = op.BuiltinOptions()
            o = cls()
            if table is not None:
                o.Init(table.Bytes, table.Pos)
                return o
            return None

        def act(o) -> str:
            a = o.FusedActivationFunction() if o is not None else 0
            if not 0 <= a < len(ACTIVATIONS):
                raise self.fail(f"operator {i} ({op_kind}) has unknown fused activation {a}")
            return ACTIVATIONS[a]

        def padding(o) -> str:
            p = o.Padding() if o is not None else 0
            if p not in _PADDING:
                raise self.fail(f"operator {i} ({op_kind}) has unknown padding {p}")
            return _PADDING[p]

        if op_kind in (Op.CONV_2D, Op.DEPTHWISE_CONV_2D):
            cls = tflite.Conv2DOptions if op_kind == Op.CONV_2D else tflite.DepthwiseConv2DOptions
            o = opts(cls)
            a = {
                "padding": padding(o),
                "stride_h": o.StrideH() if o else 1,
                "stride_w": o.StrideW() if o else 1,
                "dilation_h": o.DilationHFactor() if o else 1,
                "dilation_w": o.DilationWFactor() if o else 1,
                "activation": act(o),
            }
            if op_kind == Op.DEPTHWISE_CONV_2D:
                a["depth_multiplier"] = o.DepthMultiplier() if o else 1
            return a
        if op_kind == Op.FULLY_CONNECTED:
            o = opts(tflite.FullyConnectedOptions)
            fmt = o.WeightsFormat() if o else 0
            return {
                "activation": act(o),
                "keep_num_dims": bool(o.KeepNumDims()) if o else False,
                "weights_format": "DEFAULT" if fmt == 0 else "SHUFFLED4x16INT8",
            }
        if op_kind in (Op.AVERAGE_POOL_2D, Op.MAX_POOL_2D):
            o = opts(tflite.Pool2DOptions)
            return {
                "padding": padding(o),
                "stride_h": o.StrideH() if o else 1,
                "stride_w": o.StrideW() if o else 1,
                "filter_h": o.FilterHeight() if o else 1,
                "filter_w": o.FilterWidth() if o else 1,
                "activation": act(o),
            }
        if op_kind in (Op.ADD, Op.MUL, "SUB"):
            cls = {Op.ADD: tflite.AddOptions, Op.MUL: tflite.MulOptions, "SUB": tflite.SubOptions}[op_kind]
            return {"activation": act(opts(cls))}
        if op_kind == Op.CONCATENATION:
            o = opts(tflite.ConcatenationOptions)
            return {"axis": o.Axis() if o else 0, "activation": act(o)}
        if op_kind == Op.SOFTMAX:
            o = opts(tflite.SoftmaxOptions)
            return {"beta": float(o.Beta()) if o else 1.0}
        if op_kind == Op.RESHAPE:
            o = opts(tflite.ReshapeOptions)
            if o is not None and o.NewShapeLength():
                return {"new_shape": tuple(int(d) for d in o.NewShapeAsNumpy())}
            return {"new_shape": None}
        if op_kind == Op.MEAN:
            o = opts(tflite.ReducerOptions)
            return {"keep_dims": bool(o.KeepDims()) if o else False}
        return {}
