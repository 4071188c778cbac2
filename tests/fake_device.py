"""A pure-Python stand-in for the mcuq firmware, speaking docs/protocol.md over a TCP socket.

Like the real firmware it works from the packed C tables (DIR/src/mcuq_model.c: tensor table
with arena offsets, node table by slot, I/O slots, model hash): tensors live in one emulated
arena, nodes run one by one with the host simulator's kernels (so RUN to node k and
READ_TENSOR of intermediates behave as on the chip, arena reuse included). Faults can be
injected into responses (garbage, bad CRC, dropped or duplicated bytes, silence, a hang, a
reset, a closed connection), one layer can be made wrong on purpose, and the model hash faked.
"""

from __future__ import annotations

import random
import re
import socket
import struct
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from mcuq import pipeline
from mcuq.graphfile import load_graph
from mcuq.ir import Op
from mcuq.link import DTYPES, MAX_PAYLOAD, PROTOCOL_VERSION, RESPONSE, SYNC, CounterKind, Kind, crc32, encode
from mcuq.pack import PAIRED_DTYPE, PRUNED_DTYPE
from mcuq.simulate.integer import KERNELS, prepare_graph
from mcuq.summary import node_macs

_CODES = {name: code for code, name in DTYPES.items()}
_TENSOR_ROW = re.compile(r"\{ (\w+), (-?\d+), (\d+), (\d+), (\d+), \{ ([-\d, ]+) \} \}, /\* (\d+): (.*) \*/")
_NODE_IO = re.compile(r"mcuq_n(\d+)_(in|out)\[\] = \{ ([-\d, ]+) \};")
_NODE_ROW = re.compile(r"\{ MCUQ_OP_(\w+), \d+, \d+, mcuq_n(\d+)_in,")
_IO_ROW = re.compile(r"\{ (\d+), ([-\d.e+]+)f, (-?\d+) \}, /\* (.*) \*/")


class Fault(Enum):
    """What goes wrong with one response."""

    GARBAGE = "garbage"  # random bytes (sync-like ones included) before the response
    BAD_CRC = "bad_crc"  # one CRC byte flipped
    DROP_BYTE = "drop_byte"  # one byte of the frame lost
    DUP_BYTE = "dup_byte"  # one byte of the frame sent twice
    SILENCE = "silence"  # the request is lost: no effect, no response
    HANG = "hang"  # no response to this or any later request
    RESET = "reset"  # the board resets: HELLO instead of the response, arena cleared
    CLOSE = "close"  # the connection closes (emulator died)


@dataclass(frozen=True)
class Inject:
    """Apply ``fault`` to the response of the ``nth`` request of type ``on`` (any type: None)."""

    fault: Fault
    on: Kind | None = None
    nth: int = 1


