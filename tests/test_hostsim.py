"""The firmware's own C (kernels, runtime, packed model) compiled for the host computes exactly
what the numpy integer simulator computes: every output and every intermediate tensor, bit for
bit, on seeded inputs of every shared int8 model and the example digits CNN."""

from __future__ import annotations

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
from mcuq.ir import Graph
from mcuq.quant import Scheme
from mcuq.simulate import prepare_graph, run_integer

MODELS = ["mlperf-tiny/ad01_int8.tflite", "mlperf-tiny/kws_ref_model.tflite", "mlperf-tiny/vww_96_int8.tflite",
          "mlperf-tiny/pretrainedResnet_quant.tflite", "mlperf-tiny/model_ToyCar_quant_fullint.tflite",
          "tflite-micro/hello_world_int8.tflite", "tflite-micro/simple_add_model.tflite"]
SEEDS = range(3)


def pack(model: Path, out: Path, calib: Path | None = None) -> Graph:
    return pipeline.pack(model, "qemu-m7", out, calib, Scheme.TFLITE, warn=lambda _: None).integer.graph


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
