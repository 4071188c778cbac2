"""The firmware under AddressSanitizer and UndefinedBehaviorSanitizer on the host (tests/sanitized_build.py):

- every shared int8 model, packed, built with the whole firmware (protocol server, runtime, plain-C
  kernels, packed model) and the TCP host port, answers `mcuq verify` bit-exactly (np.array_equal
  with the numpy simulator) and exits cleanly, with no sanitizer report;
- mcuq_requantize() (C, under UBSan) == mcuq.fixedpoint.mbqm (the Python twin) == TFLM's rule,
  written here from its definition with Python integers, for every shift the packer can emit and
  multipliers 0, 2^30, 2^31 - 1 and many between, on random int32 inputs with INT32_MIN/MAX.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conftest import model_path
from sanitized_build import build_host_firmware, build_requantize_check, model_independent_objects, or_skip, running

from mcuq import pipeline
from mcuq.fixedpoint import mbqm, requantize_pow2
from mcuq.verify import verify

INT8_MODELS = ["mlperf-tiny/kws_ref_model", "mlperf-tiny/ad01_int8", "mlperf-tiny/vww_96_int8",
               "mlperf-tiny/pretrainedResnet_quant", "mlperf-tiny/model_ToyCar_quant_fullint",
               "tflite-micro/hello_world_int8", "tflite-micro/simple_add_model"]
VECTORS = 3  # seeded random inputs per model
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


@pytest.fixture(scope="module")
def shared_objects(tmp_path_factory):
    return or_skip(model_independent_objects, tmp_path_factory.mktemp("asan") / "shared")


@pytest.mark.parametrize("name", INT8_MODELS)
def test_firmware_is_bit_exact_and_sanitizer_clean(name, shared_objects, tmp_path):
    pack_dir = tmp_path / "packed"
    pipeline.pack(model_path(f"{name}.tflite"), "qemu-m7", pack_dir, pipeline.QuantOptions(), lambda m: None)
    exe = build_host_firmware(pack_dir, shared_objects, tmp_path / "firmware")
    with running(exe) as fw:
        result = verify(pack_dir, port=fw.url, count=VECTORS, seed=7)
    assert result.ok and result.exact == VECTORS and not result.mismatches, result.format_table()
    assert result.board == "host"
    assert fw.returncode == 0 and "Sanitizer" not in fw.stderr and "runtime error" not in fw.stderr, fw.stderr


# --- requantize ---------------------------------------------------------------------------------


def _tflm_requantize(x: int, m: int, shift: int) -> int:
    """TFLM's MultiplyByQuantizedMultiplier (reference kernels, int32): x << left wraps in int32,
    then gemmlowp's SaturatingRoundingDoublingHighMul and RoundingDivideByPOT."""
    left, right = max(shift, 0), max(-shift, 0)
    a = ((x << left) + (1 << 31)) % (1 << 32) - (1 << 31)
    if a == m == INT32_MIN:
        high = INT32_MAX
    else:
        prod = a * m
        nudge = (1 << 30) if prod >= 0 else 1 - (1 << 30)
        s = prod + nudge
        high = s // (1 << 31) if s >= 0 else -((-s) // (1 << 31))  # C division truncates
    mask = (1 << right) - 1
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if (high & mask) > threshold else 0)


def _cases(rng: np.random.Generator) -> np.ndarray:
    """(x, multiplier, shift) records: shifts -31..30 x multipliers (0, extremes, random) x inputs."""
    mults = np.concatenate([[0, 1 << 30, (1 << 30) + 1, INT32_MAX - 1, INT32_MAX],
                            rng.integers(1 << 30, 1 << 31, 60)])
    xs_fixed = np.array([INT32_MIN, INT32_MIN + 1, -(1 << 30), -1, 0, 1, 1 << 30, INT32_MAX - 1, INT32_MAX])
    rows = []
    for shift in range(-31, 31):
        for m in mults:
            xs = np.concatenate([xs_fixed, rng.integers(INT32_MIN, INT32_MAX, 24, endpoint=True),
                                 rng.integers(-(1 << 16), 1 << 16, 8)])  # accumulator-sized values too
            rows.append(np.stack([xs, np.full_like(xs, m), np.full_like(xs, shift)], axis=1))
    return np.concatenate(rows).astype(np.int32)


def test_requantize_c_equals_python_twin_equals_tflm(tmp_path):
    exe = or_skip(build_requantize_check, tmp_path / "requantize_check")
    records = _cases(np.random.default_rng(5))
    proc = subprocess.run([str(exe)], input=records.astype("<i4").tobytes(), capture_output=True, timeout=300)
    assert proc.returncode == 0 and b"runtime error" not in proc.stderr, proc.stderr.decode()[-2000:]
    out = np.frombuffer(proc.stdout, "<i4").reshape(-1, 2)
    assert out.shape[0] == records.shape[0]
    x, m, s = (records[:, k].astype(np.int64) for k in range(3))
    twin = mbqm(x, m, s)
    tflm = np.array([_tflm_requantize(int(a), int(b), int(c)) for a, b, c in zip(x, m, s)], np.int64)
    assert np.array_equal(tflm, twin)
    assert np.array_equal(out[:, 0], twin)
    pow2 = m == 1 << 30
    assert pow2.sum() == 62 * 41
    assert np.array_equal(out[pow2, 1], twin[pow2]) and np.array_equal(requantize_pow2(x, s), out[:, 1])


def test_ubsan_is_live(tmp_path):
    """The same build aborts on a shift outside the contract (a shift by 32): findings are not lost."""
    exe = or_skip(build_requantize_check, tmp_path / "requantize_check")
    record = np.array([[12345, 1 << 30, -32]], "<i4")
    proc = subprocess.run([str(exe)], input=record.tobytes(), capture_output=True, timeout=60)
    assert proc.returncode != 0 and b"runtime error" in proc.stderr
