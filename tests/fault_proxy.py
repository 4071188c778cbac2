"""Test tooling for the serial fault matrix: a fault-injecting TCP proxy between pyserial
(socket://) and QEMU's serial socket, and the scripted cases (tests/test_fault_matrix.py runs
them in CI, bench/fault_matrix.py prints the table).

The proxy cuts each direction of the byte stream into frames (docs/protocol.md; the streams it
receives are clean) and damages the frames a `Rule` selects before passing them on. The cases
run real firmware in the real emulator: `mcuq flash` starts QEMU (with a monitor socket added,
so a case can reset the machine), verify talks to it through the proxy.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import struct
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator

from mcuq import flash
from mcuq.errors import McuqError
from mcuq.link import RESPONSE, SYNC, Kind
from mcuq.verify import verify

HEADER = 6  # sync, type, seq, length
CRC = 4


class Direction(Enum):
    TO_BOARD = "host->board"
    TO_HOST = "board->host"


class Fault(Enum):
    """What the proxy does to a selected frame."""

    GARBAGE = "garbage"  # 24 seeded random bytes, sync pairs among them, before the frame
    BAD_CRC = "bad CRC"  # one CRC byte flipped
    DROP_BYTE = "dropped byte"  # one payload or header byte left out
    DUP_BYTE = "duplicated byte"  # one byte sent twice
    LOSE = "lost frame"  # the frame is not passed on
    SILENCE = "silence"  # this frame and everything after it in this direction is not passed on
    RESET = "reset"  # QEMU's system_reset (monitor), then the frame is passed on
    KILL = "kill"  # half the frame is passed on, then QEMU is killed (SIGKILL)


@dataclass(frozen=True)
class Rule:
    """Apply ``fault`` to the ``nth`` frame going ``direction`` that is, or answers, a request of
    type ``kind`` (any frame: None); with ``every``, to every such frame from the nth on."""

    fault: Fault
    direction: Direction
    kind: Kind | None = None
    nth: int = 1
    every: bool = False

    def matches(self, frame_kind: int) -> bool:
        if self.kind is None:
            return True
        return frame_kind == self.kind or frame_kind == self.kind | RESPONSE


class Monitor:
    """QEMU's human monitor on a unix socket: one command at a time."""

    def __init__(self, path: Path):
        self.path = path

    def command(self, line: str, timeout: float = 5.0) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(self.path))
            _read_until(s, b"(qemu) ")
            s.sendall(line.encode() + b"\n")
            return _read_until(s, b"(qemu) ").decode(errors="replace")


