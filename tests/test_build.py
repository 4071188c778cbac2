"""Firmware builds for every board within its limits, boots on every QEMU board and answers the
protocol (docs/protocol.md) with the packed model's hash, arena, outputs and counts; a model too
big for the board fails with one line; the emulator's life is managed and its death reported."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mcuq import build as build_mod
from mcuq import flash as flash_mod
from mcuq import pipeline
from mcuq.boards import load_board
from mcuq.build import build
from mcuq.cli import main
from mcuq.errors import BoardFitError, DeviceError
from mcuq.flash import flash, running_emulator, stop
from mcuq.graphfile import load_graph
from mcuq.ir import Graph, Node, Op, Tensor
from mcuq.simulate import run_integer
from mcuq.writer import write_model
from conftest import model_path

EMULATED = ["qemu-m7", "qemu-m4", "qemu-m55", "qemu-stm32f4"]
REAL = ["stm32f7", "stm32f746-disco"]
needs_gcc = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None,
                               reason="arm-none-eabi-gcc is not installed (scripts/setup.sh installs it)")
needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-arm") is None,
                                reason="qemu-system-arm is not installed (scripts/setup.sh installs it)")
pytestmark = needs_gcc

INFO, WRITE, RUN, READ, PROFILE, RESET, HELLO, ERROR = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x40, 0xFF
DTYPES = {0: np.int8, 1: np.int16, 2: np.int32, 4: np.float32}


def small_cnn(seed: int, units_in: int = 64) -> Graph:
    """A float conv -> reshape -> fully connected -> softmax net with seeded weights."""
    rng = np.random.default_rng(seed)
    w = lambda *shape: (rng.standard_normal(shape) * 0.3).astype(np.float32)
    side = int(np.sqrt(units_in // 4)) * 2
    t = [
        Tensor(0, "input", (1, side, side, 1), "float32"),
        Tensor(1, "conv/filter", (4, 3, 3, 1), "float32", data=w(4, 3, 3, 1)),
        Tensor(2, "conv/bias", (4,), "float32", data=w(4)),
        Tensor(3, "conv", (1, side // 2, side // 2, 4), "float32"),
        Tensor(4, "flatten/shape", (2,), "int32", data=np.array([1, units_in], np.int32)),
        Tensor(5, "flatten", (1, units_in), "float32"),
        Tensor(6, "dense/weights", (10, units_in), "float32", data=w(10, units_in)),
        Tensor(7, "dense/bias", (10,), "float32", data=w(10)),
        Tensor(8, "logits", (1, 10), "float32"),
        Tensor(9, "probabilities", (1, 10), "float32"),
    ]
    nodes = [
        Node(0, Op.CONV_2D, (0, 1, 2), (3,), {"padding": "SAME", "stride_h": 2, "stride_w": 2,
                                              "dilation_h": 1, "dilation_w": 1, "activation": "RELU"}),
        Node(1, Op.RESHAPE, (3, 4), (5,), {"new_shape": (1, units_in)}),
        Node(2, Op.FULLY_CONNECTED, (5, 6, 7), (8,),
             {"activation": "NONE", "keep_num_dims": False, "weights_format": "DEFAULT"}),
        Node(3, Op.SOFTMAX, (8,), (9,), {"beta": 1.0}),
    ]
    return Graph(tuple(t), tuple(nodes), (0,), (9,), "small_cnn")


def pack_model(graph: Graph, root: Path, name: str) -> Path:
    model = root / f"{name}.tflite"
    model.write_bytes(write_model(graph))
    return pipeline.pack(model, "qemu-m7", root / name, pipeline.QuantOptions(), lambda msg: None).out_dir


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    return pack_model(small_cnn(0), tmp_path_factory.mktemp("packs"), "small")


def copy_pack(packed: Path, where: Path) -> Path:
    shutil.copytree(packed, where, ignore=shutil.ignore_patterns("build"))
    return where


# -- a tiny protocol client --------------------------------------------------------------------

def frame(kind: int, seq: int, payload: bytes = b"") -> bytes:
    body = struct.pack("<BBH", kind, seq, len(payload)) + payload
    return b"\xa5\x5a" + body + struct.pack("<I", zlib.crc32(body))


class Client:
    """Request/response frames over QEMU's TCP serial port."""

    def __init__(self, url: str, timeout: float = 10.0):
        host, port = url.removeprefix("socket://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            got = self.sock.recv(n - len(out))
            if not got:
                raise EOFError("emulator closed the connection")
            out += got
        return out

    def read_frame(self) -> tuple[int, int, bytes]:
        window = b""
        while window != b"\xa5\x5a":
            window = (window + self._exactly(1))[-2:]
        head = self._exactly(4)
        kind, seq, n = struct.unpack("<BBH", head)
        rest = self._exactly(n + 4)
        assert struct.unpack("<I", rest[n:])[0] == zlib.crc32(head + rest[:n]), "bad CRC from the firmware"
        return kind, seq, rest[:n]

    def request(self, kind: int, payload: bytes = b"") -> tuple[int, bytes]:
        self.seq = (self.seq + 1) & 0xFF
        self.sock.sendall(frame(kind, self.seq, payload))
        got_kind, seq, body = self.read_frame()
        assert seq == self.seq
        return got_kind, body

    def ok(self, kind: int, payload: bytes = b"") -> bytes:
        got, body = self.request(kind, payload)
        assert got == kind | 0x80, f"type 0x{got:02x}: {body!r}"
        return body


def parse_info(p: bytes) -> dict:
    version, kind, scale, arena, nodes, n_in, n_out = struct.unpack_from("<HBHIHBB", p)
    sha, board, fw = p[13:45].hex(), p[45:61].rstrip(b"\0").decode(), p[61:77].rstrip(b"\0").decode()
    ios = [struct.unpack_from("<HBB4ifi", p, 77 + 28 * k) for k in range(n_in + n_out)]
    assert len(p) == 77 + 28 * len(ios)
    return dict(version=version, counter_kind=kind, counter_scale=scale, arena=arena, nodes=nodes, sha=sha,
                board=board, firmware=fw, inputs=ios[:n_in], outputs=ios[n_in:])


@pytest.fixture
def stopped():
    """Pack dirs whose emulator is stopped at teardown, whatever happens in the test."""
    dirs: list[Path] = []
    yield dirs
    for pack_dir in dirs:
        stop(pack_dir)


@pytest.fixture
def emulator(stopped):
    """Start the emulator for a built pack dir and connect to it."""
    def start(pack_dir: Path) -> Client:
        stopped.append(pack_dir)
        return Client(flash(pack_dir))
    return start


# -- tests -------------------------------------------------------------------------------------

@pytest.mark.parametrize("board", EMULATED + REAL)
def test_builds_within_the_board_limits(packed, tmp_path, board):
    pack = copy_pack(packed, tmp_path / "pack")
    result = build(pack, board)
    b = load_board(board)
    manifest = build_mod.read_manifest(pack)
    print(result.summary())
    assert result.board == board
    assert manifest["weight_bytes"] < result.flash_used <= result.flash_bytes == b.flash_bytes
    assert manifest["arena_bytes"] + build_mod.STACK_BYTES < result.ram_used <= result.ram_bytes == b.ram_bytes
    size = subprocess.run(["arm-none-eabi-size", "-B", str(result.elf)], capture_output=True, text=True,
                          check=True).stdout.splitlines()[1].split()
    text, data, bss = map(int, size[:3])
    assert (result.flash_used, result.ram_used) == (text + data, data + bss)
    image = result.bin.read_bytes()
    assert len(image) == result.flash_used  # vectors at the flash origin, .data right after the code
    sp, reset = struct.unpack_from("<II", image)
    assert sp == b.ram_origin + b.ram_bytes  # the stack starts at the end of RAM
    assert reset & 1 and b.flash_origin < reset < b.flash_origin + len(image)  # Thumb, in the image
    assert result.hex.read_text().startswith(":") and (pack / "build" / "build.json").is_file()
    again = build(pack, board)  # every object comes from the cache now
    assert (again.compiled, again.reused) == (0, result.compiled + result.reused)
    assert again.elf.read_bytes() == result.elf.read_bytes()


def test_too_big_model_fails_with_one_line(tmp_path):
    pack = pack_model(small_cnn(1, units_in=64 * 1024), tmp_path, "big")  # 640 KB of weights
    with pytest.raises(BoardFitError) as err:
        build(pack, "qemu-m55")
    message = str(err.value)
    assert "\n" not in message
    need, have, over = (int(v.replace(",", "")) for v in
                        re.fullmatch(r"firmware needs ([\d,]+) bytes of flash, board qemu-m55 has "
                                                   r"([\d,]+) \(over by ([\d,]+)\)", message).groups())
    assert have == 524_288 and need - have == over and need > 640 * 1024
    assert not (pack / "build").exists()
    run = CliRunner().invoke(main, ["build", str(pack), "--board", "qemu-m55"])
    errors = [line for line in run.output.splitlines() if "error" in line]
    assert run.exit_code == 2 and errors == [f"error: {message}"]


def test_missing_compiler_says_how_to_install(monkeypatch, packed, tmp_path):
    monkeypatch.setattr(build_mod.shutil, "which", lambda name: None)
    with pytest.raises(DeviceError, match=r"arm-none-eabi-gcc not found: install it with .*apt-get install"):
        build(copy_pack(packed, tmp_path / "pack"))


@needs_qemu
@pytest.mark.parametrize("board", EMULATED)
def test_boots_and_answers_on_qemu(packed, tmp_path, emulator, board):
    pack = copy_pack(packed, tmp_path / "pack")
    build(pack, board)
    manifest = build_mod.read_manifest(pack)
    dev = emulator(pack)
    kind, seq, payload = dev.read_frame()
    assert (kind, seq, payload) == (HELLO, 0, b"mcuq\x01\x00")

    info = parse_info(dev.ok(INFO))
    assert info["sha"] == manifest["model_sha256"] and info["arena"] == manifest["arena_bytes"]
    assert (info["version"], info["counter_kind"], info["counter_scale"]) == (1, 1, 1)
    assert info["board"] == board and info["nodes"] == 4
    (in_slot, in_dtype, in_rank, *in_rest), = info["inputs"]
    (out_slot, out_dtype, out_rank, *out_rest), = info["outputs"]
    assert (in_dtype, in_rank, tuple(in_rest[:4])) == (0, 4, (1, 8, 8, 1))
    assert (out_dtype, out_rank, tuple(out_rest[:4])) == (0, 2, (1, 10, 1, 1))

    graph = load_graph(pack / "graph")
    x = np.random.default_rng(1).integers(-128, 128, (1, 8, 8, 1)).astype(np.int8)
    want = pipeline.simulate(graph, [x[None]], False)["out0"][0]
    counts = []
    for _ in range(2):  # the same run twice: the same outputs and the same counts
        dev.ok(WRITE, struct.pack("<HI", in_slot, 0) + x.tobytes())
        status, nodes_run, total = struct.unpack("<bHQ", dev.ok(RUN, struct.pack("<h", -1)))
        assert (status, nodes_run) == (0, 4)
        got = np.frombuffer(dev.ok(READ, struct.pack("<HIH", out_slot, 0, 10)), np.int8).reshape(1, 10)
        np.testing.assert_array_equal(got, want)
        per_node = struct.unpack("<4I", dev.ok(PROFILE, struct.pack("<HH", 0, 4)))
        assert all(per_node) and sum(per_node) <= total < sum(per_node) + 4
        counts.append((per_node, total))
    assert counts[0] == counts[1]

    dev.ok(WRITE, struct.pack("<HI", in_slot, 0) + x.tobytes())
    dev.ok(RUN, struct.pack("<h", 0))  # the first node only: its output stays readable
    conv = [n for n in graph.nodes if n.op == Op.CONV_2D][0]
    conv_slot = sorted({t for n in graph.nodes for t in (*n.inputs, *n.outputs) if t >= 0}).index(conv.outputs[0])
    conv_bytes = graph.tensor(conv.outputs[0]).nbytes
    got = np.frombuffer(dev.ok(READ, struct.pack("<HIH", conv_slot, 0, conv_bytes)), np.int8)
    np.testing.assert_array_equal(got, run_integer(graph, [x], all_tensors=True)[conv.outputs[0]].reshape(-1))

    assert dev.request(0x22) == (ERROR, b"\x01unknown request type")
    assert dev.request(READ, struct.pack("<HIH", 999, 0, 1))[1][:1] == b"\x02"
    assert dev.request(READ, struct.pack("<HIH", out_slot, 5, 6))[1][:1] == b"\x02"  # past the end
    assert dev.request(WRITE, struct.pack("<HI", 1, 0) + b"\0")[1][:1] == b"\x02"  # weights are in flash
    assert dev.request(RUN, struct.pack("<h", 4))[1][:1] == b"\x02"
    assert dev.request(RUN, b"")[1][:1] == b"\x01"

    # Resynchronisation: noise, a frame with a bad CRC and one whose length swallows the next
    # frame go unanswered; the good frame hidden behind them is still found and answered.
    good = frame(INFO, 0x77)
    bad_crc = bytearray(frame(INFO, 0x70)); bad_crc[-1] ^= 1
    swallow = frame(INFO, 0x71)[:4] + struct.pack("<H", 40)
    dev.sock.sendall(b"\x00\xa5\xff" + bytes(bad_crc) + swallow + good + b"\0" * 40)
    kind, seq, _ = dev.read_frame()
    assert (kind, seq) == (INFO | 0x80, 0x77)

    dev.ok(RESET)
    assert dev.read_frame() == (HELLO, 0, b"mcuq\x01\x00")
    assert parse_info(dev.ok(INFO))["sha"] == manifest["model_sha256"]
    dev.close()


@needs_qemu
def test_emulator_state_and_stop(packed, tmp_path, stopped):
    pack = copy_pack(packed, tmp_path / "pack")
    stopped.append(pack)
    build(pack, "qemu-m7")
    url = flash(pack)
    assert running_emulator(pack) == url and url.startswith("socket://127.0.0.1:")
    state = json.loads((pack / "build" / "emulator.json").read_text())
    assert state["url"] == url and state["board"] == "qemu-m7"
    build(pack, "qemu-m7")  # a rebuild keeps the state, and the running ELF is the same
    assert running_emulator(pack) == url
    second = flash(pack)  # flashing again restarts it
    assert running_emulator(pack) == second
    assert not flash_mod._alive(state["pid"])
    run = CliRunner().invoke(main, ["stop", str(pack)])
    assert run.exit_code == 0 and run.output == f"stopped the emulator of {pack}\n"
    assert running_emulator(pack) is None and not stop(pack)
    assert not (pack / "build" / "emulator.json").exists()


@needs_qemu
def test_emulator_that_dies_at_start_is_reported(packed, tmp_path, monkeypatch, stopped):
    pack = copy_pack(packed, tmp_path / "pack")
    stopped.append(pack)
    build(pack, "qemu-m4")
    m4 = load_board("qemu-m4")
    monkeypatch.setattr(flash_mod, "load_board", lambda name: dataclasses.replace(m4, qemu_machine="mps9-nope"))
    with pytest.raises(DeviceError, match=r"^qemu-system-arm -M mps9-nope exited at start: "
                                          r"qemu-system-arm: unsupported machine type \(log: .*qemu.log\)$"):
        flash(pack)
    assert running_emulator(pack) is None


@needs_qemu
def test_broken_elf_is_refused_before_qemu_starts(packed, tmp_path, stopped):
    pack = copy_pack(packed, tmp_path / "pack")
    stopped.append(pack)
    build(pack, "qemu-m4")
    (pack / "build" / "firmware.elf").write_bytes(b"not an ELF")
    with pytest.raises(DeviceError, match=r"firmware.elf: not a 32-bit little-endian ARM ELF; rebuild it"):
        flash(pack)
    assert not (pack / "build" / "qemu.log").exists()


def test_flash_needs_a_build(packed, tmp_path):
    with pytest.raises(DeviceError, match=r"no firmware built; run mcuq build"):
        flash(copy_pack(packed, tmp_path / "pack"))


def test_real_board_without_tools_or_board_is_a_clear_error(packed, tmp_path, monkeypatch):
    pack = copy_pack(packed, tmp_path / "pack")
    build(pack, "stm32f746-disco")
    with pytest.raises(DeviceError, match=r"no ST STM32F746G-DISCO .* found: no USB serial port 0483:374b"):
        flash(pack)
    monkeypatch.setattr(flash_mod.shutil, "which", lambda name: None)
    with pytest.raises(DeviceError, match=r"no flashing tool for stm32f746-disco \(openocd, st-flash\)"):
        flash(pack, "/dev/ttyACM9")



_MEMSET_MAIN = r"""
#include <stdint.h>
#include <string.h>
#include "mcuq_port.h"

static uint8_t buf[64] __attribute__((aligned(8)));

static void put(const char *s) { mcuq_port_write((const uint8_t *)s, (uint32_t)strlen(s)); }

/* every start offset 0..7 and length 0..47 with c = 0x1A5 (memset stores (uint8_t)c): exactly
 * those bytes set, dst returned */
int main(void)
{
    int bad = 0;
    mcuq_port_init();
    for (uint32_t off = 0; off < 8; off++) {
        for (uint32_t n = 0; n < 48; n++) {
            for (uint32_t i = 0; i < sizeof buf; i++) {
                ((volatile uint8_t *)buf)[i] = (uint8_t)i;
            }
            bad |= memset(buf + off, 0x1A5, n) != buf + off;
            for (uint32_t i = 0; i < sizeof buf; i++) {
                bad |= buf[i] != (i >= off && i < off + n ? 0xA5u : (uint8_t)i);
            }
        }
    }
    put(bad ? "BAD\n" : "OK\n");
    mcuq_port_flush();
    mcuq_port_reset(); /* QEMU -no-reboot exits */
}
"""


@needs_qemu
@pytest.mark.parametrize("board", ["qemu-m7", "qemu-m55"])
def test_firmware_memset_sets_exactly_its_bytes(tmp_path, board):
    """The port's assembly memset (in place of newlib's) at every alignment and short length."""
    b = load_board(board)
    (tmp_path / "main.c").write_text(_MEMSET_MAIN)
    (tmp_path / "image.ld").write_text(build_mod.linker_script(b))
    ports = build_mod.FIRMWARE_DIR / "ports"
    elf, linked = tmp_path / "image.elf", tmp_path / "image.map"
    subprocess.run(["arm-none-eabi-gcc", *b.cflags, *build_mod.CFLAGS, *build_mod.board_defines(b), f"-I{ports}",
                    str(ports / "mcuq_cortexm.c"), str(ports / build_mod.PORT_FILES[b.uart.driver]),
                    str(tmp_path / "main.c"), *build_mod.LDFLAGS, f"-Wl,-Map,{linked}", "-T",
                    str(tmp_path / "image.ld"), "-o", str(elf)], check=True, capture_output=True, text=True)
    assert "lib_a-memset" not in linked.read_text()
    out = subprocess.run(["qemu-system-arm", "-M", b.qemu_machine, "-kernel", str(elf), "-display", "none",
                          "-monitor", "none", "-serial", "stdio", "-no-reboot"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60).stdout
    assert out.splitlines() == ["OK"], out


@pytest.mark.parametrize("name", ["mlperf-tiny/kws_ref_model.tflite", "mlperf-tiny/pretrainedResnet_quant.tflite"])
def test_firmware_links_no_newlib_copy_routines(name, tmp_path):
    """The copy and clear loops of app, runtime, port and plain kernels stay loops, and the port's
    memset replaces newlib's: the MLPerf firmware links no newlib memcpy, memmove or memset."""
    out = tmp_path / "p"
    pipeline.pack(model_path(name), "qemu-m7", out, pipeline.QuantOptions(), warn=lambda _: None)
    linked = build(out).elf.with_suffix(".map").read_text().split("Linker script and memory map")[1]
    assert re.search(r"^LOAD .*libc_nano\.a$", linked, re.M)  # newlib is linked, and gives none of them:
    assert not re.findall(r"lib_a-mem(?:cpy|move|set)\.o", linked)
