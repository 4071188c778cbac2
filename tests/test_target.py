"""pack -> build -> flash -> verify on the emulated boards: every output bit-exact with the host
simulator, and a firmware with one corrupted layer caught and named. Needs qemu-system-arm and
arm-none-eabi-gcc (skipped with a reason without them)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import model_path
from fake_device import make_pack
from mcuq import flash
from mcuq.boards import load_board
from mcuq.build import build
from mcuq.graphfile import load_graph
from mcuq.simulate import prepare_graph
from mcuq.simulate.conv import constant_channels
from mcuq.verify import VerifyResult, verify

pytestmark = [
    pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm is not installed"),
    pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc is not installed"),
]

MODELS = {
    "ad01_int8": "mlperf-tiny/ad01_int8.tflite",
    "kws_ref_model": "mlperf-tiny/kws_ref_model.tflite",
    "vww_96_int8": "mlperf-tiny/vww_96_int8.tflite",
    "pretrainedResnet_quant": "mlperf-tiny/pretrainedResnet_quant.tflite",
    "hello_world_int8": "tflite-micro/hello_world_int8.tflite",
    "simple_add_model": "tflite-micro/simple_add_model.tflite",
    "model_ToyCar_quant_fullint": "mlperf-tiny/model_ToyCar_quant_fullint.tflite",  # float32 I/O
}
# inputs of 27 KB and more take about 3 s each to write into QEMU's one-byte UART
COUNT = {"vww_96_int8": 2, "simple_add_model": 2}
CASES = ([(board, m) for board in ("qemu-m7", "qemu-m4") for m in MODELS if m != "model_ToyCar_quant_fullint"]
         + [("qemu-m7", "model_ToyCar_quant_fullint")]
         + [(board, m) for board in ("qemu-m55", "qemu-stm32f4") for m in ("kws_ref_model", "ad01_int8")])


def run_on_emulator(pack: Path, count: int, optimize: str = "size") -> VerifyResult:
    """Build DIR, start its emulator, verify (finding the emulator without a port), stop it."""
    build(pack, optimize=optimize)
    flash.flash(pack)
    try:
        return verify(pack, count=count, timeout=5.0, run_timeout=60.0)
    finally:
        flash.stop(pack)


@pytest.mark.parametrize("board, model", CASES)
def test_bit_exact_on_emulator(tmp_path, board, model):
    pack = make_pack(model_path(MODELS[model]), tmp_path / model, board)
    count = COUNT.get(model, 3)
    result = run_on_emulator(pack, count)
    assert result.ok, result.format_table()
    assert result.samples == result.exact == count and result.divergence is None
    assert result.board == board and result.counter == "instructions"
    graph = load_graph(pack / "graph")
    assert [c.op for c in result.layers] == [str(n.op) for n in graph.nodes]
    assert all(c.count > 0 for c in result.layers)
    # the firmware converts the run's total and each node's ticks separately: rounding apart
    assert result.total == pytest.approx(sum(c.count for c in result.layers), abs=len(result.layers))
    # a plausible count: SMLAD does two MACs per instruction (Helium's VMLAVA.S8 sixteen), so well
    # under 0.5 (1/16) per computed MAC means a broken counter (constant channels left out: mcuq
    # computes none of their products)
    floor = 0.05 if load_board(board).mve else 0.4
    for c, p in zip(result.layers, prepare_graph(graph)):
        constant = constant_channels(p)
        computed = c.macs * (1 - constant.mean()) if constant.size else c.macs
        assert computed < 1000 or floor < c.count / computed < 100, (c.index, result.format_table())


def corrupt_output_offset(pack: Path, node: int, delta: int) -> int:
    """Add ``delta`` to node ``node``'s output zero point in the generated C; the old value."""
    src = pack / "src" / "mcuq_model.c"
    text = src.read_text()
    pattern = re.compile(rf"(mcuq_p{node} = \{{[^;]*?\.output_offset = )(-?\d+)")
    found = pattern.search(text)
    assert found, f"node {node} has no output_offset"
    src.write_text(pattern.sub(lambda m: f"{m[1]}{int(m[2]) + delta}", text, count=1))
    return int(found[2])


@pytest.mark.parametrize("model, node", [("kws_ref_model", 5), ("ad01_int8", 2)])
def test_corrupted_layer_is_named(tmp_path, model, node):
    """A zero point off by 8 in one layer; on some inputs later layers (ReLU, softmax) hide it."""
    pack = make_pack(model_path(MODELS[model]), tmp_path / model, "qemu-m7")
    corrupt_output_offset(pack, node, 8)
    result = run_on_emulator(pack, 4)
    graph = load_graph(pack / "graph")
    assert not result.ok
    d = result.divergence
    assert d is not None, result.format_table()
    target = graph.nodes[node]
    assert (d.layer, d.op, d.tensor) == (node, str(target.op), graph.tensor(target.outputs[0]).name)
    assert 0 < d.got - d.expected <= 8  # less where the shifted value saturates
    assert f"layer {node} ({target.op})" in result.verdict


@pytest.mark.parametrize("model", ["pretrainedResnet_quant", "kws_ref_model"])
def test_speed_build_bit_exact_and_larger(tmp_path, model):
    """`mcuq build --optimize speed` (the DSP kernels at -O2; the default size build puts the
    assembly loops' functions on 2-byte boundaries, which once broke ADR in the channel loop) runs
    bit-exact too, with more code."""
    pack = make_pack(model_path(MODELS[model]), tmp_path / model)
    size_code = build(pack).code_used
    result = run_on_emulator(pack, 1, optimize="speed")
    assert result.ok and result.exact == 1, result.format_table()
    assert build(pack, optimize="speed").code_used > size_code
