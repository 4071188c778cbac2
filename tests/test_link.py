"""The host link against the fake firmware: framing, handshake, tensors, runs, and every fault
either recovering (same bytes as the host simulator) or ending in one clear error in bounded time."""

from __future__ import annotations

import os
import pty
import socket
import struct
import threading
import time
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import serial

from conftest import model_path, random_inputs
from fake_device import Fault, FakeDevice, Inject, make_pack
from mcuq import link
from mcuq.errors import DeviceError
from mcuq.graphfile import load_graph
from mcuq.link import MAX_PAYLOAD, CounterKind, Device, Kind, LinkError
from mcuq.simulate import run_integer
from mcuq.summary import node_macs
from mcuq.verify import tensor_slots

TIMEOUT = 0.3  # per try; the fake answers in milliseconds
TRIES = 4  # 1 + Device retries


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    root = tmp_path_factory.mktemp("packs")
    made = {}

    def get(name: str):
        if name not in made:
            made[name] = make_pack(model_path(name), root / name.split("/")[1].removesuffix(".tflite"))
        return made[name]
    return get


@pytest.fixture
def ad01(packs):
    return packs("mlperf-tiny/ad01_int8.tflite")


def open_fake(fake: FakeDevice) -> Device:
    return Device.open(fake.url, timeout=TIMEOUT, run_timeout=2.0)


def test_frame_layout_and_crc():
    frame = link.encode(Kind.READ_TENSOR, 7, b"\x01\x02\x03")
    assert frame[:2] == b"\xa5\x5a"
    assert frame[2:6] == bytes([0x04, 7, 3, 0])
    assert frame[6:9] == b"\x01\x02\x03"
    assert struct.unpack("<I", frame[9:])[0] == zlib.crc32(frame[2:9])
    with pytest.raises(ValueError):
        link.encode(Kind.WRITE_TENSOR, 1, bytes(MAX_PAYLOAD + 1))


def test_any_pyserial_url_garbage_before_hello():
    port = serial.serial_for_url("loop://", timeout=0.05)
    port.write(b"\x00\xa5\xa5\x13" + link.encode(Kind.HELLO, 0, b"mcuq\x01\x00"))
    assert Device(port, "loop://", timeout=TIMEOUT).wait_boot() == 1


