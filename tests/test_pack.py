"""The packed C sources hold exactly what the host simulator uses: compile them for the host
against firmware/include, load them with ctypes, and read every table back. The parameter
structs of mcuq_kernels.h match the simulator's Params dataclasses field for field."""

from __future__ import annotations

import ctypes
import dataclasses
import inspect
import re
import subprocess

import numpy as np
import pytest

from conftest import REPO_ROOT, model_path
from mcuq import pipeline
from mcuq.errors import ModelError
from mcuq.ir import NO_TENSOR, Op
from mcuq.pack import PAIRED_DTYPE, PRUNED_DTYPE, _c_name, c_fields, pair_filters, prune_filters, render_sources
from mcuq.simulate import conv, elementwise, layout, nonlinear, pool, prepare_graph

INCLUDE = REPO_ROOT / "firmware" / "include"

MODELS = ["mlperf-tiny/ad01_int8.tflite", "mlperf-tiny/kws_ref_model.tflite", "mlperf-tiny/vww_96_int8.tflite",
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


def header_structs() -> dict[str, list[tuple[str, str]]]:
    """mcuq_kernels.h's parameter structs: name -> [(field, C type)], typedef aliases resolved."""
    text = re.sub(r"/\*.*?\*/", "", (INCLUDE / "mcuq_kernels.h").read_text(), flags=re.S)
    structs = {}
    for body, name in re.findall(r"typedef struct \{(.*?)\} (mcuq_\w+_params_t);", text, flags=re.S):
        fields = re.findall(r"^\s*((?:const )?\w+ \*?)(\w+);", body, flags=re.M)
        structs[name] = [(field, ctype.replace(" ", "")) for ctype, field in fields]
    for target, alias in re.findall(r"typedef (mcuq_\w+_params_t) (mcuq_\w+_params_t);", text):
        structs[alias] = structs[target]
    return structs


_CTYPE_OF_FIELD = {"int32_t": ctypes.c_int32, "float": ctypes.c_float}


def params_struct(p) -> type[ctypes.Structure]:
    """A ctypes mirror of the mcuq_kernels.h struct for a Params instance."""
    fields = [(name, _CTYPE_OF_FIELD.get(ctype, ctypes.c_void_p)) for name, ctype in header_structs()[_c_name(type(p))]]
    return type(type(p).__name__ + "C", (ctypes.Structure,), {"_fields_": fields})


def _python_ctype(annotation: str) -> str:
    """The C type a Params field annotation maps to (arrays are int32 multipliers/shifts)."""
    if annotation in ("int", "bool"):
        return "int32_t"
    if annotation == "float":
        return "float"
    if annotation.startswith("tuple[int") or annotation == "np.ndarray":
        return "constint32_t*"
    raise AssertionError(f"no C mapping for {annotation}")


def test_header_structs_match_params_dataclasses():
    """Every Params dataclass has its hand-written struct with the same C fields, same order."""
    params_types = {cls for module in (conv, elementwise, layout, nonlinear, pool)
                    for _, cls in inspect.getmembers(module, inspect.isclass)
                    if dataclasses.is_dataclass(cls) and cls.__name__.endswith("Params")}
    assert len(params_types) == 14
    structs = header_structs()
    for cls in params_types:
        want = [(f.name, _python_ctype(f.type)) for f in dataclasses.fields(cls) if not f.metadata.get("host_only")]
        assert structs.get(_c_name(cls)) == want, cls.__name__


def read_array(address: int, dtype: str, count: int) -> np.ndarray:
    buf = (_CTYPES[dtype] * count).from_address(address)
    return np.ctypeslib.as_array(buf).copy()


@pytest.mark.parametrize("name", MODELS)
def test_packed_c_holds_the_simulator_params(name, tmp_path):
    packed = pipeline.pack(model_path(name), "qemu-m7", tmp_path / "out", pipeline.QuantOptions(), warn=print)
    graph = packed.integer.graph
    src = tmp_path / "out" / "src"
    lib = tmp_path / "model.so"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-I", INCLUDE,
                    "-o", lib, src / "mcuq_model.c"], check=True)
    so = ctypes.CDLL(str(lib))
    used = sorted({t for n in graph.nodes for t in (*n.inputs, *n.outputs) if t != NO_TENSOR}
                  | set(graph.inputs) | set(graph.outputs))
    tensors = (TensorEntry * len(used)).in_dll(so, "mcuq_tensors")
    paired = pair_filters(graph)  # row-paired FULLY_CONNECTED filters
    pruned = prune_filters(graph, prepare_graph(graph))  # CONV_2D filters without constant channels' rows
    for slot, t in enumerate(used):
        tensor, entry = graph.tensor(t), tensors[slot]
        stored = paired.get(t, pruned.get(t, tensor.data))
        assert entry.bytes == (stored.nbytes if tensor.is_const else tensor.nbytes)
        assert entry.dtype == (PAIRED_DTYPE if t in paired else PRUNED_DTYPE if t in pruned else
                               _DTYPE_CODES[tensor.dtype])
        assert list(entry.shape[: entry.rank]) == list(tensor.shape)
        if tensor.is_const:
            got = read_array(entry.data, tensor.dtype, stored.size)
            assert np.array_equal(got, stored.reshape(-1)), tensor.name
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
        for f in c_fields(p):
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


def test_pack_refuses_shifts_the_firmware_cannot_apply(tmp_path):
    packed = pipeline.pack(model_path(MODELS[0]), "qemu-m7", tmp_path / "out", pipeline.QuantOptions(), warn=print)
    graph = packed.integer.graph
    params = prepare_graph(graph)
    k = next(i for i, p in enumerate(params) if isinstance(p, conv.FullyConnectedParams))
    bad = list(params)
    bad[k] = dataclasses.replace(params[k], shift=np.full_like(params[k].shift, 31))
    render_sources(graph, params, packed.plan, "m", "0", "tflite")
    with pytest.raises(ModelError, match=f"node {k} FULLY_CONNECTED: shift 31 is outside"):
        render_sources(graph, bad, packed.plan, "m", "0", "tflite")
