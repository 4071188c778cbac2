"""The firmware's frame parser survives libFuzzer with AddressSanitizer and UndefinedBehaviorSanitizer
for a bounded time: no crash, no failed invariant (firmware/fuzz/fuzz_frame_parser.c).
bench/fuzz_frames.py runs it for 10^6 executions."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sanitized_build import build_fuzzer, or_skip, seed_corpus

FUZZ_SECONDS = 20


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory) -> Path:
    return or_skip(build_fuzzer, tmp_path_factory.mktemp("fuzz") / "fuzz_frame_parser")


def test_frame_parser_survives_fuzzing(fuzzer, tmp_path):
    corpus = seed_corpus(tmp_path / "corpus")
    proc = subprocess.run([str(fuzzer), f"-max_total_time={FUZZ_SECONDS}", "-max_len=4096", "-print_final_stats=1",
                           f"-artifact_prefix={tmp_path}/", str(corpus)],
                          capture_output=True, text=True, timeout=FUZZ_SECONDS + 60)
    crashes = list(tmp_path.glob("crash-*")) + list(tmp_path.glob("leak-*")) + list(tmp_path.glob("timeout-*"))
    assert proc.returncode == 0 and not crashes, proc.stderr[-3000:]
    runs = int(next(line for line in proc.stderr.splitlines() if "stat::number_of_executed_units" in line).split()[-1])
    assert runs > 10_000, f"only {runs} inputs in {FUZZ_SECONDS} s"
