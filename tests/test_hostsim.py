"""The firmware's own C (kernels, runtime, packed model) compiled for the host computes exactly
what the numpy integer simulator computes: every output and every intermediate tensor, bit for
bit, on seeded inputs of every shared int8 model and the example digits CNN."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, first_mismatch, model_path, random_inputs
from mcuq import pipeline
from mcuq.errors import CalibrationError
from mcuq.hostsim import HostBuildError, HostModel, KernelError, run_host_c
from mcuq.ir import Graph, Node, Op, Quant, Tensor
from mcuq.simulate import prepare_graph, run_integer
from mcuq.writer import write_model

MODELS = ["mlperf-tiny/ad01_int8.tflite", "mlperf-tiny/kws_ref_model.tflite", "mlperf-tiny/vww_96_int8.tflite",
          "mlperf-tiny/pretrainedResnet_quant.tflite", "mlperf-tiny/model_ToyCar_quant_fullint.tflite",
          "tflite-micro/hello_world_int8.tflite", "tflite-micro/simple_add_model.tflite"]
SEEDS = range(3)


def pack(model: Path, out: Path, calib: Path | None = None) -> Graph:
    return pipeline.pack(model, "qemu-m7", out, pipeline.QuantOptions(calib=calib), warn=lambda _: None).integer.graph


def assert_bit_exact(pack_dir: Path, graph: Graph) -> None:
    """Host C equals numpy on every tensor (constants, inputs, node outputs) and on the outputs."""
    host = HostModel(pack_dir)
    params = prepare_graph(graph)
    for seed in SEEDS:
        xs = random_inputs(graph, seed)
        want = run_integer(graph, xs, all_tensors=True, params=params)
        got = host.run(xs, all_tensors=True)
        assert (bad := first_mismatch(graph, got, want)) is None, f"seed {seed}: {bad}"
        for t, value in got.items():
            assert value.dtype == want[t].dtype and np.array_equal(value, want[t]), (seed, t)
        outputs = host.run(xs)
        assert len(outputs) == len(graph.outputs)
        for out, t in zip(outputs, graph.outputs):
            assert out.dtype == want[t].dtype and np.array_equal(out, want[t]), (seed, t)


@pytest.mark.parametrize("name", MODELS)
def test_shared_model_bit_exact(name, tmp_path):
    graph = pack(model_path(name), tmp_path / "pack")
    assert_bit_exact(tmp_path / "pack", graph)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, Graph]:
    """The example digits CNN, trained, quantized with its calibration set and packed."""
    pytest.importorskip("sklearn")
    d = tmp_path_factory.mktemp("digits")
    subprocess.run([sys.executable, REPO_ROOT / "examples" / "digits_cnn.py", "-o", d / "digits.tflite"],
                   check=True, capture_output=True)
    return d / "pack", pack(d / "digits.tflite", d / "pack", d / "digits_calib.npz")


def test_digits_bit_exact(digits):
    assert_bit_exact(*digits)


def test_last_node_stops_there(digits):
    """Running up to node k returns node k's output, even where later nodes reuse its bytes."""
    pack_dir, graph = digits
    xs = random_inputs(graph, 7)
    want = run_integer(graph, xs, all_tensors=True)
    for k, node in enumerate(graph.nodes):
        (got,) = run_host_c(pack_dir, xs, last_node=k)
        assert np.array_equal(got, want[node.outputs[0]]), k


def test_profile_counts_the_nodes_run(digits):
    """mcuq_run fills node_counts for the nodes it ran and leaves the other entries alone."""
    pack_dir, graph = digits
    host = HostModel(pack_dir)
    n = len(graph.nodes)
    assert len(host.profile(random_inputs(graph, 0))) == n
    counts = host.ffi.new("uint32_t[]", [0xFFFFFFFF] * n)
    assert host.lib.mcuq_run(host.arena, 1, counts) == 0
    assert all(c != 0xFFFFFFFF for c in counts[0:2]) and all(c == 0xFFFFFFFF for c in counts[2:n])


def test_runtime_refuses_bad_arguments(digits):
    host = HostModel(digits[0])
    n = len(digits[1].nodes)
    for last in (-2, n):
        assert host.lib.mcuq_run(host.arena, last, host.ffi.NULL) == host.lib.MCUQ_ERR_PARAMS
    assert host.lib.mcuq_run(host.arena + 1, -1, host.ffi.NULL) == host.lib.MCUQ_ERR_PARAMS
    assert host.lib.mcuq_tensor_bytes(-1) == -1 and host.lib.mcuq_tensor_data(host.arena, 10**4) == host.ffi.NULL
    with pytest.raises(CalibrationError, match="input 0 must be int8"):
        host.run([np.zeros(digits[1].input_tensors()[0].shape, np.float32)])


