"""Single-op models for the variants the shared models do not exercise, against tflite-micro.

Each case builds a one-node Graph with seeded random quantization, constants and inputs,
writes it with mcuq.writer, reads it back (so both sides see the same float32 scales), and
compares the simulator's output with tflite-micro's on several inputs, bit for bit.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from conftest import TflmOracle, first_mismatch, random_inputs
from mcuq.errors import CalibrationError, UnsupportedOpError
from mcuq.ir import Graph, Node, Op, Quant, Tensor
from mcuq.reader import read_model_bytes
from mcuq.simulate import prepare_graph, run_integer
from mcuq.writer import write_model

N_INPUTS = 8
SPREAD = {"int8": 256 / 12**0.5, "int16": 65536 / 12**0.5, "int32": 2.0**32 / 12**0.5}  # uniform std


class Builder:
    """Collects tensors for a one-node graph; constants are given as data."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.tensors: list[Tensor] = []
        self.inputs: list[int] = []

    def scale(self, lo: float = 0.005, hi: float = 0.1) -> float:
        return float(np.exp(self.rng.uniform(np.log(lo), np.log(hi))))

    def add(self, shape, dtype: str, scale=None, zp=0, data=None, axis: int = 0, feed: bool = False) -> int:
        q = None
        if scale is not None:
            scales = tuple(float(s) for s in np.atleast_1d(scale))
            zps = tuple(int(z) for z in np.broadcast_to(zp, len(scales)))
            q = Quant(scales, zps, axis)
        i = len(self.tensors)
        arr = None if data is None else np.asarray(data, dtype if dtype != "int4" else "int8")
        self.tensors.append(Tensor(i, f"t{i}", tuple(shape), dtype, q, arr))
        if feed:
            self.inputs.append(i)
        return i

    def act(self, shape, dtype: str = "int8", zero_point: bool = True) -> int:
        """A fed activation tensor with random scale and (for int8) zero point."""
        zp = int(self.rng.integers(-40, 40)) if dtype == "int8" and zero_point else 0
        return self.add(shape, dtype, self.scale(), zp, feed=True)

    def real_std(self, t: int) -> float:
        """Standard deviation of the real values of a uniformly filled tensor."""
        return self.tensors[t].quant.scale[0] * SPREAD[self.tensors[t].dtype]

    def out(self, shape, dtype: str, std: float) -> int:
        """Output whose range covers about +-4 standard deviations of its real values (few clamps)."""
        zp = int(self.rng.integers(-30, 30)) if dtype == "int8" else 0
        scale = 4 * std / np.iinfo(dtype).max * self.rng.uniform(0.7, 1.4)
        return self.add(shape, dtype, scale, zp)

    def weights(self, shape, scales, dtype: str = "int8") -> int:
        bound = 8 if dtype == "int4" else 128
        return self.add(shape, dtype, scales, 0, self.rng.integers(1 - bound, bound, shape))

    def bias(self, n: int, dtype: str = "int32", scale: float = 1e-4, bound: int = 1 << 14) -> int:
        return self.add((n,), dtype, scale, 0, self.rng.integers(-bound, bound, n))

    def graph(self, op: Op, ins: list[int], out: int, attrs: dict | None = None) -> Graph:
        node = Node(0, op, tuple(ins), (out,), attrs or {}, 1)
        g = Graph(tuple(self.tensors), (node,), tuple(self.inputs), (out,), str(op))
        return g


def conv_attrs(padding="SAME", stride=(1, 1), dilation=(1, 1), act="NONE", **extra) -> dict:
    return {"padding": padding, "stride_h": stride[0], "stride_w": stride[1], "dilation_h": dilation[0],
            "dilation_w": dilation[1], "activation": act, **extra}


