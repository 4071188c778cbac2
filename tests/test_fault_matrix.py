"""The serial fault matrix against the real emulator: ad01_int8 firmware on qemu-m7, verify
through a fault-injecting proxy (tests/fault_proxy.py). Every case either recovers bit-exact or
ends in the one error it names, well within its bound; never a hang, never a traceback.
Needs qemu-system-arm and arm-none-eabi-gcc (skipped with a reason without them)."""

from __future__ import annotations

import re
import shutil

import pytest

from conftest import model_path
from fake_device import make_pack
from fault_proxy import BOUND, CASES, Case, Fault, emulator, run_case
from mcuq.build import build
from mcuq.errors import DeviceError
from mcuq.flash import running_emulator
from mcuq.verify import verify

pytestmark = [
    pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm is not installed"),
    pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc is not installed"),
]


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    """ad01_int8 (verified in every case) and hello_world_int8 (the wrong firmware), built."""
    root = tmp_path_factory.mktemp("matrix")
    built = {}
    for name, rel in (("ad01", "mlperf-tiny/ad01_int8.tflite"), ("other", "tflite-micro/hello_world_int8.tflite")):
        pack = make_pack(model_path(rel), root / name)
        build(pack)
        built[name] = pack
    return built


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault_case(packs, case: Case):
    out = run_case(case, packs["ad01"], packs["other"])
    assert out.outcome in ("recovered", "error"), f"{case.name}: {out.outcome}: {out.message}"
    assert out.seconds < BOUND
    assert out.injected >= (0 if case.wrong_firmware else 1), "the fault was never applied"
    if case.expect == "recovered":
        assert out.outcome == "recovered", f"{case.name}: {out.message}"
        assert "BIT-EXACT: 3 of 3" in out.message
        damaged = {r.fault for r in case.rules} - {Fault.GARBAGE}
        assert out.lost >= (1 if damaged else 0), "a damaged frame must cost a retry"
    else:
        assert out.outcome == "error", f"{case.name} should fail, but {out.message}"
        assert re.search(case.expect, out.message), out.message
        assert "\n" not in out.message


def test_dead_emulator_is_named(packs):
    """An emulator killed behind verify's back: verify without a port names it, nothing hangs."""
    pack = packs["ad01"]
    with emulator(pack) as emu:
        emu.kill()
        assert running_emulator(pack) is None
        with pytest.raises(DeviceError, match=r"the emulator `mcuq flash .*` started has stopped"):
            verify(pack, count=1, timeout=1.0)
    assert not (pack / "build" / "emulator.json").exists()