def test_kernel_failure_names_node_and_op(digits, tmp_path):
    """A node whose op no kernel takes fails with MCUQ_ERR_UNSUPPORTED, named by node and op."""
    pack_dir, graph = digits
    broken = tmp_path / "broken"
    shutil.copytree(pack_dir, broken)
    model_c = broken / "src" / "mcuq_model.c"
    row = f"    {{ MCUQ_OP_{graph.nodes[0].op}, "  # node 0's row comes first in the node table
    model_c.write_text(model_c.read_text().replace(row, "    { 255, ", 1))
    with pytest.raises(KernelError, match=f"node 0 {graph.nodes[0].op} .*MCUQ_ERR_UNSUPPORTED"):
        run_host_c(broken, random_inputs(graph, 0))


def test_build_errors(digits, tmp_path, monkeypatch):
    pack_dir, graph = digits
    broken = tmp_path / "broken"
    shutil.copytree(pack_dir, broken)
    model_c = broken / "src" / "mcuq_model.c"
    model_c.write_text(model_c.read_text() + "\nint unused(int x) { return x }\n")
    with pytest.raises(HostBuildError, match="mcuq_model.c: does not compile"):
        HostModel(broken)
    monkeypatch.setenv("CC", "no-such-compiler-mcuq")
    with pytest.raises(HostBuildError, match="no C compiler"):
        HostModel(pack_dir)


