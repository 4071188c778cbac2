"""Ctrl-C and crashes leave nothing half done: an interrupted flash or verify leaves no emulator
and no emulator.json behind (a finished flash keeps its emulator for verify); pack and build
interrupted at any point leave the previous output complete. Real signals to real `mcuq`
processes, plus in-process interrupts at the exact points that matter."""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import model_path
from fake_device import make_pack
from mcuq import flash
from mcuq import verify as verify_module
from mcuq.build import BUILD_SUBDIR, build
from mcuq.verify import verify

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm is not installed")
needs_gcc = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc is not installed")
AD01 = "mlperf-tiny/ad01_int8.tflite"
HELLO = "tflite-micro/hello_world_int8.tflite"
INTERRUPTED = 130  # the CLI's exit code after Ctrl-C or SIGTERM


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def qemu_pids(elf: Path) -> list[int]:
    """Live QEMU processes running ``elf``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if cmd and Path(cmd[0].decode()).name == flash.QEMU and str(elf).encode() in cmd and state != "Z":
            pids.append(int(proc.name))
    return pids


def no_emulator_left(pack: Path) -> None:
    build_dir = pack / BUILD_SUBDIR
    assert qemu_pids(build_dir / "firmware.elf") == []
    assert not (build_dir / flash.STATE_FILE).exists()
    assert not list(build_dir.glob(f".{flash.STATE_FILE}*"))


def mcuq(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mcuq", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def handles_sigterm(pid: int) -> bool:
    """The CLI has started its command: it catches SIGTERM (signals before that are Python's)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # ended
    caught = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def signal_when(proc: subprocess.Popen, ready, sig: int, limit: float = 120.0) -> tuple[int, str]:
    """Send ``sig`` to ``proc`` once its command runs and then ``ready()`` (made then) is true, unless
    it ended first; its exit code and stderr."""
    deadline = time.monotonic() + limit
    while proc.poll() is None and not handles_sigterm(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.002)
    ready = ready()
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.002)
    if proc.poll() is None:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=limit)
    return proc.returncode, err


def after(seconds: float):
    """A ``ready`` for signal_when: ``seconds`` after the command started."""
    def start():
        t0 = time.monotonic()
        return lambda: time.monotonic() - t0 >= seconds
    return start


def once(condition):
    """A ``ready`` for signal_when: as soon as ``condition()`` holds."""
    return lambda: condition


def assert_clean_exit(code: int, err: str, sig: int) -> bool:
    """0 (finished first), 130 with the one line "interrupted", or ended by ``sig`` itself while
    the interpreter shut down after finishing; never a traceback. True when interrupted."""
    assert code in (0, INTERRUPTED, -sig), (code, err)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    if code == INTERRUPTED:
        assert err.strip().splitlines()[-1] == "interrupted", err
    return code == INTERRUPTED


# -- flash and verify -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    if shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("qemu-system-arm and arm-none-eabi-gcc are needed")
    pack = make_pack(model_path(AD01), tmp_path_factory.mktemp("irq") / "ad01")
    build(pack)
    return pack


def _raise_interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@needs_qemu
@pytest.mark.parametrize("point", ["spawned", "listening", "state"])
def test_interrupted_flash_leaves_no_emulator(built, monkeypatch, point):
    original = flash._wait_listening
    if point == "spawned":  # QEMU started, not yet listening
        monkeypatch.setattr(flash, "_wait_listening", _raise_interrupt)
    elif point == "listening":
        monkeypatch.setattr(flash, "_wait_listening", lambda proc, log: (original(proc, log), _raise_interrupt()))
    else:  # while the state file is being written
        monkeypatch.setattr(flash, "_sha256", _raise_interrupt)
    with pytest.raises(KeyboardInterrupt):
        flash.flash(built)
    no_emulator_left(built)


@needs_qemu
def test_flash_keeps_the_emulator_and_interrupted_verify_stops_it(built):
    url = flash.flash(built)
    try:
        assert flash.running_emulator(built) == url
        assert len(qemu_pids(built / BUILD_SUBDIR / "firmware.elf")) == 1
        seen = []

        def progress(done, total):
            seen.append(done)
            if done == 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            verify(built, count=5, progress=progress)
        assert seen == [1, 2]
        no_emulator_left(built)
    finally:
        flash.stop(built)


@needs_qemu
def test_verify_interrupted_before_it_talks_stops_the_emulator(built, monkeypatch):
    flash.flash(built)
    try:
        monkeypatch.setattr(verify_module, "prepare_graph", _raise_interrupt)
        with pytest.raises(KeyboardInterrupt):
            verify(built, count=2)
        no_emulator_left(built)
    finally:
        flash.stop(built)


@needs_qemu
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_flash_interrupted(built, sig):
    elf = built / BUILD_SUBDIR / "firmware.elf"
    outcomes = []
    for ready in (once(lambda: bool(qemu_pids(elf))), after(0.0), after(0.05)):
        code, err = signal_when(mcuq("flash", built), ready, sig)
        try:
            if assert_clean_exit(code, err, sig):
                no_emulator_left(built)
            else:  # finished before the signal: its emulator runs and is recorded
                state = built / BUILD_SUBDIR / flash.STATE_FILE
                seen = (code, err, state.read_text() if state.exists() else None, qemu_pids(elf))
                assert flash.running_emulator(built) is not None, seen
                assert len(qemu_pids(elf)) == 1, seen
            outcomes.append(code)
        finally:
            flash.stop(built)
    assert INTERRUPTED in outcomes