def _read_until(s: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


class FaultProxy:
    """127.0.0.1:<port> <-> QEMU's serial port; one client, faults per ``rules``."""

    def __init__(self, upstream_port: int, rules: tuple[Rule, ...] = (), reset: Callable[[], None] | None = None,
                 kill: Callable[[], None] | None = None, seed: int = 0):
        self.upstream_port = upstream_port
        self.rules = rules
        self._reset, self._kill = reset, kill
        self._rng = random.Random(seed)
        self._seen: dict[tuple[int, Direction], int] = {}
        self._silent: set[Direction] = set()
        self.injected: list[tuple[Fault, Direction, int]] = []  # (fault, direction, frame type)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = [self._server]
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def close(self) -> None:
        for s in self._sockets:
            _close(s)

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _serve(self) -> None:
        try:
            client, _ = self._server.accept()
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5.0)
        except OSError:
            return
        for s in (client, upstream):
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sockets += [client, upstream]
        threading.Thread(target=self._pump, args=(client, upstream, Direction.TO_BOARD), daemon=True).start()
        self._pump(upstream, client, Direction.TO_HOST)

    def _pump(self, src: socket.socket, dst: socket.socket, direction: Direction) -> None:
        """Copy src to dst frame by frame; when either side ends, close both."""
        buf = bytearray()
        try:
            while True:
                chunk = src.recv(4096)
                if not chunk:
                    break
                buf += chunk
                while True:
                    frame, buf = _split(buf)
                    if frame is None:
                        break
                    if not self._forward(frame, dst, direction):
                        return
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)

    def _forward(self, frame: bytes, dst: socket.socket, direction: Direction) -> bool:
        """Send ``frame`` (damaged if a rule says so); False once the emulator is killed."""
        kind = frame[2] if frame[:2] == SYNC and len(frame) >= HEADER else -1
        with self._lock:
            if direction in self._silent:
                return True
            fault = self._fault_for(kind, direction)
            if fault is None:
                dst.sendall(frame)
                return True
            self.injected.append((fault, direction, kind))
            if fault is Fault.SILENCE:
                self._silent.add(direction)
                return True
            if fault is Fault.KILL:
                dst.sendall(frame[:len(frame) // 2])
                self._kill()
                return False
            if fault is Fault.RESET:  # before the frame: its answer can only come after the HELLO
                self._reset()
            dst.sendall(self._damage(frame, fault))
            return True

    def _fault_for(self, kind: int, direction: Direction) -> Fault | None:
        for i, rule in enumerate(self.rules):
            if rule.direction is direction and kind >= 0 and rule.matches(kind):
                n = self._seen[(i, direction)] = self._seen.get((i, direction), 0) + 1
                if n == rule.nth or (rule.every and n > rule.nth):
                    return rule.fault
        return None

    def _damage(self, frame: bytes, fault: Fault) -> bytes:
        body = HEADER + self._rng.randrange(max(len(frame) - HEADER - CRC, 1))  # a payload byte (or CRC)
        if fault is Fault.GARBAGE:
            noise = bytes(self._rng.randrange(256) for _ in range(24))
            return noise[:8] + SYNC + noise[8:16] + SYNC + noise[16:] + frame
        if fault is Fault.BAD_CRC:
            return frame[:-1] + bytes([frame[-1] ^ 0x5A])
        if fault is Fault.DROP_BYTE:
            return frame[:body] + frame[body + 1:]
        if fault is Fault.DUP_BYTE:
            return frame[:body + 1] + frame[body:]
        if fault is Fault.LOSE:
            return b""
        return frame  # RESET: the frame goes through unchanged


def _split(buf: bytearray) -> tuple[bytes | None, bytearray]:
    """(first frame or stray bytes before a sync, rest), or (None, buf) until a frame is whole."""
    at = buf.find(SYNC)
    if at > 0 or (at < 0 and len(buf) > 1):
        cut = at if at > 0 else len(buf) - 1
        return bytes(buf[:cut]), buf[cut:]
    if at < 0 or len(buf) < HEADER:
        return None, buf
    total = HEADER + struct.unpack_from("<H", buf, 4)[0] + CRC
    if len(buf) < total:
        return None, buf
    return bytes(buf[:total]), buf[total:]


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


# -- the emulator, with a monitor ------------------------------------------------------------


@dataclass
class Emulator:
    """QEMU started by `mcuq flash` for a pack, with its monitor; ``kill`` ends it the hard way."""

    pack: Path
    url: str
    monitor: Monitor
    pid: int = field(init=False)

    def __post_init__(self) -> None:
        self.pid = flash._read_state(self.pack / "build" / flash.STATE_FILE)["pid"]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def reset(self) -> None:
        self.monitor.command("system_reset")

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        while flash._alive(self.pid):
            time.sleep(0.01)


@contextmanager
def emulator(pack: Path) -> Iterator[Emulator]:
    """`mcuq flash` with a monitor socket added to QEMU's command line; stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="mcuqmon") as tmp:  # unix socket paths are short
        sock = Path(tmp) / "m"
        original = flash.qemu_command

        def with_monitor(board, elf, port):
            cmd = original(board, elf, port)
            at = cmd.index("-monitor")
            return cmd[:at + 1] + [f"unix:{sock},server=on,wait=off"] + cmd[at + 2:]

        flash.qemu_command = with_monitor
        try:
            url = flash.flash(pack)
        finally:
            flash.qemu_command = original
        try:
            yield Emulator(pack, url, Monitor(sock))
        finally:
            flash.stop(pack)


# -- the scripted cases ----------------------------------------------------------------------

TIMEOUT = 2.0  # each request's deadline in the matrix (the CLI's; loaded CI machines need it)
RUN_TIMEOUT = 3.0  # RUN's deadline (ad01_int8 runs in milliseconds)
COUNT = 3  # vectors per case
# the longest any case may take: a RUN lost for good costs two RUN deadlines and four write
# deadlines (verify writes the inputs again before each RUN retry), plus QEMU start-up
BOUND = 3 * RUN_TIMEOUT + 4 * TIMEOUT + 10.0


@dataclass(frozen=True)
class Case:
    """One row of the fault matrix: the faults, and "recovered" or the regex of the one error."""

    name: str
    rules: tuple[Rule, ...] = ()
    expect: str = "recovered"
    wrong_firmware: bool = False


UP, DOWN = Direction.TO_BOARD, Direction.TO_HOST
CASES = (
    Case("garbage to host", (Rule(Fault.GARBAGE, DOWN, Kind.READ_TENSOR),)),
    Case("garbage to board", (Rule(Fault.GARBAGE, UP, Kind.WRITE_TENSOR),)),
    Case("garbage before every frame", (Rule(Fault.GARBAGE, DOWN, every=True), Rule(Fault.GARBAGE, UP, every=True))),
    Case("CRC error to host", (Rule(Fault.BAD_CRC, DOWN, Kind.INFO),)),
    Case("CRC error to board", (Rule(Fault.BAD_CRC, UP, Kind.WRITE_TENSOR, 2),)),
    Case("CRC error on RUN response", (Rule(Fault.BAD_CRC, DOWN, Kind.RUN, 2),)),
    Case("dropped byte to host", (Rule(Fault.DROP_BYTE, DOWN, Kind.READ_PROFILE),)),
    Case("dropped byte to board", (Rule(Fault.DROP_BYTE, UP, Kind.WRITE_TENSOR),)),
    Case("dropped byte on RUN response", (Rule(Fault.DROP_BYTE, DOWN, Kind.RUN),)),
    Case("duplicated byte to host", (Rule(Fault.DUP_BYTE, DOWN, Kind.READ_TENSOR, 2),)),
    Case("duplicated byte to board", (Rule(Fault.DUP_BYTE, UP, Kind.READ_TENSOR),)),
    Case("duplicated byte in RUN request", (Rule(Fault.DUP_BYTE, UP, Kind.RUN, 3),)),
    Case("lost response", (Rule(Fault.LOSE, DOWN, Kind.WRITE_TENSOR, 2),)),
    Case("CRC error on every response", (Rule(Fault.BAD_CRC, DOWN, Kind.WRITE_TENSOR, every=True),),
         r"no valid response to WRITE_TENSOR .* after 4 tries .*4 corrupt frame\(s\)"),
    Case("silence (proxy stops forwarding)", (Rule(Fault.SILENCE, DOWN, Kind.READ_TENSOR, 2),),
         r"no valid response to READ_TENSOR .* after 4 tries .*\(silence\)"),
    Case("reset mid-run", (Rule(Fault.RESET, UP, Kind.RUN, 2),), r"board reset during RUN"),
    Case("wrong firmware", (), r"firmware runs model [0-9a-f]{16}, .* packs [0-9a-f]{16}: flash .* first",
         wrong_firmware=True),
    Case("emulator killed mid-frame to host", (Rule(Fault.KILL, DOWN, Kind.READ_TENSOR, 2),),
         r"device closed the link \(emulator died\?\) during READ_TENSOR"),
    Case("emulator killed mid-frame to board", (Rule(Fault.KILL, UP, Kind.WRITE_TENSOR, 2),),
         r"device closed the link \(emulator died\?\)"),
)


@dataclass(frozen=True)
class Outcome:
    """What one case did: "recovered" (bit-exact), "error" (one McuqError) or "hang"."""

    case: str
    outcome: str
    message: str
    seconds: float
    injected: int  # faults the proxy applied
    retries: int  # link retries (recovered cases)
    lost: int  # responses lost to timeouts or corruption (recovered cases)


def as_expected(case: Case, out: Outcome) -> bool:
    """Recovered where the case expects recovery; else one one-line error matching its regex."""
    if case.expect == "recovered":
        return out.outcome == "recovered"
    return out.outcome == "error" and "\n" not in out.message and re.search(case.expect, out.message) is not None


def run_case(case: Case, pack: Path, other: Path) -> Outcome:
    """Run ``case``: flash ``other`` for the wrong-firmware case, else ``pack``; verify ``pack``
    through the proxy; stop the emulator. A verify still running after BOUND is a hang."""
    target = other if case.wrong_firmware else pack
    start = time.monotonic()
    with emulator(target) as emu, FaultProxy(emu.port, case.rules, reset=emu.reset, kill=emu.kill) as proxy:
        done: list = []
        worker = threading.Thread(target=lambda: done.append(_verify(pack, proxy.url)), daemon=True)
        worker.start()
        worker.join(BOUND)
        if worker.is_alive():
            emu.kill()  # unblocks the worker
            return Outcome(case.name, "hang", f"no result within {BOUND:.0f} s", time.monotonic() - start,
                           len(proxy.injected), 0, 0)
        outcome, message, link = done[0]
        return Outcome(case.name, outcome, message, time.monotonic() - start, len(proxy.injected),
                       link.retries if link else 0, link.lost if link else 0)


def _verify(pack: Path, url: str) -> tuple[str, str, object]:
    try:
        result = verify(pack, url, count=COUNT, timeout=TIMEOUT, run_timeout=RUN_TIMEOUT)
    except McuqError as e:
        return "error", str(e), None
    except Exception as e:  # noqa: BLE001 - the matrix reports it as a failure, not a crash
        return "traceback", f"{type(e).__name__}: {e}", None
    if not result.ok:
        return "mismatch", result.verdict, result.link
    return "recovered", result.verdict, result.link
