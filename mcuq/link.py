"""The host side of the serial protocol (docs/protocol.md) over any pyserial URL.

A ``Device`` sends one request frame at a time and waits, with a deadline, for the response
carrying the same sequence number. Garbage before a frame is skipped by hunting for the sync
pair. A frame with a bad CRC or length, or one that stops arriving once begun, is dropped and
the hunt goes on from the byte after its sync (a response behind garbage that looked like a
frame is still found); when no good frame follows at once, the request is sent again with a new
sequence number, so a late answer to the old one is recognised and ignored. Before sending again
a request that got no answer at all, the host sends MAX_FRAME zero bytes: a corrupted length may
have left the board waiting for a frame that never ends, and the zeros end it. A HELLO in the
middle of a session means the board reset, and a closed connection means the emulator (or USB
link) went away: both end in one clear ``DeviceError``. ``Device.stats`` counts what went wrong.
"""

from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import serial
import serial.tools.list_ports

from mcuq.errors import DeviceError

SYNC = b"\xa5\x5a"
MAX_PAYLOAD = 1024
PROTOCOL_VERSION = 1
ST_LINK_VID = 0x0483
WRITE_HEADER = 6  # slot u16, offset u32 before the data of a WRITE_TENSOR
MAX_FRAME = 6 + MAX_PAYLOAD + 4  # sync, type, seq, length, payload, CRC
PROFILE_CHUNK = MAX_PAYLOAD // 4
POLL = 0.05  # seconds one port read may block; deadlines are checked between reads
RESYNC = 0.25  # after a corrupt frame, how long a good one may take to begin before the request is resent
DTYPES = {0: "int8", 1: "int16", 2: "int32", 3: "int64", 4: "float32", 5: "uint8"}


class Kind(IntEnum):
    """Frame types; a response is ``request | RESPONSE``, an error response is ``ERROR``."""

    INFO = 0x01
    WRITE_TENSOR = 0x02
    RUN = 0x03
    READ_TENSOR = 0x04
    READ_PROFILE = 0x05
    RESET = 0x06
    HELLO = 0x40
    ERROR = 0xFF


RESPONSE = 0x80
ERROR_CODES = {1: "bad request", 2: "bad argument", 3: "kernel failure"}


class CounterKind(IntEnum):
    """What the firmware's per-node counter counts."""

    CYCLES = 0
    INSTRUCTIONS = 1

    @property
    def label(self) -> str:
        return self.name.lower()


class LinkError(DeviceError):
    """No valid response within the retries: silence or a corrupt link (transient, worth a retry)."""


@dataclass
class LinkStats:
    """What a Device's link did: requests sent (retries included), requests sent again, requests
    given up (LinkError), frames dropped as corrupt (bad CRC or length, cut short), late answers
    ignored."""

    requests: int = 0
    retries: int = 0
    failed: int = 0
    corrupt: int = 0
    stale: int = 0

    @property
    def lost(self) -> int:
        """Responses that never arrived intact: each cost a retry or ended its request."""
        return self.retries + self.failed


