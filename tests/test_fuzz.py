"""The firmware's frame parser (firmware/fuzz/fuzz_frame_parser.c) and its request handling with a
packed model (firmware/fuzz/fuzz_app.c) survive libFuzzer with AddressSanitizer and
UndefinedBehaviorSanitizer for a bounded time: no crash, no failed invariant. bench/fuzz_frames.py
runs them for 10^6 and 10^5 executions."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import model_path
from sanitized_build import build_app_fuzzer, build_fuzzer, model_independent_objects, or_skip, seed_corpus

from mcuq import pipeline

FUZZ_SECONDS = 20
APP_FUZZ_SECONDS = 15


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory) -> Path:
    return or_skip(build_fuzzer, tmp_path_factory.mktemp("fuzz") / "fuzz_frame_parser")


def _fuzz(exe: Path, seconds: int, work: Path) -> int:
    """Run ``exe`` for ``seconds`` from the seed corpus; the executions (asserts a clean end)."""
    corpus = seed_corpus(work / "corpus")
    proc = subprocess.run([str(exe), f"-max_total_time={seconds}", "-max_len=4096", "-print_final_stats=1",
                           f"-artifact_prefix={work}/", str(corpus)],
                          capture_output=True, text=True, timeout=seconds + 60)
    crashes = list(work.glob("crash-*")) + list(work.glob("leak-*")) + list(work.glob("timeout-*"))
    assert proc.returncode == 0 and not crashes, proc.stderr[-3000:]
    return int(next(line for line in proc.stderr.splitlines() if "stat::number_of_executed_units" in line).split()[-1])


def test_frame_parser_survives_fuzzing(fuzzer, tmp_path):
    runs = _fuzz(fuzzer, FUZZ_SECONDS, tmp_path)
    assert runs > 10_000, f"only {runs} inputs in {FUZZ_SECONDS} s"


def test_request_handling_survives_fuzzing(tmp_path):
    pack_dir = tmp_path / "packed"
    pipeline.pack(model_path("tflite-micro/hello_world_int8.tflite"), "qemu-m7", pack_dir, pipeline.QuantOptions(),
                  lambda m: None)
    shared = or_skip(model_independent_objects, tmp_path / "shared")
    exe = build_app_fuzzer(pack_dir, shared, tmp_path / "fuzz_app")
    runs = _fuzz(exe, APP_FUZZ_SECONDS, tmp_path)
    assert runs > 5_000, f"only {runs} inputs in {APP_FUZZ_SECONDS} s"
