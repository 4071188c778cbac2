"""Shared test fixtures: the third-party model directory and a tflite-micro oracle."""

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


@pytest.fixture(scope="session")
def shared_models() -> Path:
    """The ../shared/models directory; skips the test when it is absent."""
    if not SHARED_MODELS.is_dir():
        pytest.skip(f"shared model directory {SHARED_MODELS} is not present")
    return SHARED_MODELS


class TflmOracle:
    """tflite-micro's Python interpreter (reference kernels) keeping every tensor after invoke."""

    def __init__(self, path: Path, graph: Graph):
        runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
        self.num_tensors = len(graph.tensors)  # GetTensor past the end crashes the process
        # preserving all tensors defeats arena sharing: room for every activation at once
        arena = 10 * path.stat().st_size + 2 * sum(t.nbytes for t in graph.activation_tensors()) + (64 << 10)
        self.interpreter = runtime.Interpreter.from_file(
            str(path), arena_size=arena, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors  # sic
        )

    def run(self, inputs: Sequence[np.ndarray]) -> dict[int, np.ndarray]:
        """Invoke on ``inputs``; every tensor's value by tensor index (copies)."""
        for k, a in enumerate(inputs):
            self.interpreter.set_input(a, k)
        self.interpreter.invoke()
        return {i: np.array(self.interpreter.GetTensor(i, 0)["tensor_data"]) for i in range(self.num_tensors)}
