"""Graph files: save then load gives back the same graph, field for field, for every shared model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mcuq.errors import ModelError
from mcuq.graphfile import JSON_NAME, NPZ_NAME, load_graph, save_graph
from mcuq.ir import Graph, Node, Op, Quant, Tensor
from mcuq.reader import read_model

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
MODEL_FILES = sorted(MODELS.glob("*/*.tflite"))


def assert_same_graph(a: Graph, b: Graph) -> None:
    assert (a.name, a.inputs, a.outputs) == (b.name, b.inputs, b.outputs)
    assert len(a.tensors) == len(b.tensors) and len(a.nodes) == len(b.nodes)
    for x, y in zip(a.tensors, b.tensors):
        assert (x.index, x.name, x.shape, x.dtype, x.quant) == (y.index, y.name, y.shape, y.dtype, y.quant)
        assert type(x.shape) is type(y.shape) is tuple
        if x.quant is not None:
            assert all(type(s) is float for s in y.quant.scale) and type(y.quant.scale) is tuple
        assert (x.data is None) == (y.data is None), x.name
        if x.data is not None:
            assert x.data.dtype == y.data.dtype and x.data.shape == y.data.shape
            assert x.data.tobytes() == y.data.tobytes(), x.name  # bitwise, so -0.0 and NaN payloads count
            assert not y.data.flags.writeable
    for m, n in zip(a.nodes, b.nodes):
        assert (m.index, m.op, type(m.op), m.inputs, m.outputs, m.version) == \
               (n.index, n.op, type(n.op), n.inputs, n.outputs, n.version)
        assert dict(m.attrs) == dict(n.attrs)
        assert {k: _types(v) for k, v in m.attrs.items()} == {k: _types(v) for k, v in n.attrs.items()}


def _types(value):
    return tuple(_types(v) for v in value) if isinstance(value, tuple) else type(value)


@pytest.mark.skipif(not MODEL_FILES, reason=f"shared models not found at {MODELS}")
@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_round_trip_shared_models(tmp_path, path):
    graph = read_model(path)
    save_graph(graph, tmp_path / "g")
    again = load_graph(tmp_path / "g")
    assert_same_graph(graph, again)
    save_graph(again, tmp_path / "h")
    assert (tmp_path / "g" / JSON_NAME).read_bytes() == (tmp_path / "h" / JSON_NAME).read_bytes()


def edge_graph() -> Graph:
    """Values a careless encoder loses: awkward floats, nested tuples, None, custom ops, scalars."""
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (4, 3, 3, 2), dtype=np.int8)
    f16 = np.array([0.1, -0.0, 65504.0, np.nan], np.float16)
    tensors = (
        Tensor(0, "in", (1, 5, 5, 2), "int8", Quant((1 / 3,), (-128,))),
        Tensor(1, "w", w.shape, "int8", Quant((0.1, 1e-30, 2.5e-7, 7.0), (0, 0, 0, 0), 0), w),
        Tensor(2, "scalar", (), "int32", None, np.array(-2**31, np.int32)),
        Tensor(3, "half", (4,), "float16", None, f16),
        Tensor(4, "out", (1, 3, 3, 4), "int8", Quant((0.0078125,), (5,))),
        Tensor(5, "flag", (2,), "bool", None, np.array([True, False])),
    )
    nodes = (
        Node(0, Op.CONV_2D, (0, 1, -1), (4,), {"padding": "VALID", "stride_h": 1, "activation": "RELU6",
                                              "nested": ((1, 2), (None, 0.1 + 0.2)), "flag": True}, 3),
        Node(1, "CUSTOM:TFLite_Detection_PostProcess", (4, 2, 3, 5), (), {"beta": 1e-300, "empty": ()}),
        Node(2, Op.RESHAPE, (4,), (4,), {"new_shape": None}),
    )
    return Graph(tensors, nodes, (0,), (4,), "edge ü")


def test_round_trip_edge_values(tmp_path):
    graph = edge_graph()
    save_graph(graph, tmp_path)
    assert_same_graph(graph, load_graph(tmp_path))


def test_refuses_values_it_cannot_restore(tmp_path):
    g = edge_graph()
    bad = Graph(g.tensors, (Node(0, Op.RESHAPE, (0,), (4,), {"new_shape": [1, 2]}),), (0,), (4,))
    with pytest.raises(TypeError, match="attribute 'new_shape' holds a list"):
        save_graph(bad, tmp_path)
    bad = Graph(g.tensors, (Node(0, Op.RESHAPE, (0,), (4,), {"axis": np.int32(3)}),), (0,), (4,))
    with pytest.raises(TypeError, match="attribute 'axis' holds a int32"):
        save_graph(bad, tmp_path)


def test_damaged_files_raise_model_error(tmp_path):
    with pytest.raises(ModelError, match=f"{JSON_NAME}: cannot read"):
        load_graph(tmp_path / "missing")
    save_graph(edge_graph(), tmp_path)
    doc = json.loads((tmp_path / JSON_NAME).read_text())
    doc["nodes"][0]["inputs"][0] = 99
    (tmp_path / JSON_NAME).write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="damaged graph.*out of range"):
        load_graph(tmp_path)
    doc["version"] = 999
    (tmp_path / JSON_NAME).write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="version 999"):
        load_graph(tmp_path)
    (tmp_path / JSON_NAME).write_text("{")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_graph(tmp_path)
    save_graph(edge_graph(), tmp_path)
    whole = (tmp_path / NPZ_NAME).read_bytes()
    for damaged in (b"", b"not a zip", whole[: len(whole) // 2]):
        (tmp_path / NPZ_NAME).write_bytes(damaged)
        with pytest.raises(ModelError, match=f"{NPZ_NAME}: cannot read"):
            load_graph(tmp_path)