@dataclass(frozen=True)
class Slot:
    """One row of the packed tensor table."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    offset: int  # arena offset, -1 for a constant
    const: bytes | None


class FakeFirmware:
    """The firmware's request handling over a pack DIR, independent of any transport."""

    def __init__(self, pack_dir: str | Path, wrong_node: int | None = None, model_sha256: str | None = None,
                 counter_kind: CounterKind = CounterKind.INSTRUCTIONS, counter_scale: int = 40,
                 board: str = "fake", firmware: str = "fake-1"):
        pack_dir = Path(pack_dir)
        self.graph = load_graph(pack_dir / "graph")
        self.params = prepare_graph(self.graph)
        self.wrong_node = wrong_node
        self.counter_kind, self.counter_scale = counter_kind, counter_scale
        self.board, self.firmware = board, firmware
        header = (pack_dir / "src" / "mcuq_model.h").read_text()
        source = (pack_dir / "src" / "mcuq_model.c").read_text()
        self.sha256 = model_sha256 or re.search(r'MCUQ_MODEL_SHA256 "(\w+)"', header)[1]
        self.arena_bytes = int(re.search(r"MCUQ_ARENA_BYTES (\d+)", header)[1])
        self.slots = [self._slot(m) for m in _TENSOR_ROW.finditer(source)]
        io = {(int(n), kind): [int(v) for v in vals.split(",")] for n, kind, vals in _NODE_IO.findall(source)}
        self.nodes = [(Op[op], io[int(n), "in"], io[int(n), "out"]) for op, n in _NODE_ROW.findall(source)]
        self.inputs = self._io(source, "mcuq_inputs")
        self.run_inputs: list[tuple[bytes, ...]] = []  # input bytes at the start of each RUN
        self.outputs = self._io(source, "mcuq_outputs")
        self.boot()

    def _slot(self, m: re.Match) -> Slot:
        data, offset, nbytes, dtype, rank, shape, _, name = m.groups()
        const = None
        if data != "0":
            t = self.graph.tensor(int(data.removeprefix("mcuq_t")))
            const = np.ascontiguousarray(t.data).tobytes()
        dims = tuple(int(d) for d in shape.split(","))[:int(rank)]
        kind = "int8" if int(dtype) in (PAIRED_DTYPE, PRUNED_DTYPE) else DTYPES[int(dtype)]  # the graph's values stand in
        return Slot(name, kind, dims, int(nbytes), int(offset), const)

    @staticmethod
    def _io(source: str, table: str) -> list[tuple[int, float, int]]:
        body = source.split(f"{table}[", 1)[1].split("};", 1)[0]
        return [(int(s), float(scale), int(zp)) for s, scale, zp, _ in _IO_ROW.findall(body)]

    def boot(self) -> None:
        """Power-on state: RAM cleared, no profile."""
        self.arena = bytearray(self.arena_bytes)
        self.profile = [0] * len(self.nodes)

    def hello(self) -> bytes:
        return encode(Kind.HELLO, 0, b"mcuq" + struct.pack("<H", PROTOCOL_VERSION))

    # -- tensors in the arena ---------------------------------------------------------------

    def _bytes(self, slot: int) -> bytes:
        s = self.slots[slot]
        return s.const if s.const is not None else bytes(self.arena[s.offset:s.offset + s.nbytes])

    def _array(self, slot: int) -> np.ndarray:
        s = self.slots[slot]
        return np.frombuffer(self._bytes(slot), s.dtype).reshape(s.shape)

    def _store(self, slot: int, value: np.ndarray) -> None:
        s = self.slots[slot]
        data = np.ascontiguousarray(value, s.dtype).tobytes()
        assert len(data) == s.nbytes, (s, len(data))
        self.arena[s.offset:s.offset + s.nbytes] = data

    # -- requests ---------------------------------------------------------------------------

    def handle(self, kind: int, payload: bytes) -> tuple[int, bytes]:
        """Response type and payload for one request."""
        try:
            handler = {Kind.INFO: self._info, Kind.WRITE_TENSOR: self._write, Kind.RUN: self._run,
                       Kind.READ_TENSOR: self._read, Kind.READ_PROFILE: self._profile,
                       Kind.RESET: lambda p: b""}[Kind(kind)]
        except (KeyError, ValueError):
            return Kind.ERROR, bytes([1]) + b"unknown type"
        try:
            return kind | RESPONSE, handler(payload)
        except (struct.error, IndexError):
            return Kind.ERROR, bytes([1]) + b"bad length"
        except _BadArgument as e:
            return Kind.ERROR, bytes([2]) + str(e).encode()

    def _info(self, payload: bytes) -> bytes:
        out = struct.pack("<HBHIHBB32s16s16s", PROTOCOL_VERSION, self.counter_kind, self.counter_scale,
                          self.arena_bytes, len(self.nodes), len(self.inputs), len(self.outputs),
                          bytes.fromhex(self.sha256), self.board.encode(), self.firmware.encode())
        for slot, scale, zp in self.inputs + self.outputs:
            s = self.slots[slot]
            shape = list(s.shape) + [1] * (4 - len(s.shape))
            out += struct.pack("<HBB4ifi", slot, _CODES[s.dtype], len(s.shape), *shape, scale, zp)
        return out

    def _write(self, payload: bytes) -> bytes:
        slot, offset = struct.unpack_from("<HI", payload)
        data = payload[6:]
        s = self._checked(slot, offset, len(data))
        if s.const is not None:
            raise _BadArgument(f"slot {slot} is constant")
        self.arena[s.offset + offset:s.offset + offset + len(data)] = data
        return b""

    def _read(self, payload: bytes) -> bytes:
        slot, offset, length = struct.unpack("<HIH", payload)
        self._checked(slot, offset, length)
        return self._bytes(slot)[offset:offset + length]

    def _checked(self, slot: int, offset: int, length: int) -> Slot:
        if slot >= len(self.slots):
            raise _BadArgument(f"no slot {slot}")
        if offset + length > self.slots[slot].nbytes:
            raise _BadArgument(f"slot {slot} holds {self.slots[slot].nbytes} bytes")
        return self.slots[slot]

    def _run(self, payload: bytes) -> bytes:
        (last,) = struct.unpack("<h", payload)
        if last >= len(self.nodes) or last < -1:
            raise _BadArgument(f"no node {last}")
        stop = len(self.nodes) if last < 0 else last + 1
        self.run_inputs.append(tuple(self._bytes(slot) for slot, _, _ in self.inputs))
        self.profile = [0] * len(self.nodes)
        for k, (op, ins, outs) in enumerate(self.nodes[:stop]):
            args = [None if i < 0 else self._array(i) for i in ins]
            value = KERNELS[op][1](self.params[k], args)
            if k == self.wrong_node:
                info = np.iinfo(value.dtype)
                value = np.where(value < info.max, value + 1, value - 1).astype(value.dtype)
            self._store(outs[0], value)
            self.profile[k] = node_macs(self.graph, self.graph.nodes[k]) // 8 + 5
        return struct.pack("<bHQ", 0, stop, sum(self.profile))

    def _profile(self, payload: bytes) -> bytes:
        first, count = struct.unpack("<HH", payload)
        if first + count > len(self.nodes) or 4 * count > MAX_PAYLOAD:
            raise _BadArgument(f"nodes {first}+{count} out of range")
        return struct.pack(f"<{count}I", *self.profile[first:first + count])


