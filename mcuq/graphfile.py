"""Lossless on-disk form of an ir.Graph: ``graph.json`` (structure, attributes, quantization)
beside ``graph.npz`` (constant tensor data), so `mcuq sim DIR` can run a pack output directory
without the original .tflite.

Node attributes may hold None, bool, int, float, str and (nested) tuples of these; JSON arrays
read back as tuples, the IR's convention. Floats survive JSON exactly (shortest round-trip repr).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mcuq.errors import ModelError
from mcuq.ir import Graph, Node, Op, Quant, Tensor

FORMAT = "mcuq-graph"
VERSION = 1
JSON_NAME = "graph.json"
NPZ_NAME = "graph.npz"


def save_graph(graph: Graph, directory: str | Path) -> None:
    """Write ``graph.json`` and ``graph.npz`` into ``directory`` (created if missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {f"t{t.index}": t.data for t in graph.tensors if t.data is not None}
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "name": graph.name,
        "inputs": list(graph.inputs),
        "outputs": list(graph.outputs),
        "tensors": [_tensor_doc(t) for t in graph.tensors],
        "nodes": [_node_doc(n) for n in graph.nodes],
    }
    (directory / JSON_NAME).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    with open(directory / NPZ_NAME, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_graph(directory: str | Path) -> Graph:
    """Read a graph written by save_graph (ModelError naming the file if it is missing or damaged)."""
    directory = Path(directory)
    jpath, npath = directory / JSON_NAME, directory / NPZ_NAME
    try:
        doc = json.loads(jpath.read_text(encoding="utf-8"))
    except OSError as e:
        raise ModelError(f"{jpath}: cannot read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{jpath}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelError(f"{jpath}: not an mcuq graph file")
    if doc.get("version") != VERSION:
        raise ModelError(f"{jpath}: graph format version {doc.get('version')}, this mcuq reads {VERSION}")
    try:
        with np.load(npath, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ModelError(f"{npath}: cannot read ({e})") from None
    try:
        tensors = tuple(_tensor(i, t, arrays) for i, t in enumerate(doc["tensors"]))
        nodes = tuple(_node(i, n, len(tensors)) for i, n in enumerate(doc["nodes"]))
        inputs, outputs = _indices(doc["inputs"], len(tensors)), _indices(doc["outputs"], len(tensors))
        return Graph(tensors, nodes, inputs, outputs, str(doc["name"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{jpath}: damaged graph ({type(e).__name__}: {e})") from None


def _tensor_doc(t: Tensor) -> dict[str, Any]:
    q = t.quant
    return {
        "index": t.index,
        "name": t.name,
        "shape": list(t.shape),
        "dtype": t.dtype,
        "quant": None if q is None else {"scale": list(q.scale), "zero_point": list(q.zero_point), "axis": q.axis},
        "data": t.data is not None,
    }


def _node_doc(n: Node) -> dict[str, Any]:
    attrs = {}
    for key, value in n.attrs.items():
        if not isinstance(key, str):
            raise TypeError(f"node {n.index}: attribute key {key!r} is not a string")
        _check_attr(n, key, value)
        attrs[key] = value
    return {"index": n.index, "op": str(n.op), "inputs": list(n.inputs), "outputs": list(n.outputs),
            "attrs": attrs, "version": n.version}


def _check_attr(n: Node, key: str, value: Any) -> None:
    """Refuse attribute values JSON cannot give back unchanged (lists, arrays, numpy scalars, dicts)."""
    if isinstance(value, tuple):
        for v in value:
            _check_attr(n, key, v)
    elif value is not None and type(value) not in (bool, int, float, str):
        raise TypeError(f"node {n.index}: attribute '{key}' holds a {type(value).__name__}, "
                         "which the graph file cannot store losslessly")


def _attr(value: Any) -> Any:
    return tuple(_attr(v) for v in value) if isinstance(value, list) else value


def _indices(values: list, n_tensors: int) -> tuple[int, ...]:
    out = tuple(int(v) for v in values)
    if any(not -1 <= v < n_tensors for v in out):
        raise ValueError(f"tensor index out of range in {list(out)}")
    return out


def _tensor(i: int, t: dict[str, Any], arrays: dict[str, np.ndarray]) -> Tensor:
    if t["index"] != i:
        raise ValueError(f"tensor {i} records index {t['index']}")
    shape = tuple(int(d) for d in t["shape"])
    data = None
    if t["data"]:
        data = arrays[f"t{i}"]
        if data.shape != shape:
            raise ValueError(f"tensor {i} data has shape {data.shape}, expected {shape}")
        data.setflags(write=False)
    q = t["quant"]
    quant = None
    if q is not None:
        quant = Quant(tuple(float(s) for s in q["scale"]), tuple(int(z) for z in q["zero_point"]), int(q["axis"]))
    return Tensor(i, str(t["name"]), shape, str(t["dtype"]), quant, data)


def _node(i: int, n: dict[str, Any], n_tensors: int) -> Node:
    if n["index"] != i:
        raise ValueError(f"node {i} records index {n['index']}")
    op = n["op"]
    kind = Op(op) if op in Op.__members__ else str(op)
    attrs = {str(k): _attr(v) for k, v in n["attrs"].items()}
    return Node(i, kind, _indices(n["inputs"], n_tensors), _indices(n["outputs"], n_tensors), attrs,
                int(n["version"]))
