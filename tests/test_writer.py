"""write_model is the inverse of read_model, and TFLM runs the rewritten files bit-identically."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import tflite

from mcuq.errors import ModelError
from mcuq.ir import Graph, Node, Op, Quant, Tensor
from mcuq.reader import read_model, read_model_bytes
from mcuq.writer import write_model

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
MODEL_FILES = sorted(MODELS.glob("*/*.tflite")) if MODELS.is_dir() else []
ARENA = 4 << 20

runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")


def assert_same_graph(a: Graph, b: Graph) -> None:
    """Field-by-field equality (Tensor compares by identity, so compare its fields)."""
    assert (a.inputs, a.outputs, a.name) == (b.inputs, b.outputs, b.name)
    assert len(a.tensors) == len(b.tensors)
    for x, y in zip(a.tensors, b.tensors):
        fields = ("index", "name", "shape", "dtype", "quant")
        assert [getattr(x, f) for f in fields] == [getattr(y, f) for f in fields], x.name
        assert (x.data is None) == (y.data is None), x.name
        if x.data is not None:
            assert x.data.dtype == y.data.dtype and np.array_equal(x.data, y.data), x.name
    assert a.nodes == b.nodes


def golden_inputs(path: Path, graph: Graph) -> list[np.ndarray]:
    """The shared golden inputs when they exist, else seeded random inputs of the right type."""
    sha8 = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    npz = MODELS / "golden" / f"{path.stem}_{sha8}.input.npz"
    if npz.exists():
        z = np.load(npz)
        return [z[f"in{i}"] for i in range(len(graph.inputs))]
    rng = np.random.default_rng(0)
    out = []
    for t in graph.input_tensors():
        if np.issubdtype(np.dtype(t.dtype), np.integer):
            info = np.iinfo(t.dtype)
            out.append(rng.integers(info.min, info.max, t.shape, endpoint=True).astype(t.dtype))
        else:
            out.append(rng.standard_normal(t.shape).astype(t.dtype))
    return out


def run_all_tensors(model: bytes, graph: Graph, inputs: list[np.ndarray]) -> dict[int, np.ndarray]:
    """Every non-constant tensor of the graph after one TFLM invoke."""
    it = runtime.Interpreter.from_bytes(
        model, arena_size=ARENA, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors
    )
    for i, x in enumerate(inputs):
        it.set_input(x, i)
    it.invoke()
    out = {t.index: np.array(it.GetTensor(t.index, 0)["tensor_data"]) for t in graph.activation_tensors()}
    out.update({-1 - i: it.get_output(i) for i in range(len(graph.outputs))})
    return out


@pytest.mark.skipif(not MODEL_FILES, reason=f"no shared models at {MODELS}")
@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.name)
def test_roundtrip_identical(path: Path) -> None:
    g = read_model(path)
    assert_same_graph(g, read_model_bytes(write_model(g), name=g.name))


@pytest.mark.skipif(not MODEL_FILES, reason=f"no shared models at {MODELS}")
@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.name)
def test_tflm_runs_rewritten_model_identically(path: Path) -> None:
    g = read_model(path)
    if g.unsupported_ops():
        pytest.skip(f"ops {g.unsupported_ops()}: the reader keeps no options for them, so no rewrite runs")
    rewritten = write_model(g)
    inputs = golden_inputs(path, g)
    try:
        want = run_all_tensors(path.read_bytes(), g, inputs)
    except RuntimeError:  # hybrid models: TFLM must refuse the rewrite just the same
        with pytest.raises(RuntimeError):
            run_all_tensors(rewritten, g, inputs)
        return
    got = run_all_tensors(rewritten, g, inputs)
    assert want.keys() == got.keys()
    for k in want:
        assert want[k].dtype == got[k].dtype and np.array_equal(want[k], got[k]), f"tensor {k}"


def _opcodes(model: bytes) -> list[tuple[int, int, int, bytes | None]]:
    m = tflite.Model.GetRootAs(model, 0)
    return [
        (oc.BuiltinCode(), oc.DeprecatedBuiltinCode(), oc.Version(), oc.CustomCode())
        for oc in (m.OperatorCodes(i) for i in range(m.OperatorCodesLength()))
    ]


def test_opcodes_buffers_int4_state_and_custom() -> None:
    """Hand-built graph: opcode >127, custom op, int4 and per-channel constants, a state tensor."""
    w = np.arange(-8, 7, dtype=np.int8).reshape(3, 5)
    fc_attrs = {"activation": "RELU6", "keep_num_dims": True, "weights_format": "DEFAULT"}
    t = (
        Tensor(0, "x", (1, 5), "int8", Quant((0.5,), (-3,))),
        Tensor(1, "w4", (3, 5), "int4", Quant((0.125, 0.25, 0.375), (0, 0, 0), 0), w),
        Tensor(2, "b", (3,), "int32", Quant((0.0625,), (0,), 3), np.array([1, -2, 1 << 20], np.int32)),
        Tensor(3, "y", (1, 3), "int8", Quant((0.25,), (7,))),
        Tensor(4, "state", (1, 3), "int16"),
        Tensor(5, "z", (1, 3), "float32"),
        Tensor(6, "u", (1, 3), "float32"),
    )
    nodes = (
        Node(0, Op.FULLY_CONNECTED, (0, 1, 2), (3,), fc_attrs, 5),
        Node(1, "GELU", (3, 4), (5,), {}, 2),
        Node(2, "CUSTOM:MyOp", (5, -1), (6,), {}, 1),
    )
    g = Graph(t, nodes, (0,), (6,), "handmade")
    model = write_model(g)
    assert_same_graph(g, read_model_bytes(model, name="handmade"))
    fc, gelu = tflite.BuiltinOperator.FULLY_CONNECTED, tflite.BuiltinOperator.GELU
    assert gelu > 127
    custom = tflite.BuiltinOperator.CUSTOM
    assert _opcodes(model) == [(fc, fc, 5, None), (gelu, 127, 2, None), (custom, custom, 1, b"MyOp")]
    m = tflite.Model.GetRootAs(model, 0)
    sg = m.Subgraphs(0)
    assert m.Version() == 3 and m.Buffers(0).DataLength() == 0
    assert [sg.Tensors(i).IsVariable() for i in range(len(t))] == [i == 4 for i in range(len(t))]
    packed = m.Buffers(sg.Tensors(1).Buffer()).DataAsNumpy().tolist()
    assert packed == [0x98, 0xBA, 0xDC, 0xFE, 0x10, 0x32, 0x54, 0x06]  # low nibble first


@pytest.mark.parametrize(
    "dtype, data, words",
    [("int8", np.array([200]), "does not fit int8"), ("int4", np.array([9]), "outside [-8, 7]"),
     ("int8", np.zeros((2,), np.int8), "data shape")],
)
def test_refuses_constants_it_cannot_store_exactly(dtype: str, data: np.ndarray, words: str) -> None:
    tensors = (Tensor(0, "c", (1,), dtype, None, data), Tensor(1, "y", (1,), dtype))
    g = Graph(tensors, (Node(0, Op.RESHAPE, (0,), (1,), {"new_shape": (1,)}),), (), (1,))
    with pytest.raises(ModelError, match=re.escape(words)):
        write_model(g)
