"""Put built firmware where it runs: onto a real board (pyOCD, else OpenOCD or st-flash), or into
QEMU started in the background with the board's UART on a local TCP port.

QEMU gets ``-serial tcp:127.0.0.1:PORT,server=on,wait=on,nodelay=on``: it holds the guest until
the host connects, so the boot HELLO is never lost, and pyserial opens it as
``socket://127.0.0.1:PORT``. ``-icount shift=0`` makes SysTick an exact instruction counter.
Because QEMU waits for its client before it even loads the ELF, `flash` checks the ELF itself
and can only see QEMU die before it listens (unknown machine, bad option); a firmware that dies
later shows as a closed or silent link, with QEMU's output in the log.
The emulator's pid, port and ELF hash go to DIR/build/emulator.json (its output to
DIR/build/qemu.log), so verify finds it without --port and `stop` ends it. The state file is
written last: an error or Ctrl-C before that ends the QEMU just started, so an interrupted flash
leaves neither an emulator nor a state file behind (a successful one leaves QEMU running).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import serial.tools.list_ports

from mcuq import interrupts
from mcuq.boards import Board, load_board
from mcuq.build import BUILD_SUBDIR, read_build
from mcuq.errors import DeviceError

QEMU = "qemu-system-arm"
EM_ARM = 40  # ELF e_machine
STATE_FILE = "emulator.json"
LOG_FILE = "qemu.log"
START_TIMEOUT = 10.0  # seconds until QEMU listens on its port
STOP_TIMEOUT = 5.0
TOOL_TIMEOUT = 180.0  # one flashing run
_READY = "waiting for connection"
_PORT_BUSY = "Address already in use"
_children: dict[int, subprocess.Popen] = {}  # emulators this process started, reaped by stop()


def flash(pack_dir: str | Path, port: str | int | None = None) -> str:
    """Load DIR's firmware and return the pyserial URL of its UART.

    Emulated boards: (re)start QEMU; ``port`` is the TCP port to listen on (default: a free one).
    Real boards: ``port`` is the board's serial port (default: the one USB port of the board's
    probe); its USB serial number selects the probe when several are plugged in.
    """
    pack_dir = Path(pack_dir).resolve()
    built = read_build(pack_dir)
    board = load_board(built["board"])
    elf = pack_dir / BUILD_SUBDIR / "firmware.elf"
    if board.emulated:
        return _start_emulator(pack_dir, board, elf, port)
    device = str(port) if port else _find_serial(board)
    _program(board, pack_dir / BUILD_SUBDIR, _usb_serial_number(device))
    return device


def stop(pack_dir: str | Path) -> bool:
    """End the emulator started for DIR; False when none was running."""
    state_path = Path(pack_dir).resolve() / BUILD_SUBDIR / STATE_FILE
    state = _read_state(state_path)
    state_path.unlink(missing_ok=True)
    if state is None or not _is_our_qemu(state):
        return False
    pid = state["pid"]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            if not _alive(pid):
                return True
            time.sleep(0.02)
    raise DeviceError(f"the emulator (pid {pid}) does not end, even after SIGKILL")


def running_emulator(pack_dir: str | Path) -> str | None:
    """URL of the emulator running DIR's current firmware, or None (none, died, or stale ELF)."""
    pack_dir = Path(pack_dir).resolve()
    state = _read_state(pack_dir / BUILD_SUBDIR / STATE_FILE)
    elf = pack_dir / BUILD_SUBDIR / "firmware.elf"
    if state is None or not _is_our_qemu(state) or not elf.is_file() or state.get("elf_sha256") != _sha256(elf):
        return None
    return state["url"]


def qemu_command(board: Board, elf: Path, port: int) -> list[str]:
    """The QEMU command line for ``board`` running ``elf`` with its UART on 127.0.0.1:port."""
    return [QEMU, "-M", board.qemu_machine, "-kernel", str(elf), "-display", "none", "-monitor", "none",
            "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on", "-icount", "shift=0"]


