"""The integer simulator against tflite-micro on real models: every tensor, bit for bit.

Three views per model: the whole model on seeded random inputs (outputs and every
intermediate tensor), each node sliced out and fed tflite-micro's own inputs (pins a
mismatch to one kernel), and the published golden outputs. Comparisons are np.array_equal.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from conftest import SHARED_MODELS, TflmOracle, first_mismatch, model_path, random_inputs
from mcuq.ir import NO_TENSOR
from mcuq.reader import read_model
from mcuq.simulate import prepare_graph, run_integer
from mcuq.simulate.integer import KERNELS

N_INPUTS = 20

# int8 models simulated end to end
MODELS = {
    "ad01_int8": "mlperf-tiny/ad01_int8.tflite",
    "kws_ref_model": "mlperf-tiny/kws_ref_model.tflite",
    "vww_96_int8": "mlperf-tiny/vww_96_int8.tflite",
    "pretrainedResnet_quant": "mlperf-tiny/pretrainedResnet_quant.tflite",
    "model_ToyCar_quant_fullint": "mlperf-tiny/model_ToyCar_quant_fullint.tflite",
    "hello_world_int8": "tflite-micro/hello_world_int8.tflite",
    "simple_add_model": "tflite-micro/simple_add_model.tflite",
}
# models with ops outside mcuq (LSTM, SVDF): only their supported nodes are checked, sliced
PARTIAL_MODELS = {
    "trained_lstm_int8": "tflite-micro/trained_lstm_int8.tflite",
    "keyword_scrambled": "tflite-micro/keyword_scrambled.tflite",
}


@pytest.mark.parametrize("name", MODELS)
def test_whole_model_matches_tflm(name: str) -> None:
    """Seeded random inputs: every tensor the simulator produces equals tflite-micro's."""
    path = model_path(MODELS[name])
    graph = read_model(path)
    params = prepare_graph(graph)
    oracle = TflmOracle(path, graph)
    for seed in range(N_INPUTS):
        inputs = random_inputs(graph, seed)
        want = oracle.run(inputs)
        got = run_integer(graph, inputs, all_tensors=True, params=params)
        assert (msg := first_mismatch(graph, got, want)) is None, f"{name} seed {seed}: {msg}"
        outs = run_integer(graph, inputs, params=params)
        assert all(np.array_equal(o, want[t]) for o, t in zip(outs, graph.outputs))


@pytest.mark.parametrize("name", [*MODELS, *PARTIAL_MODELS])
def test_each_node_matches_tflm(name: str) -> None:
    """Each supported node, fed tflite-micro's input tensors, reproduces its output tensor."""
    path = model_path({**MODELS, **PARTIAL_MODELS}[name])
    graph = read_model(path)
    nodes = [(n, KERNELS[n.op]) for n in graph.nodes if n.op in KERNELS]
    prepared = [(n, prep(graph, n), kernel) for n, (prep, kernel) in nodes]
    oracle = TflmOracle(path, graph)
    for seed in range(N_INPUTS):
        want = oracle.run(random_inputs(graph, seed))
        for n, p, kernel in prepared:
            out = kernel(p, [None if i == NO_TENSOR else want[i] for i in n.inputs])
            one = dataclasses.replace(graph, nodes=(n,))
            msg = first_mismatch(one, {n.outputs[0]: out}, want)
            assert msg is None, f"{name} seed {seed}: {msg}"
    assert len(nodes) == len(graph.nodes) or name in PARTIAL_MODELS


def _golden(name: str) -> list[tuple[str, str]]:
    files = sorted((SHARED_MODELS / "golden").glob(f"{name}_*.input.npz"))
    return [(name, p.name.removesuffix(".input.npz")) for p in files]


GOLDEN = [g for name in MODELS for g in _golden(name)] or [
    pytest.param(None, None, marks=pytest.mark.skip(f"no golden files in {SHARED_MODELS / 'golden'}"))
]


@pytest.mark.parametrize(("name", "stem"), GOLDEN)
def test_golden_outputs(name: str, stem: str) -> None:
    """The published tflite-micro outputs for the golden inputs, bit for bit."""
    path = model_path(MODELS[name])
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(stem.rsplit("_", 1)[1])
    graph = read_model(path)
    ins = np.load(SHARED_MODELS / "golden" / f"{stem}.input.npz")
    outs = np.load(SHARED_MODELS / "golden" / f"{stem}.tflm_output.npz")
    got = run_integer(graph, [ins[f"in{k}"] for k in range(len(ins.files))])
    assert len(got) == len(outs.files)
    for k, g in enumerate(got):
        w = outs[f"out{k}"]
        assert (g.dtype, g.shape) == (w.dtype, w.shape), f"{stem} out{k}"
        assert np.array_equal(g, w), f"{stem} out{k}: {int(np.count_nonzero(g != w))} of {g.size} differ"
