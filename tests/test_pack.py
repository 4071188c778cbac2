"""The packed C sources hold exactly what the host simulator uses: compile them for the host,
load them with ctypes, and read every table back."""

from __future__ import annotations

import ctypes
import dataclasses
import subprocess
import numpy as np
import pytest

from conftest import model_path
from mcuq import pipeline
from mcuq.ir import NO_TENSOR, Op
from mcuq.quant import Scheme
from mcuq.simulate import prepare_graph

MODELS = ["mlperf-tiny/ad01_int8.tflite", "mlperf-tiny/kws_ref_model.tflite",
          "mlperf-tiny/pretrainedResnet_quant.tflite", "mlperf-tiny/model_ToyCar_quant_fullint.tflite",
          "tflite-micro/simple_add_model.tflite", "tflite-micro/hello_world_int8.tflite"]
_DTYPE_CODES = {"int8": 0, "int16": 1, "int32": 2, "int64": 3, "float32": 4, "uint8": 5}
_CTYPES = {"int8": ctypes.c_int8, "int16": ctypes.c_int16, "int32": ctypes.c_int32,
           "int64": ctypes.c_int64, "float32": ctypes.c_float, "uint8": ctypes.c_uint8}


class TensorEntry(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("arena_offset", ctypes.c_int32), ("bytes", ctypes.c_int32),
                ("dtype", ctypes.c_uint8), ("rank", ctypes.c_uint8), ("shape", ctypes.c_int32 * 4)]


class NodeEntry(ctypes.Structure):
    _fields_ = [("op", ctypes.c_uint8), ("num_inputs", ctypes.c_uint8), ("num_outputs", ctypes.c_uint8),
                ("inputs", ctypes.POINTER(ctypes.c_int16)), ("outputs", ctypes.POINTER(ctypes.c_int16)),
                ("params", ctypes.c_void_p)]


def params_struct(p) -> type[ctypes.Structure]:
    """A ctypes mirror of the C struct pack derives from a Params dataclass."""
    fields = []
    for f in dataclasses.fields(p):
        v = getattr(p, f.name)
        if isinstance(v, (bool, int, np.integer)):
            fields.append((f.name, ctypes.c_int32))
        elif isinstance(v, float):
            fields.append((f.name, ctypes.c_float))
        else:
            fields.append((f.name, ctypes.c_void_p))
    return type(type(p).__name__ + "C", (ctypes.Structure,), {"_fields_": fields})


def read_array(address: int, dtype: str, count: int) -> np.ndarray:
    buf = (_CTYPES[dtype] * count).from_address(address)
    return np.ctypeslib.as_array(buf).copy()


@pytest.mark.parametrize("name", MODELS)
def test_packed_c_holds_the_simulator_params(name, tmp_path):
    packed = pipeline.pack(model_path(name), "qemu-m7", tmp_path / "out", None, Scheme.TFLITE, warn=print)
    graph = packed.integer.graph
    src = tmp_path / "out" / "src"
    lib = tmp_path / "model.so"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o", lib,
                    src / "mcuq_model.c"], check=True)
    so = ctypes.CDLL(str(lib))
    used = sorted({t for n in graph.nodes for t in (*n.inputs, *n.outputs) if t != NO_TENSOR}
                  | set(graph.inputs) | set(graph.outputs))
    tensors = (TensorEntry * len(used)).in_dll(so, "mcuq_tensors")
    for slot, t in enumerate(used):
        tensor, entry = graph.tensor(t), tensors[slot]
        assert entry.bytes == tensor.nbytes and entry.dtype == _DTYPE_CODES[tensor.dtype]
        assert list(entry.shape[: entry.rank]) == list(tensor.shape)
        if tensor.is_const:
            got = read_array(entry.data, tensor.dtype, tensor.size)
            assert np.array_equal(got, tensor.data.reshape(-1)), tensor.name
        else:
            assert not entry.data and entry.arena_offset == packed.plan.offsets[t]
            assert entry.arena_offset + entry.bytes <= packed.plan.size

    nodes = (NodeEntry * len(graph.nodes)).in_dll(so, "mcuq_nodes")
    for node, p, entry in zip(graph.nodes, prepare_graph(graph), nodes):
        assert entry.op == list(Op).index(node.op)
        assert [used[entry.inputs[i]] if entry.inputs[i] >= 0 else NO_TENSOR
                for i in range(entry.num_inputs)] == list(node.inputs)
        assert [used[entry.outputs[i]] for i in range(entry.num_outputs)] == list(node.outputs)
        c = params_struct(p).from_address(entry.params)
        for f in dataclasses.fields(p):
            want, got = getattr(p, f.name), getattr(c, f.name)
            if isinstance(want, (tuple, np.ndarray)):
                arr = np.asarray(want)
                dtype = "int32" if isinstance(want, tuple) else arr.dtype.name
                assert np.array_equal(read_array(got, dtype, arr.size), arr.reshape(-1)), (node.index, f.name)
            elif isinstance(want, float):
                assert got == np.float32(want), (node.index, f.name)
            else:
                assert got == int(want), (node.index, f.name)
    manifest_arena = packed.manifest["arena_bytes"]
    header = (src / "mcuq_model.h").read_text()
    assert f"#define MCUQ_ARENA_BYTES {manifest_arena}\n" in header