@dataclass(frozen=True)
class Frame:
    kind: int
    seq: int
    payload: bytes


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def encode(kind: int, seq: int, payload: bytes = b"") -> bytes:
    """One frame: sync, type, seq, length, payload, CRC-32 of everything after the sync."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD {MAX_PAYLOAD}")
    body = struct.pack("<BBH", kind, seq & 0xFF, len(payload)) + payload
    return SYNC + body + struct.pack("<I", crc32(body))


@dataclass(frozen=True)
class IoInfo:
    """One graph input or output as the firmware describes it."""

    slot: int
    dtype: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class DeviceInfo:
    """The INFO response: what the firmware runs and how it counts."""

    protocol_version: int
    counter_kind: CounterKind
    counter_scale: int
    arena_bytes: int
    num_nodes: int
    model_sha256: str
    board_name: str
    firmware_version: str
    inputs: tuple[IoInfo, ...]
    outputs: tuple[IoInfo, ...]


@dataclass(frozen=True)
class RunResult:
    """The RUN response; ``total`` is in counter ticks (multiply by counter_scale)."""

    status: int
    nodes_run: int
    total: int


_INFO = struct.Struct("<HBHIHBB32s16s16s")
_IO = struct.Struct("<HBB4ifi")


def parse_info(payload: bytes) -> DeviceInfo:
    """Decode an INFO payload; DeviceError when it is short or malformed."""
    try:
        (version, kind, scale, arena, nodes, n_in, n_out, sha, board, fw) = _INFO.unpack_from(payload)
        ios = []
        for k in range(n_in + n_out):
            slot, dtype, rank, *rest = _IO.unpack_from(payload, _INFO.size + k * _IO.size)
            shape, q_scale, zp = rest[:4], rest[4], rest[5]
            if dtype not in DTYPES or not 0 <= rank <= 4:
                raise ValueError(f"I/O {k}: dtype code {dtype}, rank {rank}")
            ios.append(IoInfo(slot, DTYPES[dtype], tuple(shape[:rank]), q_scale, zp))
        counter = CounterKind(kind)
    except (struct.error, ValueError) as e:
        raise DeviceError(f"malformed INFO response ({len(payload)} bytes): {e}") from None
    return DeviceInfo(version, counter, scale, arena, nodes, sha.hex(), _cstr(board), _cstr(fw),
                      tuple(ios[:n_in]), tuple(ios[n_in:]))


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def find_stlink_port() -> str:
    """The device path of the one ST-LINK virtual COM port plugged in (USB vendor 0x0483)."""
    found = sorted(p.device for p in serial.tools.list_ports.comports() if p.vid == ST_LINK_VID)
    if not found:
        raise DeviceError("no board found: no ST-LINK serial port (USB vendor 0x0483) is plugged in, "
                          "and no emulator is running (mcuq flash DIR starts one); give --port")
    if len(found) > 1:
        raise DeviceError(f"several ST-LINK serial ports ({', '.join(found)}): choose one with --port")
    return found[0]


class Device:
    """A board (or emulator) speaking the mcuq protocol; every read is bounded by a deadline."""

    def __init__(self, port: serial.SerialBase, name: str, timeout: float = 2.0,
                 run_timeout: float = 60.0, retries: int = 3):
        self._port = port
        self.name = name
        self.timeout = timeout
        self.run_timeout = run_timeout
        self.retries = retries
        self._seq = 0
        self._rx = bytearray()  # received bytes not yet consumed (pushed back after a corrupt frame)
        self.stats = LinkStats()
        self._in_session = False  # a HELLO before the first response is the boot greeting
        port.timeout = POLL

    @classmethod
    def open(cls, port: str, timeout: float = 2.0, run_timeout: float = 60.0, retries: int = 3) -> "Device":
        """Open a pyserial URL or device path (/dev/ttyACM0, socket://127.0.0.1:PORT, loop://)."""
        try:
            ser = serial.serial_for_url(port, baudrate=115200, timeout=POLL, write_timeout=timeout, exclusive=True)
        except (serial.SerialException, ValueError, OSError) as e:
            raise DeviceError(f"cannot open {port}: {_why_not_open(e)}") from None
        return cls(ser, port, timeout, run_timeout, retries)

    def close(self) -> None:
        self._port.close()

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------------

    def wait_boot(self, timeout: float | None = None) -> int:
        """Wait for the HELLO a board sends after boot or reset; its protocol version."""
        limit = self.timeout if timeout is None else timeout
        version = self._await_hello(time.monotonic() + limit, "boot")
        if version is None:
            raise DeviceError(f"{self.name}: no HELLO from the board within {limit:.1f} s "
                              "(not running mcuq firmware, or it hangs at boot)")
        return version

    def hello(self, boot_timeout: float = 1.0) -> DeviceInfo:
        """Handshake: take the boot HELLO if one comes within ``boot_timeout`` (a board that
        booted before the port was opened greeted nobody), then INFO."""
        self._await_hello(time.monotonic() + boot_timeout, "boot")
        return self.info()

    def info(self) -> DeviceInfo:
        """INFO: protocol version, counter kind, model hash, board, I/O descriptors."""
        info = parse_info(self._request(Kind.INFO, b"", "INFO"))
        if info.protocol_version != PROTOCOL_VERSION:
            raise DeviceError(f"firmware speaks protocol version {info.protocol_version}, this host "
                              f"speaks {PROTOCOL_VERSION}: update mcuq or rebuild the firmware")
        return info

    def write_tensor(self, slot: int, data: bytes) -> None:
        """Write ``data`` into tensor ``slot`` from offset 0, in frames of at most MAX_PAYLOAD."""
        step = MAX_PAYLOAD - WRITE_HEADER
        for off in range(0, max(len(data), 1), step):
            chunk = data[off:off + step]
            self._request(Kind.WRITE_TENSOR, struct.pack("<HI", slot, off) + chunk,
                          f"WRITE_TENSOR slot {slot} offset {off}")

    def run(self, last_node: int = -1) -> RunResult:
        """Run nodes 0..last_node (-1: all). Sent once, never retried: a run may overwrite its
        inputs in the arena, so the caller retries by writing the inputs again (LinkError)."""
        what = "RUN" if last_node < 0 else f"RUN to node {last_node}"
        payload = self._request(Kind.RUN, struct.pack("<h", last_node), what,
                                timeout=self.run_timeout, retries=0)
        if len(payload) != 11:
            raise DeviceError(f"malformed {what} response ({len(payload)} bytes, expected 11)")
        status, nodes_run, total = struct.unpack("<bHQ", payload)
        if status != 0:
            raise DeviceError(f"{what} failed with status {status} after {nodes_run} node(s)")
        return RunResult(status, nodes_run, total)

    def read_tensor(self, slot: int, nbytes: int) -> bytes:
        """Read ``nbytes`` of tensor ``slot`` from offset 0, in chunks of at most MAX_PAYLOAD."""
        out = bytearray()
        while len(out) < nbytes:
            n = min(MAX_PAYLOAD, nbytes - len(out))
            what = f"READ_TENSOR slot {slot} offset {len(out)}"
            data = self._request(Kind.READ_TENSOR, struct.pack("<HIH", slot, len(out), n), what)
            if len(data) != n:
                raise DeviceError(f"{what}: got {len(data)} bytes, asked for {n}")
            out += data
        return bytes(out)

    def read_profile(self, n_nodes: int) -> list[int]:
        """Per-node counter ticks of the last RUN, nodes 0..n_nodes-1."""
        counts: list[int] = []
        for first in range(0, n_nodes, PROFILE_CHUNK):
            n = min(PROFILE_CHUNK, n_nodes - first)
            what = f"READ_PROFILE nodes {first}..{first + n - 1}"
            data = self._request(Kind.READ_PROFILE, struct.pack("<HH", first, n), what)
            if len(data) != 4 * n:
                raise DeviceError(f"{what}: got {len(data)} bytes, expected {4 * n}")
            counts.extend(struct.unpack(f"<{n}I", data))
        return counts

    def reset(self) -> int:
        """RESET, then wait for the board's HELLO; its protocol version."""
        self._send(Kind.RESET, b"")
        self._in_session = False
        version = self._await_hello(time.monotonic() + self.timeout, "RESET")
        if version is None:
            raise DeviceError(f"{self.name}: no HELLO within {self.timeout:.1f} s after RESET")
        return version

    # -- framing --------------------------------------------------------------------------

    def _request(self, kind: Kind, payload: bytes, what: str, timeout: float | None = None,
                 retries: int | None = None) -> bytes:
        """Send a request and return the payload of its response, retrying dropped frames."""
        limit = self.timeout if timeout is None else timeout
        tries = 1 + (self.retries if retries is None else retries)
        corrupt = 0
        silent = False  # the last try heard nothing: the board may be stuck inside a frame
        for attempt in range(tries):
            self.stats.retries += attempt > 0
            seq = self._send(kind, payload, flush=silent)
            deadline = time.monotonic() + limit
            silent = True
            while True:
                frame = self._next_frame(deadline, what)
                if frame is None:
                    break  # timed out: send again
                silent = False
                if frame is _BAD:
                    corrupt += 1
                    self.stats.corrupt += 1
                    deadline = min(deadline, time.monotonic() + RESYNC)  # a good frame behind comes at once
                    continue
                if frame.kind == Kind.HELLO:
                    if self._in_session:
                        raise DeviceError(f"{self.name}: board reset during {what}")
                    continue
                if frame.seq != seq:
                    self.stats.stale += 1
                    continue  # late answer to an earlier try
                self._in_session = True
                if frame.kind == Kind.ERROR:
                    raise DeviceError(f"{self.name}: device refused {what}: {_error_text(frame.payload)}")
                if frame.kind != kind | RESPONSE:
                    raise DeviceError(f"{self.name}: answer to {what} has type 0x{frame.kind:02x}, "
                                      f"expected 0x{kind | RESPONSE:02x}")
                return frame.payload
        self.stats.failed += 1
        why = f"{corrupt} corrupt frame(s) (bad CRC or cut short)" if corrupt else "silence"
        raise LinkError(f"{self.name}: no valid response to {what} after {tries} tr{'y' if tries == 1 else 'ies'} "
                        f"of {limit:.1f} s ({why}); is the board running mcuq firmware?")

    def _send(self, kind: Kind, payload: bytes, flush: bool = False) -> int:
        """Send a request with the next sequence number; ``flush`` first ends any frame the board
        may still be assembling (zeros are never a sync byte)."""
        self._seq = (self._seq + 1) & 0xFF
        self.stats.requests += 1
        try:
            self._port.write(bytes(MAX_FRAME if flush else 0) + encode(kind, self._seq, payload))
            self._port.flush()
        except serial.SerialTimeoutException:
            raise LinkError(f"{self.name}: write of {kind.name} timed out (device not reading)") from None
        except (serial.SerialException, OSError):
            raise DeviceError(f"{self.name}: device closed the link (emulator died?)") from None
        return self._seq

    def _read(self, n: int, deadline: float, what: str) -> bytes | None:
        """Exactly ``n`` bytes, or None when the deadline passes first (what came stays queued)."""
        while len(self._rx) < n:
            if time.monotonic() > deadline:
                return None
            try:
                self._rx += self._port.read(n - len(self._rx))
            except (serial.SerialException, OSError):
                raise DeviceError(f"{self.name}: device closed the link (emulator died?) during {what}") from None
        out = bytes(self._rx[:n])
        del self._rx[:n]
        return out

    def _next_frame(self, deadline: float, what: str) -> "Frame | _Bad | None":
        """The next frame after hunting for sync; None when the deadline passes before one begins,
        _BAD for a bad CRC or length or a frame not complete within ``timeout`` of its sync (a
        lost byte must not hold a RUN for its whole run_timeout). After _BAD the bytes behind the
        bad frame's sync are read again."""
        prev = 0
        while True:
            b = self._read(1, deadline, what)
            if b is None:
                return None
            if prev == SYNC[0] and b[0] == SYNC[1]:
                break
            prev = b[0]
        deadline = time.monotonic() + self.timeout
        head = self._read(4, deadline, what)
        if head is None:
            return _BAD
        kind, seq, length = struct.unpack("<BBH", head)
        rest = self._read(length + 4, deadline, what) if length <= MAX_PAYLOAD else None
        if rest is None or struct.unpack("<I", rest[length:])[0] != crc32(head + rest[:length]):
            self._rx[:0] = head + (rest or b"")
            return _BAD
        return Frame(kind, seq, rest[:length])

    def _await_hello(self, deadline: float, what: str) -> int | None:
        """Skip frames until a HELLO (its protocol version) or the deadline (None)."""
        while True:
            frame = self._next_frame(deadline, what)
            if frame is None:
                return None
            if frame is not _BAD and frame.kind == Kind.HELLO:
                return self._hello_version(frame)

    def _hello_version(self, frame: Frame) -> int:
        if len(frame.payload) != 6 or frame.payload[:4] != b"mcuq":
            raise DeviceError(f"{self.name}: malformed HELLO {frame.payload!r}")
        (version,) = struct.unpack("<H", frame.payload[4:])
        if version != PROTOCOL_VERSION:
            raise DeviceError(f"firmware speaks protocol version {version}, this host speaks "
                              f"{PROTOCOL_VERSION}: update mcuq or rebuild the firmware")
        return version


class _Bad:
    """A dropped frame (bad CRC or length)."""


_BAD = _Bad()


def _error_text(payload: bytes) -> str:
    if not payload:
        return "error response without a code"
    code = payload[0]
    text = f"{ERROR_CODES.get(code, f'error {code}')}"
    if code == 3 and len(payload) >= 4:
        node, status = struct.unpack_from("<Hb", payload, 1)
        reason = payload[4:].decode("ascii", "replace")
        return f"{text}: node {node} returned status {status}" + (f" ({reason})" if reason else "")
    reason = payload[1:].decode("ascii", "replace")
    return f"{text} ({reason})" if reason else text


def _why_not_open(e: Exception) -> str:
    text = str(e)
    if "refused" in text.lower():
        return "connection refused (is the emulator running? mcuq flash DIR starts it)"
    if "No such file" in text or "Errno 2" in text:
        return "no such port (is the board plugged in?)"
    if "exclusively lock" in text:
        return "in use by another program (a serial terminal?)"
    if "Permission denied" in text:
        return "permission denied (add yourself to the dialout group)"
    return text