class _Graph:
    """Builds one graph of independent nodes, each reading fresh graph inputs and constants."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.tensors: list[Tensor] = []
        self.nodes: list[Node] = []
        self.inputs: list[int] = []

    def tensor(self, shape, dtype: str, scale: float | None = None, zp: int = 0, data=None) -> int:
        q = None if scale is None else Quant((float(np.float32(scale)),), (zp,))
        if data is not None:
            data = np.asarray(data, dtype)
            data.setflags(write=False)
        self.tensors.append(Tensor(len(self.tensors), f"t{len(self.tensors)}", tuple(shape), dtype, q, data))
        return len(self.tensors) - 1

    def act(self, shape, dtype: str) -> int:
        """A graph input with a random scale (and zero point for int8)."""
        zp = int(self.rng.integers(-20, 20)) if dtype == "int8" else 0
        self.inputs.append(self.tensor(shape, dtype, float(self.rng.uniform(0.01, 0.1)), zp))
        return self.inputs[-1]

    def const(self, shape, dtype: str, scale: float | None = None) -> int:
        info = np.iinfo(dtype)
        bound = min(info.max, 1 << 12)
        return self.tensor(shape, dtype, scale, 0, self.rng.integers(-bound, bound, shape))

    def node(self, op: Op, ins: list[int], shape, dtype: str, scale: float | None = None, zp: int = 0,
             **attrs) -> None:
        out = self.tensor(shape, dtype, scale, zp)
        self.nodes.append(Node(len(self.nodes), op, tuple(ins), (out,), attrs, 1))

    def graph(self) -> Graph:
        outs = tuple(n.outputs[0] for n in self.nodes)
        return Graph(tuple(self.tensors), tuple(self.nodes), tuple(self.inputs), outs, "dispatch")


def dispatch_graph() -> Graph:
    """A node for every (op, type) route of the runtime that the model tests above do not take.

    Output scales follow the spread of each node's real values, so outputs rarely saturate.
    """
    g = _Graph(11)
    conv = dict(padding="SAME", stride_h=1, stride_w=2, dilation_h=1, dilation_w=1, activation="NONE")
    pool = dict(padding="VALID", stride_h=2, stride_w=2, filter_h=2, filter_w=2, activation="NONE")

    def scale(t: int) -> float:
        return g.tensors[t].quant.scale[0]

    x = g.act((1, 6, 6, 4), "int16")
    g.node(Op.CONV_2D, [x, g.const((3, 3, 3, 4), "int8", 0.02), g.const((3,), "int64")], (1, 6, 3, 3), "int16",
           20 * scale(x), **conv)
    x = g.act((1, 6, 6, 4), "int16")
    g.node(Op.DEPTHWISE_CONV_2D, [x, g.const((1, 3, 3, 8), "int8", 0.02), g.const((8,), "int64")],
           (1, 6, 3, 8), "int16", 10 * scale(x), depth_multiplier=2, **conv)
    x = g.act((2, 10), "int16")
    g.node(Op.FULLY_CONNECTED, [x, g.const((5, 10), "int8", 0.02), g.const((5,), "int64")], (2, 5), "int16",
           11 * scale(x), activation="NONE", keep_num_dims=False, weights_format="DEFAULT")
    for dtype, mul_gain, to_other in (("int8", 130, 0.01), ("int16", 45000, 470)):
        for op in (Op.AVERAGE_POOL_2D, Op.MAX_POOL_2D):
            x = g.act((1, 6, 6, 3), dtype)
            g.node(op, [x], (1, 3, 3, 3), dtype, scale(x), g.tensors[x].quant.zero_point[0], **pool)
        a, b = g.act((1, 4, 4, 3), dtype), g.act((1, 1, 1, 3), dtype)
        g.node(Op.ADD, [a, b], (1, 4, 4, 3), dtype, 1.5 * max(scale(a), scale(b)), activation="NONE")
        a, b = g.act((1, 4, 4, 3), dtype), g.act((1, 1, 1, 3), dtype)
        g.node(Op.MUL, [a, b], (1, 4, 4, 3), dtype, mul_gain * scale(a) * scale(b), activation="NONE")
        x = g.act((1, 5, 5, 3), dtype)
        g.node(Op.MEAN, [x, g.tensor((2,), "int32", data=[1, 2])], (1, 1, 1, 3), dtype, 0.2 * scale(x),
               keep_dims=True)
        x = g.act((2, 7), dtype)
        g.node(Op.QUANTIZE, [x], (2, 7), "int16" if dtype == "int8" else "int8", to_other * scale(x))
        g.node(Op.DEQUANTIZE, [g.act((3, 5), dtype)], (3, 5), "float32")
    for dtype in ("int8", "int16", "int32"):
        x = g.act((1, 3, 4, 2), dtype)
        g.node(Op.PAD, [x, g.tensor((4, 2), "int32", data=[[0, 0], [1, 0], [0, 2], [0, 1]])], (1, 4, 6, 3), dtype,
               scale(x), g.tensors[x].quant.zero_point[0])
        a, b = g.act((1, 2, 3), dtype), g.act((1, 4, 3), dtype)
        g.tensors[b] = dataclasses.replace(g.tensors[b], quant=g.tensors[a].quant)
        g.node(Op.CONCATENATION, [a, b], (1, 6, 3), dtype, scale(a), g.tensors[a].quant.zero_point[0], axis=1,
               activation="NONE")
    x = g.act((2, 7), "int32")
    g.node(Op.QUANTIZE, [x], (2, 7), "int8", 2.0**24 * scale(x))
    x = g.act((2, 7), "int8")
    g.node(Op.QUANTIZE, [x], (2, 7), "int32", scale(x) / 1000)
    g.node(Op.LOGISTIC, [g.act((1, 40), "int8")], (1, 40), "int8", 1 / 256, -128)
    g.node(Op.TANH, [g.act((1, 40), "int8")], (1, 40), "int8", 1 / 128, 0)
    g.node(Op.SOFTMAX, [g.act((2, 9), "int8")], (2, 9), "int16", 1 / 65536, -32768, beta=1.0)
    return g.graph()


def test_every_dispatch_route_bit_exact(tmp_path):
    """16x8 convolutions and FC; int8 and int16 pools, ADD, MUL, MEAN, DEQUANTIZE; PAD and
    CONCATENATION up to int32; QUANTIZE between integer types; LOGISTIC, TANH, SOFTMAX int8->int16."""
    model = tmp_path / "dispatch.tflite"
    model.write_bytes(write_model(dispatch_graph()))
    graph = pack(model, tmp_path / "pack")
    assert_bit_exact(tmp_path / "pack", graph)


def test_writes_past_the_arena_are_caught(digits, tmp_path):
    """A tensor table that reaches past MCUQ_ARENA_BYTES trips the guard bytes after the arena."""
    pack_dir, graph = digits
    small = tmp_path / "small"
    shutil.copytree(pack_dir, small)
    header = small / "src" / "mcuq_model.h"
    text = header.read_text()
    arena = int(text.split("#define MCUQ_ARENA_BYTES ")[1].split()[0])
    header.write_text(text.replace(f"#define MCUQ_ARENA_BYTES {arena}\n", f"#define MCUQ_ARENA_BYTES {arena - 16}\n"))
    with pytest.raises(KernelError, match=f"wrote past the end of the {arena - 16}-byte arena"):
        HostModel(small).run(random_inputs(graph, 0), all_tensors=True)
