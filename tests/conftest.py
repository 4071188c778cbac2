"""Shared test fixtures: the third-party model directory, seeded inputs, a tflite-micro oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from mcuq.ir import Graph

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MODELS = REPO_ROOT.parent / "shared" / "models"


def model_path(relative: str) -> Path:
    """Path of a shared model (e.g. 'mlperf-tiny/ad01_int8.tflite'); skips the test when absent."""
    path = SHARED_MODELS / relative
    if not path.is_file():
        pytest.skip(f"shared model {path} is not present (tests read ../shared/models next to the repo)")
    return path


def random_inputs(graph: Graph, seed: int) -> list[np.ndarray]:
    """Seeded inputs: integers over the full type range; float32 inputs over the range of the
    integer tensor their first consumer writes (plus 10%), a fifth of them exact half steps."""
    rng = np.random.default_rng(seed)
    arrays = []
    for t in graph.input_tensors():
        if t.dtype == "float32":
            q = next(graph.tensor(n.outputs[0]) for n in graph.nodes if t.index in n.inputs)
            scale, zp = q.quant.scale[0], q.quant.zero_point[0]
            info = np.iinfo(q.dtype)
            a = rng.uniform(scale * (info.min - zp) * 1.1, scale * (info.max - zp) * 1.1, t.shape)
            steps = rng.integers(info.min - zp, info.max - zp, t.shape) + 0.5
            ties = np.float32(scale) * steps.astype(np.float32)
            arrays.append(np.where(rng.random(t.shape) < 0.2, ties, a).astype(np.float32))
        else:
            info = np.iinfo(t.dtype)
            arrays.append(rng.integers(info.min, info.max, t.shape, endpoint=True).astype(t.dtype))
    return arrays


def first_mismatch(graph: Graph, got: dict[int, np.ndarray], want: dict[int, np.ndarray]) -> str | None:
    """(node, op, tensor, index, got, expected) of the first differing tensor in execution order."""
    for n in graph.nodes:
        for t in n.outputs:
            g, w = got[t], want[t]
            name = graph.tensor(t).name
            if g.dtype != w.dtype or g.shape != w.shape:
                return (f"node {n.index} {n.op} tensor {t} '{name}': got {g.dtype}{list(g.shape)}, "
                        f"expected {w.dtype}{list(w.shape)}")
            if not np.array_equal(g, w):
                idx = tuple(int(i) for i in np.argwhere(g != w)[0])
                n_bad = int(np.count_nonzero(g != w))
                return (f"node {n.index} {n.op} tensor {t} '{name}' index {idx}: got {g[idx]}, "
                        f"expected {w[idx]} ({n_bad} of {g.size} differ)")
    return None


class TflmOracle:
    """tflite-micro's Python interpreter (reference kernels) keeping every tensor after invoke."""

    def __init__(self, model: Path | bytes, graph: Graph):
        runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
        self.num_tensors = len(graph.tensors)  # GetTensor past the end crashes the process
        size = model.stat().st_size if isinstance(model, Path) else len(model)
        # preserving all tensors defeats arena sharing: room for every activation at once
        arena = 10 * size + 2 * sum(t.nbytes for t in graph.activation_tensors()) + (64 << 10)
        config = runtime.InterpreterConfig.kPreserveAllTensors
        load = runtime.Interpreter.from_file if isinstance(model, Path) else runtime.Interpreter.from_bytes
        source = str(model) if isinstance(model, Path) else model
        self.interpreter = load(source, arena_size=arena, intrepreter_config=config)  # sic: upstream spelling

    def run(self, inputs: Sequence[np.ndarray]) -> dict[int, np.ndarray]:
        """Invoke on ``inputs``; every tensor's value by tensor index (copies)."""
        for k, a in enumerate(inputs):
            self.interpreter.set_input(a, k)
        self.interpreter.invoke()
        return {i: np.array(self.interpreter.GetTensor(i, 0)["tensor_data"]) for i in range(self.num_tensors)}
