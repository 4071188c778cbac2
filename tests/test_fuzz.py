"""The firmware's frame parser survives libFuzzer with AddressSanitizer and UndefinedBehaviorSanitizer
for a bounded time: no crash, no failed invariant (firmware/fuzz/fuzz_frame_parser.c)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"
FUZZ_SECONDS = 20
SANITIZERS = "-fsanitize=fuzzer,address,undefined"


def frame(kind: int, seq: int, payload: bytes) -> bytes:
    body = struct.pack("<BBH", kind, seq, len(payload)) + payload
    return b"\xa5\x5a" + body + struct.pack("<I", zlib.crc32(body))


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory) -> Path:
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed (scripts/setup.sh installs clang and libclang-rt-14-dev)")
    exe = tmp_path_factory.mktemp("fuzz") / "fuzz_frame_parser"
    proc = subprocess.run(["clang", "-std=c99", "-g", "-O1", "-Wall", "-Wextra", "-Werror", SANITIZERS,
                           "-fno-sanitize-recover=all", f"-I{FIRMWARE / 'app'}",
                           str(FIRMWARE / "fuzz" / "fuzz_frame_parser.c"), str(FIRMWARE / "app" / "mcuq_protocol.c"),
                           "-o", str(exe)], capture_output=True, text=True)
    if proc.returncode != 0 and "libclang_rt.fuzzer" in proc.stderr:
        pytest.skip("clang has no libFuzzer runtime (install libclang-rt-14-dev)")
    assert proc.returncode == 0, proc.stderr
    return exe


def test_frame_parser_survives_fuzzing(fuzzer, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    seeds = [frame(0x01, 1, b""), frame(0x02, 2, struct.pack("<HI", 3, 0) + bytes(range(200))),
             frame(0x04, 3, struct.pack("<HIH", 0, 0, 16)), b"\xa5\x5a\x01\x00\xff\x7f" + frame(0x03, 4, b"\xff\xff"),
             frame(0x81, 5, bytes(1024))]
    for i, seed in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(seed)
    proc = subprocess.run([str(fuzzer), f"-max_total_time={FUZZ_SECONDS}", "-max_len=4096", "-print_final_stats=1",
                           f"-artifact_prefix={tmp_path}/", str(corpus)],
                          capture_output=True, text=True, timeout=FUZZ_SECONDS + 60)
    crashes = list(tmp_path.glob("crash-*")) + list(tmp_path.glob("leak-*")) + list(tmp_path.glob("timeout-*"))
    assert proc.returncode == 0 and not crashes, proc.stderr[-3000:]
    runs = int(next(line for line in proc.stderr.splitlines() if "stat::number_of_executed_units" in line).split()[-1])
    assert runs > 10_000, f"only {runs} inputs in {FUZZ_SECONDS} s"
