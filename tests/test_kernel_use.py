"""Only the kernels a model uses are linked: pack's dispatch table (mcuq.pack.node_kernel) agrees
with the runtime's C dispatch. The runtime names exactly the table's kernels; graphs covering
every kernel run bit-exactly in the host C with only their MCUQ_USE_<kernel> macros set; a used
kernel's macro turned off makes its node fail; the Cortex-M7 firmware holds exactly the model's
kernels."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mcuq import pipeline
from mcuq.build import FIRMWARE_DIR, build
from mcuq.graphfile import load_graph
from mcuq.hostsim import HostModel, KernelError
from mcuq.ir import Graph, Node, Op, Quant, Tensor
from mcuq.pack import KERNELS, node_kernel
from mcuq.writer import write_model
from conftest import model_path, random_inputs
from test_hostsim import assert_bit_exact, dispatch_graph

HAS_ARM = shutil.which("arm-none-eabi-gcc") is not None


def int8_graph() -> Graph:
    """The routes dispatch_graph leaves out: float QUANTIZE, int8 and int4-filter convolutions,
    depthwise and FC (int8 FC row-paired with 8 units, as is with 3), RESHAPE, int8 SOFTMAX."""
    rng = np.random.default_rng(5)
    tensors: list[Tensor] = []
    nodes: list[Node] = []

    def t(shape, dtype, scale=None, zp=0, data=None, axis=0) -> int:
        q = None if scale is None else Quant(tuple(float(np.float32(s)) for s in np.atleast_1d(scale)),
                                             (zp,) * len(np.atleast_1d(scale)), axis)
        if data is not None:
            data = np.asarray(data, np.int8 if dtype == "int4" else dtype)
            data.setflags(write=False)
        tensors.append(Tensor(len(tensors), f"t{len(tensors)}", tuple(shape), dtype, q, data))
        return len(tensors) - 1

    def node(op, ins, shape, scale, zp=0, dtype="int8", **attrs) -> int:
        out = t(shape, dtype, scale, zp)
        nodes.append(Node(len(nodes), op, tuple(ins), (out,), attrs, 1))
        return out

    def w(shape, dtype, axis=0, per_channel=True):
        lo, hi = (-8, 8) if dtype == "int4" else (-127, 128)
        n = shape[axis] if per_channel else 1
        return t(shape, dtype, list(rng.uniform(0.01, 0.03, n)), 0, rng.integers(lo, hi, shape), axis)

    def bias(n):
        return t((n,), "int32", None, 0, rng.integers(-500, 500, n))

    conv = dict(padding="SAME", stride_h=1, stride_w=1, dilation_h=1, dilation_w=1, activation="RELU")
    x = t((1, 6, 6, 4), "float32")
    q = node(Op.QUANTIZE, [x], (1, 6, 6, 4), 0.02, 3)
    a = node(Op.CONV_2D, [q, w((8, 3, 3, 4), "int8"), bias(8)], (1, 6, 6, 8), 0.05, -5, **conv)
    b = node(Op.DEPTHWISE_CONV_2D, [a, w((1, 3, 3, 8), "int8", 3), bias(8)], (1, 6, 6, 8), 0.05, -3,
             depth_multiplier=1, **conv)
    c = node(Op.CONV_2D, [b, w((8, 1, 1, 8), "int4"), bias(8)], (1, 6, 6, 8), 0.01, 2, **conv)
    d = node(Op.DEPTHWISE_CONV_2D, [c, w((1, 3, 3, 8), "int4", 3), bias(8)], (1, 6, 6, 8), 0.004, 0,
             depth_multiplier=1, **conv)
    r = node(Op.RESHAPE, [d, t((2,), "int32", None, 0, [1, 288])], (1, 288), 0.004, 0, new_shape=None)
    fc = dict(activation="NONE", keep_num_dims=False, weights_format="DEFAULT")
    e = node(Op.FULLY_CONNECTED, [r, w((8, 288), "int8", per_channel=False), bias(8)], (1, 8), 0.02, 1, **fc)
    f = node(Op.FULLY_CONNECTED, [r, w((10, 288), "int4", per_channel=False), bias(10)], (1, 10), 0.003, 0, **fc)
    g = node(Op.FULLY_CONNECTED, [r, w((3, 288), "int8", per_channel=False), bias(3)], (1, 3), 0.02, 1, **fc)
    s = node(Op.SOFTMAX, [e], (1, 8), 1 / 256, -128, beta=1.0)
    return Graph(tuple(tensors), tuple(nodes), (x,), (s, f, g), "int8_routes")


def pack(graph: Graph, out: Path) -> Graph:
    model = out.with_suffix(".tflite")
    model.write_bytes(write_model(graph))
    return pipeline.pack(model, "qemu-m7", out, pipeline.QuantOptions(), warn=lambda _: None).integer.graph


def macros(pack_dir: Path) -> dict[str, int]:
    header = (pack_dir / "src" / "mcuq_model.h").read_text()
    return {k: int(v) for k, v in re.findall(r"#define MCUQ_USE_(\w+) ([01])", header)}


def test_runtime_calls_exactly_the_table_kernels():
    runtime = (FIRMWARE_DIR / "runtime" / "mcuq_runtime.c").read_text()
    called = set(re.findall(r"MCUQ_CALL\((mcuq_\w+),", runtime))
    assert called == set(KERNELS)
    assert not re.search(r"[^(,\w]mcuq_(?!tensor_data|tensor_bytes|port_counter|run)\w+\(", runtime.split(
        "#define MCUQ_CALL")[1].split("\n", 1)[1]), "a kernel called outside MCUQ_CALL"
    for k in KERNELS:
        assert (FIRMWARE_DIR / "kernels" / f"{k}.c").is_file(), k


def test_every_kernel_runs_bit_exact_with_only_its_macros(tmp_path):
    """dispatch_graph and int8_graph together take every kernel; each packs with MCUQ_USE_ 1 for
    exactly its nodes' kernels and runs bit-exactly in the host C (a kernel the table leaves out
    would fail with MCUQ_ERR_UNSUPPORTED)."""
    taken = set()
    for name, graph in (("dispatch", dispatch_graph()), ("int8_routes", int8_graph())):
        packed = pack(graph, tmp_path / name)
        want = {node_kernel(packed, n) for n in packed.nodes}
        assert None not in want
        assert {k for k, v in macros(tmp_path / name).items() if v} == want
        assert set(macros(tmp_path / name)) == set(KERNELS)
        assert_bit_exact(tmp_path / name, packed)
        taken |= want
    assert taken == set(KERNELS), f"not covered: {sorted(set(KERNELS) - taken)}"


def test_a_used_kernel_left_out_fails_its_node(tmp_path):
    packed = pack(int8_graph(), tmp_path / "p")
    header = tmp_path / "p" / "src" / "mcuq_model.h"
    header.write_text(header.read_text().replace("#define MCUQ_USE_mcuq_depthwise_conv2d_s8_s4 1",
                                                 "#define MCUQ_USE_mcuq_depthwise_conv2d_s8_s4 0"))
    with pytest.raises(KernelError, match=r"node 4 DEPTHWISE_CONV_2D .* MCUQ_ERR_UNSUPPORTED"):
        HostModel(tmp_path / "p").run(random_inputs(packed, 0))


@pytest.mark.skipif(not HAS_ARM, reason="arm-none-eabi-gcc is needed")
@pytest.mark.parametrize("name", ["mlperf-tiny/kws_ref_model.tflite", "mlperf-tiny/ad01_int8.tflite"])
def test_firmware_links_only_the_model_kernels(name, tmp_path):
    out = tmp_path / "p"
    pipeline.pack(model_path(name), "qemu-m7", out, pipeline.QuantOptions(), warn=lambda _: None)
    result = build(out)
    graph = load_graph(out / "graph")
    nm = subprocess.run(["arm-none-eabi-nm", str(result.elf)], capture_output=True, text=True, check=True).stdout
    linked = {s for s in re.findall(r" [Tt] (mcuq_\w+)$", nm, re.M) if s in KERNELS}
    assert linked == {node_kernel(graph, n) for n in graph.nodes}
    assert 0 < result.code_used < result.flash_used
    # the plain-C fallbacks of the linked kernels: only where pack says a layer needs one
    plain = {"mcuq_conv2d_s8": "conv_plain", "mcuq_depthwise_conv2d_s8": "depthwise_plain",
             "mcuq_fully_connected_s8": "fully_connected_plain"}
    needed = json.loads((out / "manifest.json").read_text())["plain_fallbacks"]
    for kernel in linked & set(plain):
        assert (re.search(rf" [Tt] {plain[kernel]}$", nm, re.M) is not None) == needed[kernel], kernel