@pytest.mark.parametrize("name", ["mlperf-tiny/ad01_int8.tflite", "mlperf-tiny/kws_ref_model.tflite"])
def test_happy_path_matches_host_simulator(packs, name):
    pack = packs(name)
    graph = load_graph(pack / "graph")
    x = random_inputs(graph, seed=3)
    want = run_integer(graph, x, all_tensors=True)
    with FakeDevice(pack) as fake, open_fake(fake) as dev:
        info = dev.hello()
        assert info.model_sha256 == fake.firmware.sha256
        assert info.num_nodes == len(graph.nodes)
        assert info.counter_kind is CounterKind.INSTRUCTIONS and info.counter_scale == 40
        assert [(i.dtype, i.shape) for i in info.inputs] == [(t.dtype, t.shape) for t in graph.input_tensors()]
        assert [(o.dtype, o.shape) for o in info.outputs] == [(t.dtype, t.shape) for t in graph.output_tensors()]
        dev.write_tensor(info.inputs[0].slot, x[0].tobytes())
        result = dev.run()
        assert result.nodes_run == len(graph.nodes)
        out = info.outputs[0]
        got = np.frombuffer(dev.read_tensor(out.slot, out.nbytes), out.dtype).reshape(out.shape)
        assert np.array_equal(got, want[graph.outputs[0]])
        profile = dev.read_profile(len(graph.nodes))
        assert profile == [node_macs(graph, n) // 8 + 5 for n in graph.nodes]
        assert result.total == sum(profile)
        # an intermediate: run to node 1 (inputs written again: the run reused their bytes)
        dev.write_tensor(info.inputs[0].slot, x[0].tobytes())
        assert dev.run(last_node=1).nodes_run == 2
        t = graph.nodes[1].outputs[0]
        tensor = graph.tensor(t)
        raw = dev.read_tensor(tensor_slots(graph)[t], tensor.nbytes)
        assert np.array_equal(np.frombuffer(raw, tensor.dtype).reshape(tensor.shape), want[t])


def test_large_tensors_are_chunked(packs):
    pack = packs("tflite-micro/simple_add_model.tflite")
    graph = load_graph(pack / "graph")
    x = random_inputs(graph, seed=1)
    with FakeDevice(pack) as fake, open_fake(fake) as dev:
        info = dev.hello()
        for io, a in zip(info.inputs, x):
            dev.write_tensor(io.slot, a.tobytes())
        dev.run()
        out = info.outputs[0]
        got = np.frombuffer(dev.read_tensor(out.slot, out.nbytes), out.dtype).reshape(out.shape)
        assert np.array_equal(got, run_integer(graph, x)[0])
        writes = [k for k in fake.requests if k == Kind.WRITE_TENSOR]
        reads = [k for k in fake.requests if k == Kind.READ_TENSOR]
        assert len(writes) == 2 * -(-x[0].nbytes // (MAX_PAYLOAD - 6))
        assert len(reads) == -(-out.nbytes // MAX_PAYLOAD)


@pytest.mark.parametrize("fault", [Fault.GARBAGE, Fault.BAD_CRC, Fault.DROP_BYTE, Fault.DUP_BYTE, Fault.SILENCE])
@pytest.mark.parametrize("on", [Kind.INFO, Kind.READ_TENSOR])
def test_transient_faults_recover(ad01, fault, on):
    graph = load_graph(ad01 / "graph")
    x = random_inputs(graph, seed=5)
    with FakeDevice(ad01, faults=(Inject(fault, on),)) as fake, open_fake(fake) as dev:
        start = time.monotonic()
        info = dev.hello()
        dev.write_tensor(info.inputs[0].slot, x[0].tobytes())
        dev.run()
        out = info.outputs[0]
        got = np.frombuffer(dev.read_tensor(out.slot, out.nbytes), out.dtype).reshape(out.shape)
        elapsed = time.monotonic() - start
        assert np.array_equal(got, run_integer(graph, x)[0])
        # the response behind the garbage is found without a retry; a damaged one is asked for again
        assert fake.requests.count(on) == (1 if fault is Fault.GARBAGE else 2)
        assert dev.stats.retries == (0 if fault is Fault.GARBAGE else 1) and dev.stats.failed == 0
        assert elapsed < 2 * TIMEOUT + 1.0


def test_run_response_lost_is_not_retried_by_the_link(ad01):
    with FakeDevice(ad01, faults=(Inject(Fault.BAD_CRC, Kind.RUN),)) as fake, open_fake(fake) as dev:
        dev.hello()
        with pytest.raises(LinkError, match="RUN after 1 try"):
            dev.run()
        assert fake.requests.count(Kind.RUN) == 1


def test_hang_ends_in_one_clear_error(ad01):
    with FakeDevice(ad01, faults=(Inject(Fault.HANG, Kind.READ_TENSOR),)) as fake, open_fake(fake) as dev:
        info = dev.hello()
        start = time.monotonic()
        with pytest.raises(LinkError, match=r"no valid response to READ_TENSOR slot \d+ offset 0 after 4 tries .*silence"):
            dev.read_tensor(info.outputs[0].slot, 16)
        assert TRIES * TIMEOUT <= time.monotonic() - start < TRIES * TIMEOUT + 1.0


def test_persistent_corruption_names_the_crc(ad01):
    faults = tuple(Inject(Fault.BAD_CRC, Kind.INFO, n) for n in range(1, 10))
    with FakeDevice(ad01, faults=faults) as fake, open_fake(fake) as dev:
        start = time.monotonic()
        with pytest.raises(LinkError, match=r"INFO after 4 tries .*4 corrupt frame\(s\) \(bad CRC or cut short\)"):
            dev.hello()
        assert time.monotonic() - start < TRIES * TIMEOUT + 1.0


@pytest.mark.parametrize("on", [Kind.RUN, Kind.READ_TENSOR])
def test_reset_mid_session_is_reported(ad01, on):
    with FakeDevice(ad01, faults=(Inject(Fault.RESET, on),)) as fake, open_fake(fake) as dev:
        info = dev.hello()
        start = time.monotonic()
        with pytest.raises(DeviceError, match=f"board reset during {on.name}"):
            dev.run() if on == Kind.RUN else dev.read_tensor(info.outputs[0].slot, 8)
        assert time.monotonic() - start < 1.0


def test_closed_connection_is_reported(ad01):
    with FakeDevice(ad01, faults=(Inject(Fault.CLOSE, Kind.RUN),)) as fake, open_fake(fake) as dev:
        dev.hello()
        start = time.monotonic()
        with pytest.raises(DeviceError, match=r"device closed the link \(emulator died\?\)"):
            dev.run()
        assert time.monotonic() - start < 1.0


def test_error_response_is_reported(ad01):
    with FakeDevice(ad01) as fake, open_fake(fake) as dev:
        dev.hello()
        with pytest.raises(DeviceError, match="refused READ_TENSOR slot 999 offset 0: bad argument"):
            dev.read_tensor(999, 4)


def test_reset_request_waits_for_hello(ad01):
    with FakeDevice(ad01) as fake, open_fake(fake) as dev:
        dev.hello()
        assert dev.reset() == 1
        assert dev.info().num_nodes == len(fake.firmware.nodes)


def test_silent_port_without_hello():
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    with Device.open(f"socket://127.0.0.1:{server.getsockname()[1]}", timeout=TIMEOUT) as dev:
        start = time.monotonic()
        with pytest.raises(DeviceError, match="no HELLO"):
            dev.wait_boot()
        with pytest.raises(LinkError, match="INFO after 4 tries"):
            dev.hello(boot_timeout=0.1)
        assert time.monotonic() - start < TIMEOUT + 0.1 + TRIES * TIMEOUT + 1.0
    server.close()


def test_open_errors_are_one_clear_line():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()  # nothing listens there now
    start = time.monotonic()
    with pytest.raises(DeviceError, match="connection refused"):
        Device.open(f"socket://127.0.0.1:{port}")
    with pytest.raises(DeviceError, match="no such port"):
        Device.open("/dev/ttyNOSUCHPORT")
    assert time.monotonic() - start < 2.0


def test_find_stlink_port(monkeypatch):
    ports = [SimpleNamespace(device="/dev/ttyUSB0", vid=0x1A86), SimpleNamespace(device="/dev/ttyACM1", vid=0x0483)]
    monkeypatch.setattr(link.serial.tools.list_ports, "comports", lambda: ports)
    assert link.find_stlink_port() == "/dev/ttyACM1"
    monkeypatch.setattr(link.serial.tools.list_ports, "comports", lambda: ports[:1])
    with pytest.raises(DeviceError, match="no ST-LINK"):
        link.find_stlink_port()
    monkeypatch.setattr(link.serial.tools.list_ports, "comports", lambda: ports + ports[1:])
    with pytest.raises(DeviceError, match="several ST-LINK"):
        link.find_stlink_port()


def test_port_in_use_is_named():
    master, slave = pty.openpty()
    name = os.ttyname(slave)
    with Device.open(name):
        with pytest.raises(DeviceError, match="in use by another program"):
            Device.open(name)
    os.close(master)
    os.close(slave)
