"""Hostile model files: structure-aware mutants of every shared model (tests/model_mutator.py) run
through `mcuq inspect`, `sim` and `pack`; each must end in a valid result or one clear error line,
never a traceback, crash, hang, memory blow-up or partial output directory. bench/fuzz_models.py
runs 10,000 of them; CI runs CI_CASES, in CHUNKS that pytest-xdist can spread."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_MODELS, model_path
from model_mutator import Sandbox, cases, sites_of

from mcuq.errors import ModelError
from mcuq.reader import MAX_RANK, MAX_TENSOR_BYTES, read_model_bytes

CI_CASES = 1000
CHUNKS = 4
SEED = 2026


def _models() -> list[Path]:
    models = sorted(SHARED_MODELS.glob("*/*.tflite"))
    if not models:
        pytest.skip(f"no shared models under {SHARED_MODELS} (tests read ../shared/models next to the repo)")
    return models


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_mutants_end_cleanly(chunk):
    models = _models()
    per_chunk = CI_CASES // CHUNKS
    sandbox = Sandbox()
    failures, outcomes = [], set()
    try:
        for k, case in enumerate(cases(models, CI_CASES, SEED)):
            if k // per_chunk != chunk:
                continue
            out = sandbox.run(case, k)
            outcomes.update(out.results.values())
            if out.failed:
                failures.append(f"{case.model} seed {case.seed} ({case.mutation}): {out.results}")
    finally:
        sandbox.close()
    # a case is remade by model_mutator.mutate(original, sites_of(original), random.Random(seed))
    assert not failures, f"{len(failures)} failing cases:\n" + "\n".join(failures[:20])
    # the mutants reach every stage: some still run, and the reader is not the only one refusing
    assert "ok" in outcomes and "error:ModelError" in outcomes


def _patched(name: str, kind: str, value: int) -> bytes:
    """A shared model with the first site of ``kind`` set to ``value``."""
    data = bytearray(model_path(name).read_bytes())
    site = next(s for s in sites_of(bytes(data)) if s.kind == kind)
    struct.pack_into("<" + site.fmt, data, site.pos, value)
    return bytes(data)


@pytest.mark.parametrize(("kind", "value", "message"), [
    ("dim", 1 << 24, f"limit {MAX_TENSOR_BYTES:,}"),
    ("dim", -3, "negative dimension"),
    ("vec_len", 1 << 30, "limit 32,768"),
    ("buffer_index", 1 << 20, "names buffer 1048576"),
    ("opcode_index", 99, "names opcode 99"),
    ("op_io", 1 << 20, "names tensor 1048576"),
    ("dtype", 87, "type 87, which mcuq does not handle"),
    ("zero_point", 1 << 40, "zero point outside"),
])
def test_reader_refuses_with_the_limit_named(kind, value, message):
    data = _patched("mlperf-tiny/kws_ref_model.tflite", kind, value)
    with pytest.raises(ModelError, match="^kws: .*" + message.replace("(", r"\(")):
        read_model_bytes(data, name="kws", origin="kws")


def test_caps_leave_room_above_the_real_models():
    for path in _models():
        graph = read_model_bytes(path.read_bytes())
        assert all(len(t.shape) <= MAX_RANK and t.nbytes <= MAX_TENSOR_BYTES // 4 for t in graph.tensors), path


@pytest.mark.parametrize(("kind", "value"), [("dim", 1 << 24), ("op_io", 1 << 20), ("vec_len", 1 << 30)])
def test_real_subprocess_runs_print_one_line(kind, value, tmp_path):
    """Hostile files through `python -m mcuq`: exit 2, one error line, no output, no leftovers."""
    model = tmp_path / "model.tflite"
    model.write_bytes(_patched("mlperf-tiny/kws_ref_model.tflite", kind, value))
    inputs = tmp_path / "in.npz"
    np.savez(inputs, in0=np.zeros((1, 490), np.int8))
    for args in (["inspect", str(model)],
                 ["sim", str(model), "--inputs", str(inputs), "--out", str(tmp_path / "o.npz")],
                 ["pack", str(model), "-o", str(tmp_path / "out")]):
        proc = subprocess.run([sys.executable, "-m", "mcuq", *args], capture_output=True, text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args[0], proc.stderr)
        assert "model.tflite" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "model.tflite"]