def conv_out(size: int, k: int, stride: int, dilation: int, padding: str) -> int:
    return -(-size // stride) if padding == "SAME" else (size - (k - 1) * dilation - 1) // stride + 1


def conv_case(dtype="int8", padding="SAME", stride=(1, 1), dilation=(1, 1), act="NONE", per_channel=True,
              bias="int32", groups=1, hw=(9, 8), k=(3, 3), ic=4, oc=6, wtype="int8"
              ) -> Callable[[Builder], Graph]:
    def build(b: Builder) -> Graph:
        x = b.act((1, *hw, ic), dtype)
        scales = [b.scale(0.002, 0.02) for _ in range(oc)] if per_channel else b.scale(0.002, 0.02)
        w = b.weights((oc, *k, ic // groups), scales, wtype)
        bb = b.bias(oc, bias, bound=1 << (20 if bias == "int64" else 14)) if bias else -1
        oh, ow = (conv_out(hw[i], k[i], stride[i], dilation[i], padding) for i in range(2))
        std = b.real_std(x) * np.mean(scales) * SPREAD["int8"] * (k[0] * k[1] * ic / groups) ** 0.5
        y = b.out((1, oh, ow, oc), dtype, std)
        return b.graph(Op.CONV_2D, [x, w, bb], y, conv_attrs(padding, stride, dilation, act))
    return build


def depthwise_case(dtype="int8", padding="SAME", stride=(1, 1), dilation=(1, 1), act="NONE", mult=1,
                   bias="int32", hw=(9, 10), k=(3, 3), ic=5) -> Callable[[Builder], Graph]:
    def build(b: Builder) -> Graph:
        oc = ic * mult
        x = b.act((1, *hw, ic), dtype)
        scales = [b.scale(0.002, 0.05) for _ in range(oc)]
        w = b.tensors[b.weights((1, *k, oc), scales)]
        q = Quant(w.quant.scale, w.quant.zero_point, 3)  # depthwise filters are quantized along axis 3
        b.tensors[w.index] = Tensor(w.index, w.name, w.shape, w.dtype, q, w.data)
        bb = b.bias(oc, bias, bound=1 << (20 if bias == "int64" else 14)) if bias else -1
        oh, ow = (conv_out(hw[i], k[i], stride[i], dilation[i], padding) for i in range(2))
        std = b.real_std(x) * np.mean(scales) * SPREAD["int8"] * (k[0] * k[1]) ** 0.5
        y = b.out((1, oh, ow, oc), dtype, std)
        attrs = conv_attrs(padding, stride, dilation, act, depth_multiplier=mult)
        return b.graph(Op.DEPTHWISE_CONV_2D, [x, w.index, bb], y, attrs)
    return build


def fc_case(dtype="int8", per_channel=False, bias="int32", in_shape=(3, 20), units=7, act="NONE",
            keep_num_dims=False, wtype="int8") -> Callable[[Builder], Graph]:
    def build(b: Builder) -> Graph:
        depth = in_shape[-1]
        x = b.act(in_shape, dtype)
        s_in = b.tensors[x].quant.scale[0]
        scales = [b.scale(0.002, 0.02) for _ in range(units)] if per_channel else b.scale(0.002, 0.02)
        w = b.weights((units, depth), scales, wtype)
        bscale = s_in * float(np.atleast_1d(scales)[0])
        bb = b.bias(units, bias, bscale, bound=1 << (20 if bias == "int64" else 14)) if bias else -1
        out_shape = (*in_shape[:-1], units) if keep_num_dims else (int(np.prod(in_shape[:-1])), units)
        y = b.out(out_shape, dtype, b.real_std(x) * np.mean(scales) * SPREAD["int8"] * depth ** 0.5)
        attrs = {"activation": act, "keep_num_dims": keep_num_dims, "weights_format": "DEFAULT"}
        return b.graph(Op.FULLY_CONNECTED, [x, w, bb], y, attrs)
    return build


def pool_case(op: Op, dtype="int8", padding="SAME", k=(3, 3), stride=(2, 2), hw=(7, 9), act="NONE"):
    def build(b: Builder) -> Graph:
        x = b.act((2, *hw, 3), dtype)
        s, zp = b.tensors[x].quant.scale[0], b.tensors[x].quant.zero_point[0]
        oh, ow = (conv_out(hw[i], k[i], stride[i], 1, padding) for i in range(2))
        y = b.add((2, oh, ow, 3), dtype, s, zp)
        attrs = {"padding": padding, "stride_h": stride[0], "stride_w": stride[1], "filter_h": k[0],
                 "filter_w": k[1], "activation": act}
        return b.graph(op, [x], y, attrs)
    return build


def binary_case(op: Op, dtype="int8", shapes=((1, 4, 5, 3), (1, 4, 5, 3)), act="NONE"):
    def build(b: Builder) -> Graph:
        zp = dtype == "int8"
        x1, x2 = b.act(shapes[0], dtype, zp), b.act(shapes[1], dtype, zp)
        out_shape = np.broadcast_shapes(*shapes)
        s1, s2 = b.real_std(x1), b.real_std(x2)
        y = b.out(out_shape, dtype, s1 * s2 if op == Op.MUL else (s1 * s1 + s2 * s2) ** 0.5)
        return b.graph(op, [x1, x2], y, {"activation": act})
    return build


def quantize_case(src: str, dst: str):
    def build(b: Builder) -> Graph:
        shape = (2, 33)
        if src == "float32":
            x = b.add(shape, "float32", feed=True)
        elif src == "int32":
            x = b.add(shape, "int32", 1e-6, 0, feed=True)
        else:
            x = b.act(shape, src)
        std = b.real_std(x) if src != "float32" else b.scale() * SPREAD["int8"]
        y = b.out(shape, dst, std)
        return b.graph(Op.QUANTIZE, [x], y)
    return build


def dequantize_case(src: str):
    def build(b: Builder) -> Graph:
        x = b.act((3, 17), src)
        return b.graph(Op.DEQUANTIZE, [x], b.add((3, 17), "float32"))
    return build


def pad_case(dtype: str):
    def build(b: Builder) -> Graph:
        x = b.act((1, 4, 5, 3), dtype)
        pads = b.add((4, 2), "int32", data=[[0, 0], [1, 2], [3, 0], [0, 1]])
        q = b.tensors[x].quant
        y = b.add((1, 7, 8, 4), dtype, q.scale[0], q.zero_point[0])
        return b.graph(Op.PAD, [x, pads], y)
    return build


def concat_case(dtype: str, axis: int):
    def build(b: Builder) -> Graph:
        s, zp = b.scale(), (7 if dtype == "int8" else 0)
        x1 = b.add((1, 3, 4, 2), dtype, s, zp, feed=True)
        x2 = b.add((1, 3, 4, 5), dtype, s, zp, data=b.rng.integers(-100, 100, (1, 3, 4, 5)))
        x3 = b.add((1, 3, 4, 1), dtype, s, zp, feed=True)
        y = b.add((1, 3, 4, 8), dtype, s, zp)
        return b.graph(Op.CONCATENATION, [x1, x2, x3], y, {"axis": axis, "activation": "NONE"})
    return build


def mean_case(dtype: str, axes, keep_dims: bool, shape=(2, 5, 7, 6)):
    def build(b: Builder) -> Graph:
        x = b.act(shape, dtype)
        ax = b.add((len(axes),), "int32", data=axes)
        red = {a % len(shape) for a in axes}
        out = tuple(1 if i in red else d for i, d in enumerate(shape) if keep_dims or i not in red)
        count = int(np.prod([shape[a] for a in red]))
        y = b.out(out, dtype, b.real_std(x) / count**0.5)
        return b.graph(Op.MEAN, [x, ax], y, {"keep_dims": keep_dims})
    return build


def reshape_case():
    def build(b: Builder) -> Graph:
        x = b.act((1, 4, 6), "int8")
        shp = b.add((2,), "int32", data=[3, 8])
        q = b.tensors[x].quant
        y = b.add((3, 8), "int8", q.scale[0], q.zero_point[0])
        return b.graph(Op.RESHAPE, [x, shp], y, {"new_shape": None})
    return build


CASES = {
    "conv_same_stride2_relu6": conv_case(stride=(2, 2), act="RELU6"),
    "conv_valid_dilated_pertensor_nobias": conv_case(padding="VALID", dilation=(2, 2), per_channel=False,
                                                     bias=None, act="RELU_N1_TO_1"),
    "conv_same_dilated_5x3": conv_case(dilation=(2, 1), k=(5, 3), stride=(1, 2), act="RELU"),
    "conv_grouped": conv_case(groups=2, ic=8, oc=6),
    "conv_int4_filter": conv_case(wtype="int4", act="RELU"),
    "conv_16x8_int64_bias": conv_case("int16", stride=(2, 1), bias="int64"),
    "conv_16x8_int32_bias": conv_case("int16", bias="int32"),
    "conv_16x8_no_bias": conv_case("int16", bias=None),
    "depthwise_mult2_dilated_stride2": depthwise_case(mult=2, dilation=(2, 2), stride=(2, 2), act="RELU6"),
    "depthwise_valid_mult3": depthwise_case(padding="VALID", mult=3, k=(3, 2), ic=2),
    "depthwise_16x8_int64_bias": depthwise_case("int16", bias="int64", mult=2),
    "fc_per_tensor_batched": fc_case(),
    "fc_per_channel_relu": fc_case(per_channel=True, act="RELU"),
    "fc_keep_num_dims": fc_case(in_shape=(2, 3, 16), keep_num_dims=True, bias=None),
    "fc_int4_filter": fc_case(wtype="int4", in_shape=(1, 1, 1, 24)),
    "fc_16x8_int64_bias": fc_case("int16", bias="int64"),
    "fc_16x8_int32_bias": fc_case("int16", bias="int32", per_channel=True),
    "fc_16x8_no_bias": fc_case("int16", bias=None),
    "avgpool_same_stride2": pool_case(Op.AVERAGE_POOL_2D, act="RELU"),
    "avgpool_valid_int16": pool_case(Op.AVERAGE_POOL_2D, "int16", padding="VALID", k=(2, 3), stride=(1, 2)),
    "maxpool_same_stride2": pool_case(Op.MAX_POOL_2D, act="RELU6"),
    "maxpool_valid_int16": pool_case(Op.MAX_POOL_2D, "int16", padding="VALID", k=(2, 2)),
    "add_broadcast_relu6": binary_case(Op.ADD, shapes=((1, 4, 5, 3), (1, 1, 1, 3)), act="RELU6"),
    "add_broadcast_both": binary_case(Op.ADD, shapes=((2, 1, 5, 3), (1, 4, 1, 3))),
    "add_int16": binary_case(Op.ADD, "int16"),
    "mul_broadcast_relu": binary_case(Op.MUL, shapes=((1, 4, 5, 3), (1, 4, 5, 1)), act="RELU"),
    "mul_int16": binary_case(Op.MUL, "int16"),
    "quantize_float_int8": quantize_case("float32", "int8"),
    "quantize_float_int16": quantize_case("float32", "int16"),
    "quantize_int8_int8": quantize_case("int8", "int8"),
    "quantize_int8_int16": quantize_case("int8", "int16"),
    "quantize_int8_int32": quantize_case("int8", "int32"),
    "quantize_int16_int8": quantize_case("int16", "int8"),
    "quantize_int16_int16": quantize_case("int16", "int16"),
    "quantize_int32_int8": quantize_case("int32", "int8"),
    "dequantize_int8": dequantize_case("int8"),
    "dequantize_int16": dequantize_case("int16"),
    "pad_int8": pad_case("int8"),
    "pad_int16": pad_case("int16"),
    "concat_int8_last_axis": concat_case("int8", -1),
    "concat_int16_axis3": concat_case("int16", 3),
    "mean_hw_keep_dims": mean_case("int8", [1, 2], True),
    "mean_one_axis": mean_case("int8", [-2], False),
    "mean_all_but_batch_int16": mean_case("int16", [1, 2, 3], False),
    "reshape": reshape_case(),
}


@pytest.mark.parametrize("case", CASES)
def test_single_op_matches_tflm(case: str) -> None:
    graph = CASES[case](Builder(sum(map(ord, case))))
    model = write_model(graph)
    graph = read_model_bytes(model, name=case)
    params = prepare_graph(graph)
    oracle = TflmOracle(model, graph)
    for seed in range(N_INPUTS):
        inputs = random_inputs(graph, seed)
        got = run_integer(graph, inputs, all_tensors=True, params=params)
        assert (msg := first_mismatch(graph, got, oracle.run(inputs))) is None, f"{case} seed {seed}: {msg}"


def test_unsupported_variants_name_node_op_and_tensor() -> None:
    b = Builder(0)
    g = fc_case()(b)
    shuffled = Node(0, Op.FULLY_CONNECTED, g.nodes[0].inputs, g.nodes[0].outputs,
                    {**g.nodes[0].attrs, "weights_format": "SHUFFLED4x16INT8"})
    match = r"^node 0 FULLY_CONNECTED \(output 't3'\): filter 't1' has weights format SHUFFLED4x16INT8;"
    with pytest.raises(UnsupportedOpError, match=match):
        prepare_graph(Graph(g.tensors, (shuffled,), g.inputs, g.outputs))
    u8 = Builder(0)
    x = u8.add((1, 4), "uint8", 0.1, 128, feed=True)
    with pytest.raises(UnsupportedOpError, match=r"^node 0 QUANTIZE .*'t0' is uint8"):
        prepare_graph(u8.graph(Op.QUANTIZE, [x], u8.out((1, 4), "int8", 1.0)))
    g4 = fc_case(per_channel=True, wtype="int4")(Builder(0))
    with pytest.raises(UnsupportedOpError, match=r"^node 0 FULLY_CONNECTED .* int4 filter 't1' is per-chan"):
        prepare_graph(g4)
    with pytest.raises(UnsupportedOpError, match=r"^node 0 DEPTHWISE_CONV_2D .*needs an int64 bias$"):
        prepare_graph(depthwise_case("int16", bias=None)(Builder(0)))
    svdf = Graph(g.tensors, (Node(0, "SVDF", g.nodes[0].inputs, g.nodes[0].outputs),), g.inputs, g.outputs)
    with pytest.raises(UnsupportedOpError, match=r"^node 0 SVDF \(output 't3'\): the integer simulator has no kernel"):
        prepare_graph(svdf)


def test_run_integer_checks_inputs() -> None:
    g = binary_case(Op.ADD)(Builder(0))
    x = np.zeros((1, 4, 5, 3), np.int8)
    with pytest.raises(CalibrationError, match=r"takes 2 input\(s\), got 1$"):
        run_integer(g, [x])
    match = r"^input 1 't1' must be int8 \[1, 4, 5, 3\], got int8 \[4, 5, 3\]$"
    with pytest.raises(CalibrationError, match=match):
        run_integer(g, [x, x[0]])
    with pytest.raises(CalibrationError, match=r"^input 0 't0' must be int8 \[1, 4, 5, 3\], got int16"):
        run_integer(g, [x.astype(np.int16), x])
    values = run_integer(g, [x, x], all_tensors=True)
    assert sorted(values) == [0, 1, 2] and values[2].dtype == np.int8
