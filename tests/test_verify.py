"""verify against the fake firmware: bit-exact runs, a deliberately wrong layer named correctly,
the wrong model refused, and link faults recovering or ending in one clear error in bounded time."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import model_path
from fake_device import Fault, FakeDevice, Inject, make_pack
from mcuq import link
from mcuq import verify as verify_module
from mcuq.errors import CalibrationError, DeviceError, MismatchError
from mcuq.fixedpoint import quantize_real
from mcuq.graphfile import load_graph
from mcuq.link import CounterKind, Kind, LinkError
from mcuq.simulate import run_integer
from mcuq.summary import node_macs
from mcuq.verify import first_difference, random_samples, resolve_port, tensor_slots, verify

FAST = dict(timeout=0.3, run_timeout=1.0)
AD01 = "mlperf-tiny/ad01_int8.tflite"
KWS = "mlperf-tiny/kws_ref_model.tflite"
TOYCAR = "mlperf-tiny/model_ToyCar_quant_fullint.tflite"  # float32 I/O around QUANTIZE / DEQUANTIZE


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    root = tmp_path_factory.mktemp("packs")
    made = {}

    def get(name: str):
        if name not in made:
            made[name] = make_pack(model_path(name), root / name.split("/")[1].removesuffix(".tflite"))
        return made[name]
    return get


@pytest.mark.parametrize("name", [AD01, KWS, TOYCAR])
def test_bit_exact_with_counters(packs, name):
    pack = packs(name)
    graph = load_graph(pack / "graph")
    seen = []
    with FakeDevice(pack) as fake:
        result = verify(pack, fake.url, count=4, progress=lambda done, total: seen.append((done, total)), **FAST)
    assert result.ok and result.exact == result.samples == 4 and not result.mismatches
    assert result.divergence is None
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert result.counter == "instructions"
    want = [(node_macs(graph, n) // 8 + 5) * 40 for n in graph.nodes]
    assert [c.count for c in result.layers] == want
    assert result.total == sum(want)
    assert [c.op for c in result.layers] == [str(n.op) for n in graph.nodes]
    for c in result.layers:
        assert c.per_mac == (c.count / c.macs if c.macs else None)
    d = json.loads(json.dumps(result.to_dict()))
    assert d["ok"] is True and d["verdict"].startswith("BIT-EXACT: 4 of 4")
    table = result.format_table()
    assert "instructions" in table and "BIT-EXACT" in table and f"{sum(want):,}" in table


def test_random_float_inputs_span_the_quantizer_range(packs):
    graph = load_graph(packs(TOYCAR) / "graph")
    (x,) = random_samples(graph, 4, 0)
    q = graph.tensor(graph.nodes[0].outputs[0]).quant
    assert x.dtype == np.float32 and x.shape == (4, *graph.input_tensors()[0].shape)
    codes = np.round(x / q.scale[0]) + q.zero_point[0]
    assert codes.min() == -128 and codes.max() == 127


def test_floats_compare_by_bits():
    a = np.array([0.0, 1.5, np.nan], np.float32)
    assert first_difference(a.copy(), a) is None
    b = a.copy()
    b[0] = -0.0
    assert first_difference(b, a)[:2] == (0, -0.0)
    assert first_difference(np.array([3, 4], np.int8), np.array([3, 5], np.int8)) == (1, 4, 5, 1)


def test_given_inputs_float_values_are_quantized(packs):
    pack = packs(AD01)
    graph = load_graph(pack / "graph")
    t = graph.input_tensors()[0]
    real = np.random.default_rng(0).uniform(-100, 30, (3, *t.shape)).astype(np.float32)
    with FakeDevice(pack) as fake:
        result = verify(pack, fake.url, inputs=[real], **FAST)
        runs = fake.firmware.run_inputs
    assert result.ok and result.samples == 3
    q = quantize_real(real, t.quant.scale[0], t.quant.zero_point[0], t.dtype)
    assert q.dtype == np.int8 and q.min() == -128 and q.max() == 127
    assert runs == [(q[k].tobytes(),) for k in range(3)]
    with pytest.raises(CalibrationError, match="needs \\[N, 1, 640\\]"):
        verify(pack, "loop://", inputs=[real[:, 0]], **FAST)


def test_counter_kind_cycles(packs):
    pack = packs(AD01)
    with FakeDevice(pack, counter_kind=CounterKind.CYCLES, counter_scale=1) as fake:
        result = verify(pack, fake.url, count=1, **FAST)
    assert result.counter == "cycles" and "cycles" in result.format_table()


@pytest.mark.parametrize("name, layer", [(AD01, 3), (AD01, 0), (KWS, 4), (KWS, 1)])
def test_wrong_layer_is_named(packs, name, layer):
    pack = packs(name)
    graph = load_graph(pack / "graph")
    node = graph.nodes[layer]
    with FakeDevice(pack, wrong_node=layer) as fake:
        start = time.monotonic()
        result = verify(pack, fake.url, count=3, **FAST)
        elapsed = time.monotonic() - start
    assert not result.ok  # a perturbed layer may be masked downstream for some inputs, not for all
    d = result.divergence
    assert d.sample == result.mismatches[0].sample
    assert (d.layer, d.op, d.tensor) == (layer, str(node.op), graph.tensor(node.outputs[0]).name)
    xs = [a[d.sample] for a in random_samples(graph, 3, 0)]
    want = run_integer(graph, xs, all_tensors=True)[node.outputs[0]]
    assert d.flat_index == 0 and d.expected == want.reshape(-1)[0] and abs(d.got - d.expected) == 1
    assert d.differing == d.size == want.size
    assert f"layer {layer} ({node.op})" in result.verdict
    assert result.verdict.startswith(f"MISMATCH: {3 - result.exact} of 3")
    assert json.loads(json.dumps(result.to_dict()))["divergence"]["layer"] == layer
    shown = [line for line in result.format_table().splitlines() if line.startswith("input ")]
    assert len(shown) == len(result.mismatches) == 3 - result.exact
    assert elapsed < 10


def test_wrong_model_is_refused(packs):
    pack = packs(AD01)
    with FakeDevice(pack, model_sha256="ab" * 32) as fake:
        start = time.monotonic()
        with pytest.raises(MismatchError, match=f"firmware runs model abababab.*, {pack} packs 87cf2419.*: "
                                                f"flash {pack} first"):
            verify(pack, fake.url, count=1, **FAST)
        assert time.monotonic() - start < 2


def test_firmware_of_another_pack_is_refused(packs):
    with FakeDevice(packs(KWS), model_sha256=json.loads((packs(AD01) / "manifest.json").read_text())
                    ["model_sha256"]) as fake:
        with pytest.raises(MismatchError, match="firmware inputs .* differ"):
            verify(packs(AD01), fake.url, count=1, **FAST)


@pytest.mark.parametrize("fault", [Fault.BAD_CRC, Fault.DROP_BYTE, Fault.SILENCE])
def test_lost_run_response_reruns_from_the_inputs(packs, fault):
    """A run overwrites its inputs in the arena: a retried RUN must write them again."""
    pack = packs(AD01)
    graph = load_graph(pack / "graph")
    with FakeDevice(pack, faults=(Inject(fault, Kind.RUN, 2),)) as fake:
        result = verify(pack, fake.url, count=3, **FAST)
        fw = fake.firmware
        slot = tensor_slots(graph)[graph.inputs[0]]
        last = random_samples(graph, 3, 0)[0][2]
        assert fw._bytes(slot) != last.tobytes()  # the run clobbered its input bytes
    assert result.ok and result.exact == 3, result.format_table()
    assert fake.requests.count(Kind.RUN) == 4
    assert result.link.failed == 1 and result.link.lost == 1


def test_run_response_behind_garbage_is_found(packs):
    pack = packs(AD01)
    with FakeDevice(pack, faults=(Inject(Fault.GARBAGE, Kind.RUN, 2),)) as fake:
        result = verify(pack, fake.url, count=3, **FAST)
    assert result.ok and result.exact == 3, result.format_table()
    assert fake.requests.count(Kind.RUN) == 3 and result.link.lost == 0


def test_reset_during_verify(packs):
    pack = packs(AD01)
    with FakeDevice(pack, faults=(Inject(Fault.RESET, Kind.RUN, 2),)) as fake:
        start = time.monotonic()
        with pytest.raises(DeviceError, match="board reset during RUN"):
            verify(pack, fake.url, count=3, **FAST)
        assert time.monotonic() - start < 2


def test_emulator_dies_during_verify(packs):
    pack = packs(AD01)
    with FakeDevice(pack, faults=(Inject(Fault.CLOSE, Kind.READ_TENSOR, 3),)) as fake:
        start = time.monotonic()
        with pytest.raises(DeviceError, match=r"device closed the link \(emulator died\?\)"):
            verify(pack, fake.url, count=3, **FAST)
        assert time.monotonic() - start < 2


def test_hung_run_ends_within_its_timeout(packs):
    pack = packs(AD01)
    with FakeDevice(pack, faults=(Inject(Fault.HANG, Kind.RUN),)) as fake:
        start = time.monotonic()
        with pytest.raises(LinkError, match=r"no valid response to RUN"):
            verify(pack, fake.url, count=2, **FAST)
        elapsed = time.monotonic() - start
    # the first RUN and one retry time out; writing the inputs again then times out too
    assert elapsed < 2 * FAST["run_timeout"] + 4 * FAST["timeout"] + 1.5


def test_tensor_slots_follow_the_packed_table(packs):
    for name in (AD01, KWS):
        pack = packs(name)
        graph = load_graph(pack / "graph")
        with FakeDevice(pack) as fake:
            names = [s.name for s in fake.firmware.slots]
        slots = tensor_slots(graph)
        assert len(slots) == len(names)
        assert all(names[slot] == graph.tensor(t).name for t, slot in slots.items())


def test_resolve_port(tmp_path, monkeypatch):
    assert resolve_port(tmp_path, "/dev/ttyACM3") == "/dev/ttyACM3"
    monkeypatch.setattr(link.serial.tools.list_ports, "comports", lambda: [])
    with pytest.raises(DeviceError, match="no board found"):
        resolve_port(tmp_path, None)
    monkeypatch.setattr(link.serial.tools.list_ports, "comports",
                        lambda: [SimpleNamespace(device="/dev/ttyACM0", vid=0x0483)])
    assert resolve_port(tmp_path, None) == "/dev/ttyACM0"
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "emulator.json").write_text(json.dumps({"pid": 2 ** 22 + 7, "port": 4567}))
    with pytest.raises(DeviceError, match="has stopped or runs an older build: run mcuq flash .* again"):
        resolve_port(tmp_path, None)
    monkeypatch.setattr(verify_module, "running_emulator", lambda d: "socket://127.0.0.1:4567")
    assert resolve_port(tmp_path, None) == "socket://127.0.0.1:4567"


def test_no_emulator_listening(packs, tmp_path):
    pack = packs(AD01)
    start = time.monotonic()
    with pytest.raises(DeviceError, match="connection refused"):
        verify(pack, "socket://127.0.0.1:1", count=1, **FAST)
    assert time.monotonic() - start < 2