class _BadArgument(Exception):
    pass


class FakeDevice:
    """FakeFirmware behind a TCP server on 127.0.0.1; ``url`` is what pyserial opens.

    Like QEMU with ``wait=on`` the board boots (sends HELLO) when the host connects. Faults in
    ``faults`` hit responses as they come; ``requests`` logs the request types received.
    """

    def __init__(self, pack_dir: str | Path, faults: tuple[Inject, ...] = (), seed: int = 0, **firmware):
        self.firmware = FakeFirmware(pack_dir, **firmware)
        self.faults = list(faults)
        self.requests: list[int] = []
        self._rng = random.Random(seed)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.05)
        self.url = f"socket://127.0.0.1:{self._server.getsockname()[1]}"
        self._stop = threading.Event()
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def __enter__(self) -> "FakeDevice":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except socket.timeout:
                continue
            conn.settimeout(0.05)
            with conn:
                self._conn = conn
                self.firmware.boot()
                conn.sendall(self.firmware.hello())
                self._session(conn)
                self._conn = None

    def _session(self, conn: socket.socket) -> None:
        buf, hung = bytearray(), False
        while not self._stop.is_set():
            try:
                data = conn.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            buf += data
            while (frame := _take_frame(buf)) is not None:
                kind, seq, payload = frame
                self.requests.append(kind)
                fault = self._fault_for(kind)
                if hung or fault in (Fault.SILENCE, Fault.HANG):
                    hung = hung or fault is Fault.HANG
                    continue
                if fault is Fault.CLOSE:
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                if fault is Fault.RESET:
                    self.firmware.boot()
                    conn.sendall(self.firmware.hello())
                    continue
                rtype, rpayload = self.firmware.handle(kind, payload)
                conn.sendall(self._damage(encode(rtype, seq, rpayload), fault))
                if kind == Kind.RESET:
                    self.firmware.boot()
                    conn.sendall(self.firmware.hello())

    def _fault_for(self, kind: int) -> Fault | None:
        for inj in self.faults:
            if inj.on is None or inj.on == kind:
                seen = sum(1 for k in self.requests if inj.on is None or k == inj.on)
                if seen == inj.nth:
                    return inj.fault
        return None

    def _damage(self, frame: bytes, fault: Fault | None) -> bytes:
        rng = self._rng
        if fault is Fault.GARBAGE:
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(5, 40)))
            return junk + SYNC + b"\x83\x07" + junk[:3] + SYNC[:1] + frame
        if fault is Fault.BAD_CRC:
            return frame[:-1] + bytes([frame[-1] ^ 0x5A])
        k = rng.randrange(2, len(frame))
        if fault is Fault.DROP_BYTE:
            return frame[:k] + frame[k + 1:]
        if fault is Fault.DUP_BYTE:
            return frame[:k + 1] + frame[k:]
        return frame


def _take_frame(buf: bytearray) -> tuple[int, int, bytes] | None:
    """Remove and return the next valid frame of ``buf`` (hunting for sync, dropping bad ones)."""
    while True:
        start = buf.find(SYNC)
        if start < 0:
            del buf[:-1]
            return None
        del buf[:start]
        if len(buf) < 6:
            return None
        kind, seq, length = struct.unpack_from("<BBH", buf, 2)
        if length > MAX_PAYLOAD:
            del buf[:2]
            continue
        if len(buf) < 10 + length:
            return None
        body = bytes(buf[2:6 + length])
        (crc,) = struct.unpack_from("<I", buf, 6 + length)
        if crc != crc32(body):
            del buf[:2]
            continue
        del buf[:10 + length]
        return kind, seq, body[4:]


def make_pack(model: Path, out_dir: Path, board: str = "qemu-m7") -> Path:
    """Pack an integer .tflite for ``board`` into ``out_dir`` (mcuq pack)."""
    pipeline.pack(model, board, out_dir, pipeline.QuantOptions(), lambda msg: None)
    return out_dir