@needs_qemu
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_verify_interrupted_stops_the_emulator(built, sig):
    flash.flash(built)
    try:
        code, err = signal_when(mcuq("verify", built, "--count", "1000"), after(1.0), sig)
        assert assert_clean_exit(code, err, sig) and code == INTERRUPTED
        no_emulator_left(built)
    finally:
        flash.stop(built)


# -- pack and build ---------------------------------------------------------------------------


def temp_siblings(out: Path) -> list[Path]:
    return [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_cli_pack_interrupted_keeps_the_old_output(tmp_path):
    out, ref = tmp_path / "out", tmp_path / "ref"
    make_pack(model_path(HELLO), out)
    make_pack(model_path(AD01), ref)
    old, new = snapshot(out), snapshot(ref)
    interrupted = 0
    readies = [once(lambda: bool(temp_siblings(out))), *map(after, (0.0, 0.2, 0.5, 1.0))]
    for k, ready in enumerate(readies):
        sig = signal.SIGTERM if k == 2 else signal.SIGINT
        code, err = signal_when(mcuq("pack", model_path(AD01), "-o", out), ready, sig)
        interrupted += assert_clean_exit(code, err, sig)
        assert snapshot(out) in (old, new)
        assert temp_siblings(out) == []
        if snapshot(out) == new:  # finished: start again from the old output
            shutil.rmtree(out)
            make_pack(model_path(HELLO), out)
    assert interrupted >= 1


def build_state(build_dir: Path, old: dict[str, str], new: dict[str, str]) -> str:
    """"old" when untouched, "new" when a complete qemu-m7 build (the map file names the object
    cache, so the new build is compared by its file set and firmware bytes)."""
    now = snapshot(build_dir)
    if now == old:
        return "old"
    assert set(now) == set(new), sorted(set(now) ^ set(new))
    assert all(now[f] == new[f] for f in ("firmware.elf", "firmware.bin", "firmware.hex")), "a partial build"
    return "new"


@needs_gcc
def test_cli_build_interrupted_keeps_the_old_output(tmp_path):
    pack = make_pack(model_path(HELLO), tmp_path / "hello")
    build(pack, "qemu-m7")
    new = snapshot(pack / BUILD_SUBDIR)
    build(pack, "qemu-m4")
    old = snapshot(pack / BUILD_SUBDIR)
    assert old["firmware.bin"] != new["firmware.bin"]
    cold = {"MCUQ_CACHE": str(tmp_path / "cache")}  # cold cache: compiling takes a while
    interrupted = 0
    readies = [once(lambda: bool(list(pack.glob(f".{BUILD_SUBDIR}.*")))), *map(after, (0.3, 1.0, 2.5))]
    for k, ready in enumerate(readies):
        sig = signal.SIGTERM if k == 2 else signal.SIGINT
        shutil.rmtree(cold["MCUQ_CACHE"], ignore_errors=True)
        env = cold if k else None  # the link step comes soon with the objects cached
        code, err = signal_when(mcuq("build", pack, "--board", "qemu-m7", env=env), ready, sig)
        interrupted += assert_clean_exit(code, err, sig)
        assert list(pack.glob(f".{BUILD_SUBDIR}*")) == []
        if build_state(pack / BUILD_SUBDIR, old, new) == "new":
            build(pack, "qemu-m4")
    assert interrupted >= 1


def _interrupt_rename_onto(monkeypatch, target: Path) -> None:
    """Ctrl-C right before the finished output is renamed onto ``target`` (the old one moved aside)."""
    original = pathlib.Path.rename
    fired = []

    def rename(self, dest):
        if Path(dest) == target and not fired:
            fired.append(self)
            raise KeyboardInterrupt
        return original(self, dest)

    monkeypatch.setattr(pathlib.Path, "rename", rename)


def test_pack_interrupted_between_the_renames(tmp_path, monkeypatch):
    out = make_pack(model_path(HELLO), tmp_path / "out")
    old = snapshot(out)
    _interrupt_rename_onto(monkeypatch, out)
    with pytest.raises(KeyboardInterrupt):
        make_pack(model_path(AD01), out)
    assert snapshot(out) == old
    assert temp_siblings(out) == []


@needs_gcc
def test_build_interrupted_between_the_renames(tmp_path, monkeypatch):
    pack = make_pack(model_path(HELLO), tmp_path / "hello")
    build(pack)
    old = snapshot(pack / BUILD_SUBDIR)
    _interrupt_rename_onto(monkeypatch, pack / BUILD_SUBDIR)
    with pytest.raises(KeyboardInterrupt):
        build(pack, "qemu-m4")
    assert snapshot(pack / BUILD_SUBDIR) == old
    assert list(pack.glob(f".{BUILD_SUBDIR}*")) == []
