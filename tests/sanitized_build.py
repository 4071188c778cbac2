"""clang builds of the firmware for the host under AddressSanitizer and UndefinedBehaviorSanitizer,
shared by tests/test_fuzz.py, tests/test_sanitizers.py and bench/fuzz_frames.py:

- the libFuzzer targets of the frame parser (firmware/fuzz/fuzz_frame_parser.c) and of the
  request handling with a packed model (firmware/fuzz/fuzz_app.c);
- the whole firmware (protocol server, runtime, kernels, a pack output's model) with the host
  port firmware/fuzz/port_host.c, whose serial link is a TCP socket `mcuq verify` talks to;
- firmware/fuzz/requantize_check.c, the requantize header on records from stdin.

Every sanitizer finding aborts the program (-fno-sanitize-recover=all), so a run that ends
cleanly had none. The host build has no __ARM_FEATURE_DSP: it checks the plain C kernel paths.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all")
CFLAGS = ("-std=c99", "-g", "-O1", "-Wall", "-Wextra", "-Werror", "-fno-omit-frame-pointer")
DEFINES = ('-DMCUQ_BOARD="host"', '-DMCUQ_FIRMWARE_VERSION="host-asan"')
T = TypeVar("T")
INCLUDES = [FIRMWARE / d for d in ("include", "runtime", "app", "ports", "kernels")]


class BuildError(Exception):
    """The sources do not compile or link."""


class ToolMissing(BuildError):
    """clang, or its sanitizer and libFuzzer runtime, is not installed."""


def clang() -> str:
    """Path of clang, or ToolMissing saying how to get it."""
    cc = shutil.which("clang")
    if cc is None:
        raise ToolMissing("clang is not installed (scripts/setup.sh installs clang and libclang-rt-14-dev)")
    return cc


def _run(args: Sequence[str]) -> None:
    done = subprocess.run([clang(), *args], capture_output=True, text=True)
    if done.returncode != 0:
        if "libclang_rt" in done.stderr:
            raise ToolMissing("clang has no sanitizer/libFuzzer runtime (install libclang-rt-14-dev)")
        raise BuildError(done.stderr[-3000:])


def or_skip(build: Callable[..., T], *args) -> T:
    """``build(*args)``, skipping the calling test when the tools are missing."""
    import pytest

    try:
        return build(*args)
    except ToolMissing as e:
        pytest.skip(str(e))


def _compile(sources: Sequence[Path], includes: Sequence[Path], out_dir: Path) -> list[Path]:
    """Objects of ``sources`` in ``out_dir`` (compiled two at a time)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    objects = [out_dir / f"{s.stem}.o" for s in sources]
    flags = [*CFLAGS, *SANITIZE, *DEFINES, *(f"-I{d}" for d in includes)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda so: _run([*flags, "-c", str(so[0]), "-o", str(so[1])]), zip(sources, objects)))
    return objects


def build_fuzzer(out: Path) -> Path:
    """The frame parser's libFuzzer target (ASan + UBSan) at ``out``."""
    _run([*CFLAGS, "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all", f"-I{FIRMWARE / 'app'}",
          str(FIRMWARE / "fuzz" / "fuzz_frame_parser.c"), str(FIRMWARE / "app" / "mcuq_protocol.c"), "-o", str(out)])
    return out


def _frame(kind: int, seq: int, payload: bytes) -> bytes:
    body = struct.pack("<BBH", kind, seq, len(payload)) + payload
    return b"\xa5\x5a" + body + struct.pack("<I", zlib.crc32(body))


def seed_corpus(directory: Path) -> Path:
    """A few well-formed requests (INFO, WRITE_TENSOR, READ_TENSOR, a broken one before a RUN,
    a big response) to start the frame fuzzer from."""
    directory.mkdir(parents=True, exist_ok=True)
    seeds = [_frame(0x01, 1, b""), _frame(0x02, 2, struct.pack("<HI", 3, 0) + bytes(range(200))),
             _frame(0x04, 3, struct.pack("<HIH", 0, 0, 16)), b"\xa5\x5a\x01\x00\xff\x7f" + _frame(0x03, 4, b"\xff\xff"),
             _frame(0x81, 5, bytes(1024))]
    for i, seed in enumerate(seeds):
        (directory / f"seed{i}").write_bytes(seed)
    return directory


def build_requantize_check(out: Path) -> Path:
    """firmware/fuzz/requantize_check.c (ASan + UBSan) at ``out``."""
    _run([*CFLAGS, *SANITIZE, f"-I{FIRMWARE / 'include'}", str(FIRMWARE / "fuzz" / "requantize_check.c"),
          "-o", str(out)])
    return out


def model_independent_objects(out_dir: Path) -> list[Path]:
    """Kernels and frame protocol: compiled once for every model."""
    sources = [*sorted((FIRMWARE / "kernels").glob("*.c")), FIRMWARE / "app" / "mcuq_protocol.c"]
    return _compile(sources, INCLUDES, out_dir)


def build_host_firmware(pack_dir: Path, shared: Sequence[Path], out: Path) -> Path:
    """The firmware of a pack output for the host: its model, the runtime, the app and the host
    port, linked with the ``shared`` objects of model_independent_objects()."""
    sources = [pack_dir / "src" / "mcuq_model.c", FIRMWARE / "runtime" / "mcuq_runtime.c",
               FIRMWARE / "app" / "main.c", FIRMWARE / "fuzz" / "port_host.c"]
    objects = _compile(sources, [pack_dir / "src", *INCLUDES], out.parent / f"{out.name}-obj")
    _run([*SANITIZE, *map(str, objects), *map(str, shared), "-o", str(out)])
    return out


def build_app_fuzzer(pack_dir: Path, shared: Sequence[Path], out: Path) -> Path:
    """The libFuzzer target of the request handling (firmware/fuzz/fuzz_app.c) for a pack output."""
    includes = [pack_dir / "src", *INCLUDES]
    objects = _compile([pack_dir / "src" / "mcuq_model.c", FIRMWARE / "runtime" / "mcuq_runtime.c"], includes,
                       out.parent / f"{out.name}-obj")
    _run([*CFLAGS, "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all", *DEFINES,
          *(f"-I{d}" for d in includes), str(FIRMWARE / "fuzz" / "fuzz_app.c"), *map(str, objects),
          *map(str, shared), "-o", str(out)])
    return out


@dataclass
class HostFirmware:
    """A running host firmware: its pyserial URL; ``returncode`` and ``stderr`` once it ended."""

    url: str
    returncode: int | None = None
    stderr: str = ""


@contextmanager
def running(exe: Path, timeout: float = 30.0) -> Iterator[HostFirmware]:
    """Start ``exe`` (a build_host_firmware output) on a free port; on leaving, wait for it to
    end (it does when the connection closes) and record its exit status and stderr."""
    env = {**os.environ, "MCUQ_HOST_PORT": "0", "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
           "UBSAN_OPTIONS": "print_stacktrace=1"}
    proc = subprocess.Popen([str(exe)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        if not line.startswith("listening "):
            proc.kill()
            raise BuildError(f"{exe} did not start: {line!r} {proc.stderr.read()[-2000:]}")
        fw = HostFirmware(f"socket://127.0.0.1:{int(line.split()[1])}")
        yield fw
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    fw.returncode, fw.stderr = proc.returncode, err
