"""Target boards as data: one ``boards/<name>.toml`` per board, loaded into a frozen Board.

The board files live in ``boards/`` at the repository root, found relative to this file: mcuq is
installed editable (``pip install -e .``), so ``mcuq/`` is always the checkout's own folder.
Which port a user's board is plugged into is local state and never goes into these files.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcuq.errors import BoardError

BOARDS_DIR = Path(__file__).resolve().parent.parent / "boards"
DEFAULT_BOARD = "qemu-m7"
FPU_KINDS = ("none", "sp", "dp")
UART_DRIVERS = ("cmsdk", "stm32f4-usart", "stm32f7-usart")
FLASH_TOOLS = ("pyocd", "openocd", "st-flash")


@dataclass(frozen=True)
class Uart:
    """The UART the firmware talks on: peripheral name, register layout (driver) and base address."""

    peripheral: str
    driver: str
    base: int


@dataclass(frozen=True)
class Usb:
    """USB ids of the debug probe's virtual COM port, for finding a plugged-in real board."""

    vid: int
    pid: int


@dataclass(frozen=True)
class Board:
    """One target: compiler flags, memory map, clock, UART, and how to load firmware onto it."""

    name: str
    title: str
    core: str
    mcpu: str
    mfpu: str
    mfloat_abi: str
    fpu: str  # one of FPU_KINDS: no FPU, single precision, double precision
    dsp: bool
    mve: bool
    flash_origin: int
    flash_bytes: int
    ram_origin: int
    ram_bytes: int
    clock_hz: int  # CPU clock; on QEMU the machine's SYSCLK, which SysTick counts
    uart: Uart
    flash_methods: tuple[str, ...]  # preferred first; empty for emulated boards
    pyocd_target: str | None = None
    openocd_config: str | None = None
    qemu_machine: str | None = None  # None for real boards
    usb: Usb | None = None  # None for emulated boards
    default: bool = False

    @property
    def emulated(self) -> bool:
        return self.qemu_machine is not None

    @property
    def cflags(self) -> tuple[str, ...]:
        """The arm-none-eabi-gcc flags that select this core, its FPU and float ABI."""
        return (f"-mcpu={self.mcpu}", "-mthumb", f"-mfpu={self.mfpu}", f"-mfloat-abi={self.mfloat_abi}")


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "name": str, "title": str, "core": str, "mcpu": str, "mfpu": str, "mfloat_abi": str, "fpu": str,
    "dsp": bool, "mve": bool, "flash_origin": int, "flash_bytes": int, "ram_origin": int,
    "ram_bytes": int, "clock_hz": int, "uart": dict, "flash_methods": list,
}
_OPTIONAL: dict[str, type] = {
    "pyocd_target": str, "openocd_config": str, "qemu_machine": str, "usb": dict, "default": bool,
}
_UART = {"peripheral": str, "driver": str, "base": int}
_USB = {"vid": int, "pid": int}


def board_names(boards_dir: Path = BOARDS_DIR) -> list[str]:
    """Names of all boards, sorted."""
    return sorted(p.stem for p in boards_dir.glob("*.toml"))


def load_board(name: str, boards_dir: Path = BOARDS_DIR) -> Board:
    """Load and check ``boards/<name>.toml`` (BoardError on an unknown name or a malformed file)."""
    known = board_names(boards_dir)
    if name not in known:
        raise BoardError(f"unknown board '{name}'; known: {', '.join(known)}")
    path = boards_dir / f"{name}.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BoardError(f"{path}: not valid TOML ({e})") from None
    return _board(raw, name, path)


def all_boards(boards_dir: Path = BOARDS_DIR) -> list[Board]:
    """Every board in ``boards/``, sorted by name."""
    return [load_board(n, boards_dir) for n in board_names(boards_dir)]


def _fields(table: dict[str, Any], required: dict, optional: dict, path: Path, where: str) -> dict[str, Any]:
    """Check names and types of a TOML table's fields; unknown names are errors (they are typos)."""
    for key in table:
        if key not in required and key not in optional:
            raise BoardError(f"{path}: unknown field '{where}{key}'")
    for key in required:
        if key not in table:
            raise BoardError(f"{path}: missing field '{where}{key}'")
    for key, value in table.items():
        typ = required.get(key) or optional[key]
        # bool is a subclass of int in Python; a TOML true is never a valid address or size
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise BoardError(f"{path}: field '{where}{key}' must be {typ.__name__}, got {value!r}")
    return table


def _board(raw: dict[str, Any], name: str, path: Path) -> Board:
    f = dict(_fields(raw, _REQUIRED, _OPTIONAL, path, ""))

    def bad(field: str, why: str) -> BoardError:
        return BoardError(f"{path}: field '{field}' {why}")

    if f["name"] != name:
        raise bad("name", f"is '{f['name']}' but the file is {name}.toml")
    if f["fpu"] not in FPU_KINDS:
        raise bad("fpu", f"must be one of {', '.join(FPU_KINDS)}, got '{f['fpu']}'")
    for key in ("flash_bytes", "ram_bytes", "clock_hz"):
        if f[key] <= 0:
            raise bad(key, "must be positive")
    for key in ("flash_origin", "ram_origin"):
        if not 0 <= f[key] < 1 << 32 or f[key] % 4:
            raise bad(key, "must be a word-aligned 32-bit address")
    if f["flash_origin"] < f["ram_origin"] + f["ram_bytes"] and f["ram_origin"] < f["flash_origin"] + f["flash_bytes"]:
        raise bad("ram_origin", "puts RAM over flash")
    methods = f["flash_methods"]
    for m in methods:
        if m not in FLASH_TOOLS:
            raise bad("flash_methods", f"names '{m}'; known tools: {', '.join(FLASH_TOOLS)}")
    if "pyocd" in methods and "pyocd_target" not in f:
        raise bad("pyocd_target", "is needed when flash_methods names pyocd")
    if "openocd" in methods and "openocd_config" not in f:
        raise bad("openocd_config", "is needed when flash_methods names openocd")
    if ("qemu_machine" in f) == bool(methods):
        raise bad("flash_methods", "must be empty for a QEMU board (qemu_machine) and non-empty for a real one")
    uart = _fields(f["uart"], _UART, {}, path, "uart.")
    if uart["driver"] not in UART_DRIVERS:
        raise bad("uart.driver", f"must be one of {', '.join(UART_DRIVERS)}, got '{uart['driver']}'")
    f["uart"] = Uart(**uart)
    if "usb" in f:
        f["usb"] = Usb(**_fields(f["usb"], _USB, {}, path, "usb."))
    f["flash_methods"] = tuple(methods)
    return Board(**f)