def _start_emulator(pack_dir: Path, board: Board, elf: Path, port: str | int | None) -> str:
    if shutil.which(QEMU) is None:
        raise DeviceError(f"{QEMU} not found: install it with `sudo apt-get install --no-install-recommends "
                          f"qemu-system-arm` (scripts/setup.sh does)")
    head = elf.read_bytes()[:20]
    if head[:6] != b"\x7fELF\x01\x01" or int.from_bytes(head[18:20], "little") != EM_ARM:
        raise DeviceError(f"{elf}: not a 32-bit little-endian ARM ELF; rebuild it with mcuq build {pack_dir}")
    stop(pack_dir)
    build_dir = pack_dir / BUILD_SUBDIR
    state_path, tmp = build_dir / STATE_FILE, build_dir / f".{STATE_FILE}.tmp"
    log = build_dir / LOG_FILE
    proc = None
    try:
        for _ in range(3 if port is None else 1):  # a free port can be taken before QEMU binds it
            tcp = int(str(port).rsplit(":", 1)[-1]) if port is not None else _free_port()
            with open(log, "wb") as out, interrupts.deferred():  # a child started is a child recorded
                proc = subprocess.Popen(qemu_command(board, elf, tcp), stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            why = _wait_listening(proc, log)
            if why is None:
                break
            if _PORT_BUSY not in why:
                raise DeviceError(f"{QEMU} -M {board.qemu_machine} exited at start: {why} (log: {log})")
        else:
            raise DeviceError(f"{QEMU}: port {tcp} is in use: {why}")
        url = f"socket://127.0.0.1:{tcp}"
        state = {"pid": proc.pid, "port": tcp, "url": url, "board": board.name, "machine": board.qemu_machine,
                 "elf": str(elf), "elf_sha256": _sha256(elf), "log": str(log)}
        tmp.write_text(json.dumps(state, indent=1) + "\n")
        tmp.replace(state_path)
    except BaseException:  # an error or Ctrl-C before the state is in place: no half-started emulator
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        tmp.unlink(missing_ok=True)
        state_path.unlink(missing_ok=True)
        raise
    _children[proc.pid] = proc
    return url


def _wait_listening(proc: subprocess.Popen, log: Path) -> str | None:
    """None once QEMU waits for its client; else why it did not get there (its last log line)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if _READY in text:
            return None
        if proc.poll() is not None:
            lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith(f"{QEMU}:")] or lines
            return errors[-1] if errors else f"exit code {proc.returncode}, no output"
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    return f"not listening after {START_TIMEOUT:.0f} s"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_state(path: Path) -> dict | None:
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("pid"), int) else None


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; reaps it when it is our child that has exited."""
    proc = _children.get(pid)
    if proc is not None:
        if proc.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie has ended; its parent reaps it


def _is_our_qemu(state: dict) -> bool:
    """The state's pid is alive and is QEMU running that ELF (not a recycled pid)."""
    pid = state["pid"]
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and Path(cmdline[0].decode()).name == QEMU and state.get("elf", "").encode() in cmdline


def _find_serial(board: Board) -> str:
    """The serial device of the board's probe (USB vid/pid from the board file), if exactly one."""
    found = sorted(p.device for p in serial.tools.list_ports.comports()
                   if board.usb and (p.vid, p.pid) == (board.usb.vid, board.usb.pid))
    if len(found) == 1:
        return found[0]
    if not found:
        raise DeviceError(f"no {board.title} found: no USB serial port {board.usb.vid:04x}:{board.usb.pid:04x} "
                          "is plugged in; connect the board or give its port")
    raise DeviceError(f"several ports look like {board.name} ({', '.join(found)}): give the port")


def _usb_serial_number(device: str) -> str | None:
    """USB serial number of a serial port (an ST-LINK's is its probe id), None if unknown."""
    return next((p.serial_number for p in serial.tools.list_ports.comports() if p.device == device), None)


def _program(board: Board, build_dir: Path, probe: str | None) -> None:
    """Write the firmware with the first of the board's flash tools that is installed, then reset."""
    elf, hexfile, binfile = (build_dir / f"firmware.{ext}" for ext in ("elf", "hex", "bin"))
    for method in board.flash_methods:
        if method == "pyocd" and importlib.util.find_spec("pyocd") is not None:
            cmd = [sys.executable, "-m", "pyocd", "load", "-t", board.pyocd_target, *(["-u", probe] if probe else []),
                   "--format", "hex", str(hexfile)]
        elif method == "openocd" and shutil.which("openocd"):
            cmd = ["openocd", "-f", board.openocd_config, *(["-c", f"adapter serial {probe}"] if probe else []),
                   "-c", f"program {elf} verify reset exit"]
        elif method == "st-flash" and shutil.which("st-flash"):
            cmd = ["st-flash", *(["--serial", probe] if probe else []), "--reset", "write", str(binfile),
                   f"0x{board.flash_origin:08x}"]
        else:
            continue
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{method} did not finish flashing {board.name} within {TOOL_TIMEOUT:.0f} s") from None
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            raise DeviceError(f"{method} could not flash {board.name}: {lines[-1] if lines else proc.returncode}")
        return
    raise DeviceError(f"no flashing tool for {board.name} ({', '.join(board.flash_methods)}): "
                      "pip install pyocd, or apt-get install openocd or stlink-tools")
