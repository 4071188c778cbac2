"""Cross-compile the firmware for a pack output directory: app, runtime, kernels, the board's
port and the packed model, with Debian's arm-none-eabi-gcc, into DIR/build/firmware.{elf,bin,hex}.

Flags come from the board file; the linker script is rendered from the board's memory map.
newlib-nano is linked without syscall stubs, so firmware that allocates (malloc needs _sbrk) or
prints does not link.
Objects are cached by the hash of compiler, flags and preprocessed source, so a second board or a
second model recompiles only what changed (the model, and files that include its header). The
build directory is written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from string import Template
from typing import Callable

from mcuq import __version__, interrupts
from mcuq.boards import Board, load_board
from mcuq.errors import BoardFitError, DeviceError, McuqError, ModelError

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"
PORT_FILES = {"cmsdk": "port_cmsdk.c", "stm32f4-usart": "port_stm32f4.c", "stm32f7-usart": "port_stm32f7.c"}
STACK_BYTES = 8 * 1024  # reserved below the end of RAM; the kernels need no scratch memory
BUILD_SUBDIR = "build"
BUILD_RECORD = "build.json"  # what was built, for which board, with which flags
KEEP_ACROSS_BUILDS = ("emulator.json", "qemu.log")  # flash's state for a running emulator
GCC = "arm-none-eabi-gcc"
INSTALL_HINT = ("install it with `sudo apt-get install --no-install-recommends gcc-arm-none-eabi "
                "libnewlib-arm-none-eabi` (scripts/setup.sh does)")
CFLAGS = ("-std=c99", "-O2", "-g", "-Wall", "-Wextra", "-ffunction-sections", "-fdata-sections",
          "-fno-common")
OPTIMIZE = ("size", "speed")  # mcuq build --optimize, the default first
DSP_MARK = "MCUQ_DSP"  # kernels with a DSP path (the hot ones) stay at -O2; the rest is built for size
# Built for size: -Os, with copy and clear loops left as loops (GCC would call newlib's memcpy, memset
# and memmove for them: 724 bytes of code the firmware then needs only for those loops).
SIZE_FLAGS = ("-Os", "-fno-tree-loop-distribute-patterns")
LTO_DIRS = ("app", "runtime", "ports")  # link-time optimized together (-flto, linked at -Os): the code
# around the kernels, inlined across files into the one call path it is (about 320 bytes less)
LTO_LDFLAGS = ("-flto", "-Os")
NS_PER_S = 1_000_000_000
LDFLAGS = ("-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections")
_ERROR = re.compile(r"error|undefined reference", re.IGNORECASE)
_OVERFLOW = re.compile(r"region `(FLASH|RAM)' overflowed")

Progress = Callable[[int, int], None]  # (done, total) compile steps


@dataclass(frozen=True)
class BuildResult:
    """What a build made and how much of the board it takes."""

    board: str
    elf: Path
    bin: Path
    hex: Path
    flash_used: int  # code, constants and .data initial values
    flash_bytes: int
    ram_used: int  # .data, .bss (arena included) and the reserved stack
    ram_bytes: int
    compiled: int  # objects compiled in this build
    reused: int  # objects taken from the cache
    code_used: int  # flash but the packed model (weights, per-node params, tables): the runtime code

    def summary(self) -> str:
        return (f"firmware for {self.board}: flash {self.flash_used:,} of {self.flash_bytes:,} bytes "
                f"({100 * self.flash_used / self.flash_bytes:.1f}%; code {self.code_used:,}, the rest the "
                f"model), RAM {self.ram_used:,} of {self.ram_bytes:,} bytes "
                f"({100 * self.ram_used / self.ram_bytes:.1f}%)")


def cache_dir() -> Path:
    """Where compiled objects are kept: $MCUQ_CACHE, else the user's cache directory."""
    if os.environ.get("MCUQ_CACHE"):
        return Path(os.environ["MCUQ_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mcuq" / "objects"


def toolchain() -> str:
    """Path of arm-none-eabi-gcc with its newlib; DeviceError saying how to install it when absent."""
    gcc = shutil.which(GCC)
    if gcc is None:
        raise DeviceError(f"{GCC} not found: {INSTALL_HINT}")
    if not Path(_gcc_output(gcc, "-print-file-name=nano.specs")).is_absolute():
        raise DeviceError(f"{GCC} has no newlib (nano.specs): {INSTALL_HINT}")
    return gcc


@lru_cache(maxsize=None)
def _gcc_output(gcc: str, arg: str) -> str:
    return subprocess.run([gcc, arg], capture_output=True, text=True, check=True).stdout.strip()


def board_defines(board: Board) -> tuple[str, ...]:
    """The -D flags the port reads (see firmware/ports/mcuq_port.h); MCUQ_TICK_NS_NUM / _DEN is
    1e9 / clock_hz in lowest terms (nanoseconds per counter tick: instructions under QEMU)."""
    tag = re.sub(r"[^A-Za-z0-9]", "_", board.name).upper()
    g = math.gcd(NS_PER_S, board.clock_hz)
    return (f"-DMCUQ_UART_BASE=0x{board.uart.base:08X}u", f"-DMCUQ_CLOCK_HZ={board.clock_hz}u",
            f"-DMCUQ_TICK_NS_NUM={NS_PER_S // g}u", f"-DMCUQ_TICK_NS_DEN={board.clock_hz // g}u",
            f'-DMCUQ_BOARD="{board.name}"', f"-DMCUQ_BOARD_{tag}=1",
            f"-DMCUQ_EMULATED={int(board.emulated)}", f'-DMCUQ_FIRMWARE_VERSION="{__version__}"')


def sources(pack_dir: Path, board: Board) -> list[Path]:
    """Every C file of the firmware for ``board``: app, runtime, kernels, port, packed model."""
    fw = FIRMWARE_DIR
    files = [*sorted((fw / "app").glob("*.c")), *sorted((fw / "runtime").glob("*.c")),
             *sorted((fw / "kernels").glob("*.c")), fw / "ports" / "mcuq_cortexm.c",
             fw / "ports" / PORT_FILES[board.uart.driver], pack_dir / "src" / "mcuq_model.c"]
    return files


def include_dirs(pack_dir: Path) -> tuple[str, ...]:
    fw = FIRMWARE_DIR
    return tuple(f"-I{d}" for d in (pack_dir / "src", fw / "include", fw / "runtime", fw / "app", fw / "ports"))


def linker_script(board: Board, flash_bytes: int | None = None, ram_bytes: int | None = None) -> str:
    """The linker script for ``board``'s memory map (sizes overridable to measure a misfit)."""
    text = (FIRMWARE_DIR / "ports" / "mcuq.ld.in").read_text()
    return Template(text).substitute(
        board=board.name, flash_origin=f"0x{board.flash_origin:08X}",
        flash_bytes=flash_bytes or board.flash_bytes, ram_origin=f"0x{board.ram_origin:08X}",
        ram_bytes=ram_bytes or board.ram_bytes, ram_end=f"0x{board.ram_origin + board.ram_bytes:08X}",
        stack_bytes=STACK_BYTES)


def fallback_defines(manifest: dict) -> tuple[str, ...]:
    """-DMCUQ_PLAIN_<KERNEL>=0 for each kernel whose plain-C fallback no layer of the model needs
    on a DSP core (pack's plain_fallbacks); the kernels keep it unless told so."""
    return tuple(f"-D{kernel.upper().replace('MCUQ_', 'MCUQ_PLAIN_', 1)}=0"
                 for kernel, needed in manifest.get("plain_fallbacks", {}).items() if not needed)


def read_manifest(pack_dir: Path) -> dict:
    path = pack_dir / "manifest.json"
    if not path.is_file():
        raise ModelError(f"{pack_dir}: not an mcuq pack output (no manifest.json); run mcuq pack first")
    return json.loads(path.read_text())


def read_build(pack_dir: Path) -> dict:
    """The record of DIR's last build (board, sizes); DeviceError when DIR has no firmware."""
    path = pack_dir / BUILD_SUBDIR / BUILD_RECORD
    if not path.is_file() or not (pack_dir / BUILD_SUBDIR / "firmware.elf").is_file():
        raise DeviceError(f"{pack_dir}: no firmware built; run mcuq build {pack_dir} first")
    return json.loads(path.read_text())


def build(pack_dir: str | Path, board: str | None = None, progress: Progress | None = None,
          optimize: str = "size") -> BuildResult:
    """Build DIR/build/firmware.{elf,bin,hex} for ``board`` (default: the board DIR was packed for);
    ``optimize`` is one of OPTIMIZE (see _size_flags)."""
    if optimize not in OPTIMIZE:
        raise McuqError(f"--optimize {optimize}: choose one of {', '.join(OPTIMIZE)}")
    pack_dir = Path(pack_dir).resolve()
    manifest = read_manifest(pack_dir)
    b = load_board(board or manifest["board"])
    gcc = toolchain()
    flags = (*b.cflags, *CFLAGS, *board_defines(b), *include_dirs(pack_dir), *fallback_defines(manifest))
    srcs = sources(pack_dir, b)
    total = len(srcs) + 1  # compiles, then the link
    if progress:
        progress(0, total)
    objects: dict[Path, Path] = {}
    fresh = 0
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        jobs = {pool.submit(_compile, gcc, (*flags, *_size_flags(src, optimize)), src): src for src in srcs}
        for job in as_completed(jobs):
            objects[jobs[job]], compiled = job.result()
            fresh += compiled
            if progress:
                progress(len(objects), total)

    out = pack_dir / BUILD_SUBDIR
    tmp = pack_dir / f".{BUILD_SUBDIR}.{secrets.token_hex(4)}"  # named first: cleaned up if interrupted
    old = pack_dir / f".{BUILD_SUBDIR}.old"
    try:
        tmp.mkdir()
        elf = tmp / "firmware.elf"
        _link(gcc, b, [objects[src] for src in srcs], elf)
        flash_used, ram_used = _sizes(gcc, elf)
        code_used = flash_used - _sizes(gcc, objects[srcs[-1]])[0]  # all but the packed model's data
        record = {"board": b.name, "flash_used": flash_used, "code_used": code_used, "flash_bytes": b.flash_bytes,
                  "ram_used": ram_used, "ram_bytes": b.ram_bytes, "mcuq_version": __version__,
                  "optimize": optimize, "cflags": list(flags) + (list(SIZE_FLAGS) if optimize == "size" else []),
                  "ldflags": [*b.cflags, *LDFLAGS, *LTO_LDFLAGS]}
        (tmp / BUILD_RECORD).write_text(json.dumps(record, indent=1) + "\n")
        objcopy = _tool(gcc, "objcopy")
        for fmt, name in (("binary", "firmware.bin"), ("ihex", "firmware.hex")):
            _run([objcopy, "-O", fmt, str(elf), str(tmp / name)], f"objcopy to {name}")
        for name in KEEP_ACROSS_BUILDS:
            if (out / name).exists():
                shutil.copy2(out / name, tmp / name)
        with interrupts.deferred():  # the swap is never cut in half
            shutil.rmtree(old, ignore_errors=True)
            if out.exists():
                out.rename(old)
            tmp.rename(out)
    finally:
        with interrupts.deferred():  # nor the clean-up
            if old.exists() and not out.exists():  # failed between the renames
                old.rename(out)
            shutil.rmtree(old, ignore_errors=True)
            shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        progress(total, total)
    return BuildResult(b.name, out / "firmware.elf", out / "firmware.bin", out / "firmware.hex",
                       flash_used, b.flash_bytes, ram_used, b.ram_bytes, fresh, len(srcs) - fresh, code_used)


def _size_flags(src: Path, optimize: str) -> tuple[str, ...]:
    """"size" (the default): SIZE_FLAGS for all; the hot loops are assembly either way, and the
    code stays under 16 KB on the MLPerf Tiny models (README, Results). "speed": the kernels with
    a DSP path at -O2 (as TFLM builds its kernels; its core at -Os): 0 to 1.5 % fewer instructions
    there for about 2.5 KB more code. The LTO_DIRS files are link-time optimized either way; the
    kernels stay out of it (their symbols, and the speed build's per-file choice, are kept)."""
    if src.parent.parent == FIRMWARE_DIR and src.parent.name in LTO_DIRS:
        return (*SIZE_FLAGS, "-flto")
    hot = optimize == "speed" and src.parent == FIRMWARE_DIR / "kernels" and DSP_MARK in src.read_text()
    return () if hot else SIZE_FLAGS


def _tool(gcc: str, name: str) -> str:
    return gcc.removesuffix("gcc") + name


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if _ERROR.search(ln) and not ln.startswith("collect2")]
        lines = lines or proc.stderr.splitlines()
        raise McuqError(f"{what} failed: {lines[0].strip() if lines else f'exit code {proc.returncode}'}")
    return proc


def _compile(gcc: str, flags: tuple[str, ...], src: Path) -> tuple[Path, bool]:
    """The object for ``src``: from the cache when compiler, flags and preprocessed text match."""
    pre = _run([gcc, *flags, "-E", "-P", str(src)], f"compiling {src.name}").stdout
    key = hashlib.sha256("\0".join([_gcc_output(gcc, "--version"), *flags, pre]).encode()).hexdigest()
    obj = cache_dir() / key[:2] / f"{key[2:]}.o"
    if obj.exists():
        return obj, False
    obj.parent.mkdir(parents=True, exist_ok=True)
    tmp = obj.with_name(f".{obj.name}.{os.getpid()}.{id(src)}.tmp")
    try:
        _run([gcc, *flags, "-c", str(src), "-o", str(tmp)], f"compiling {src.name}")
        os.replace(tmp, obj)  # atomic: parallel builds may race to the same key
    finally:
        tmp.unlink(missing_ok=True)
    return obj, True




def _link(gcc: str, board: Board, objects: list[Path], elf: Path) -> None:
    """Link for ``board``; when the firmware does not fit, measure by how much and say so."""
    script = elf.with_name("mcuq.ld")
    script.write_text(linker_script(board))
    cmd = [gcc, *board.cflags, *LDFLAGS, *LTO_LDFLAGS, f"-Wl,-T,{script}", f"-Wl,-Map,{elf.with_suffix('.map')}",
           *map(str, objects), "-o", str(elf)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        return
    if "undefined reference to `_sbrk'" in proc.stderr:
        raise McuqError(f"linking the firmware for {board.name} failed: something calls malloc (or printf), "
                        "and mcuq firmware allocates nothing")
    if not _OVERFLOW.search(proc.stderr):
        _run(cmd, f"linking the firmware for {board.name}")
    # Relink with room to spare to learn the real sizes, then report the first misfit.
    roomy = elf.with_name("measure.elf")
    script.write_text(linker_script(board, flash_bytes=1 << 31, ram_bytes=1 << 30))
    _run([*cmd[:-1], str(roomy)], f"linking the firmware for {board.name}")
    flash_used, ram_used = _sizes(gcc, roomy)
    for what, used, have in (("flash", flash_used, board.flash_bytes), ("RAM", ram_used, board.ram_bytes)):
        if used > have:
            raise BoardFitError(_misfit(what, used, board.name, have))
    raise McuqError(f"linking the firmware for {board.name} failed: {_OVERFLOW.search(proc.stderr).group(0)}")


def _misfit(what: str, used: int, board: str, have: int) -> str:
    return f"firmware needs {used:,} bytes of {what}, board {board} has {have:,} (over by {used - have:,})"


def _sizes(gcc: str, elf: Path) -> tuple[int, int]:
    """(flash, RAM) bytes from arm-none-eabi-size: text + data, and data + bss (stack included)."""
    out = _run([_tool(gcc, "size"), "-B", str(elf)], "arm-none-eabi-size").stdout.splitlines()
    text, data, bss = (int(v) for v in out[1].split()[:3])
    return text + data, data + bss
