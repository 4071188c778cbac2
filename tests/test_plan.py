"""Arena planner: valid on many seeded random graphs and on every shared model, close to the lower bound."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from mcuq.ir import NO_TENSOR, Graph, Node, Op, Tensor
from mcuq.plan import BLOCK_PIXELS, INPLACE, ArenaPlan, check_plan, min_shift, peak_live_bytes, plan_arena, window
from mcuq.reader import read_model

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
MODEL_FILES = sorted(MODELS.glob("*/*.tflite"))
DTYPES = ("int8", "int16", "int32", "float32")


def random_graph(rng: np.random.Generator, n_nodes: int, chain: bool = False) -> Graph:
    """A random DAG in execution order: ops read earlier tensors (or constants), some are RESHAPEs."""
    tensors: list[Tensor] = []

    def new(shape, dtype=None, const=False) -> int:
        dtype = dtype or DTYPES[rng.integers(len(DTYPES))]
        data = np.zeros(shape, dtype) if const else None
        tensors.append(Tensor(len(tensors), f"t{len(tensors)}", tuple(shape), dtype, None, data))
        return len(tensors) - 1

    def shape() -> tuple[int, ...]:
        return (1, int(rng.integers(1, 40)), int(rng.integers(1, 40)))

    inputs = tuple(new(shape()) for _ in range(1 if chain else int(rng.integers(1, 3))))
    avail = list(inputs)
    nodes = []
    for k in range(n_nodes):
        if rng.random() < 0.2:  # RESHAPE of a live tensor: same bytes, new shape
            src = avail[-1] if chain else avail[int(rng.integers(len(avail)))]
            t = tensors[src]
            ins, outs = (src,), (new((t.size,), t.dtype),)
            op = Op.RESHAPE
        else:
            n_in = 1 if chain else int(rng.integers(1, 4))
            ins = tuple(avail[-1] if chain else avail[int(rng.integers(len(avail)))] for _ in range(n_in))
            if rng.random() < 0.3:
                ins += (new((int(rng.integers(1, 9)),), "int32", const=True), NO_TENSOR)
            outs = tuple(new(shape()) for _ in range(1 if chain or rng.random() < 0.8 else 2))
            op = Op.ADD if len(ins) > 1 else Op.SOFTMAX
        nodes.append(Node(k, op, ins, outs))
        avail.extend(outs)
    n_out = 1 if chain else int(rng.integers(1, 3))
    outputs = tuple(sorted({avail[-1], *rng.choice(avail, n_out - 1).tolist()}))
    return Graph(tuple(tensors), tuple(nodes), inputs, outputs, "random")


def independent_live_sets(graph: Graph) -> list[set[int]]:
    """Tensors live at each step -1..len(nodes), computed from first principles (not via mcuq.plan)."""
    end = len(graph.nodes)
    acts = {t.index for t in graph.activation_tensors()}
    written = {t: n.index for n in graph.nodes for t in n.outputs if t in acts}
    reads: dict[int, int] = {}
    for n in graph.nodes:
        for t in n.inputs:
            if t in acts:
                reads[t] = n.index
    live = []
    for s in range(-1, end + 1):
        here = set()
        for t in acts:
            born = -1 if t in graph.inputs or t not in written else written[t]
            dies = end if t in graph.outputs or t not in written and t not in graph.inputs else \
                max(reads.get(t, born), born)
            if born <= s <= dies:
                here.add(t)
        live.append(here)
    return live


def assert_sound(graph: Graph, plan: ArenaPlan) -> None:
    """Brute force: at every step the live tensors' byte ranges are disjoint, in-place and planned
    overlapping pairs aside (those are checked by running the graph over a tagged arena)."""
    check_plan(graph, plan)
    run_tagged(graph, plan)
    shared = {frozenset(p) for p in (*plan.aliases.items(), *plan.overlaps.items())}
    for dst, src in plan.aliases.items():
        node = next(n for n in graph.nodes if dst in n.outputs)
        assert node.op in INPLACE and src in node.inputs
        assert not any(src in n.inputs for n in graph.nodes[node.index + 1:]) and src not in graph.outputs
    nbytes = {t.index: t.nbytes for t in graph.activation_tensors()}
    peak = 0
    for here in independent_live_sets(graph):
        ranges = sorted((plan.offsets[t], plan.offsets[t] + nbytes[t], t) for t in here if nbytes[t])
        for (a0, a1, a), (b0, b1, b) in zip(ranges, ranges[1:]):
            assert b0 >= a1 or frozenset((a, b)) in shared, f"tensors {a} and {b} overlap"
        live_bytes = sum(nbytes[t] for t in here) - sum(nbytes[d] for d, s in plan.aliases.items()
                                                       if d in here and s in here)
        peak = max(peak, live_bytes)
    assert all(end <= plan.size for end in (plan.offsets[t] + nbytes[t] for t in nbytes))
    assert plan.size <= sum(-(-n // plan.alignment) * plan.alignment for n in nbytes.values())
    if not plan.overlaps:
        assert peak <= plan.size, "smaller than the bytes live at one step: impossible"
    if not any(min_shift(graph, n) is not None for n in graph.nodes):
        assert peak == peak_live_bytes(graph)
    assert peak_live_bytes(graph) <= plan.size


def run_tagged(graph: Graph, plan: ArenaPlan) -> None:
    """Run the graph over an arena of tags (tensor, byte) with the kernels' access order from the
    overlap contract: windowed nodes read a run of BLOCK_PIXELS output pixels' windows, then write
    their outputs; other nodes read every input, then write. Each read must find its producer's tag."""
    arena = np.full(max(plan.size, 1), -1, np.int64)
    acts = {t.index for t in graph.activation_tensors()}

    def tag(t: int, byte: np.ndarray) -> np.ndarray:
        return t * (1 << 32) + byte

    def write(t: int, byte: np.ndarray) -> None:
        arena[plan.offsets[t] + byte] = tag(t, byte)

    def read(node: Node, t: int, byte: np.ndarray) -> None:
        bad = np.flatnonzero(arena[plan.offsets[t] + byte] != tag(t, byte))
        assert not bad.size, f"node {node.index} {node.op} reads byte {byte[bad[0]]} of tensor {t}: overwritten"

    produced = {t for n in graph.nodes for t in n.outputs}
    for t in acts:
        if t in graph.inputs or t not in produced:  # graph inputs, variables (state)
            write(t, np.arange(graph.tensor(t).nbytes))
    for node in graph.nodes:
        ins = [t for t in node.inputs if t in acts]
        g = window(graph, node)
        if g is None:
            for t in ins:
                read(node, t, np.arange(graph.tensor(t).nbytes))
            for t in node.outputs:
                write(t, np.arange(graph.tensor(t).nbytes))
            continue
        pixels = g.batches * g.out_h * g.out_w
        for s in range(0, pixels, BLOCK_PIXELS):  # worst case: a run's writes before its reads
            write(node.outputs[0], np.arange(s * g.out_pixel, min(s + BLOCK_PIXELS, pixels) * g.out_pixel))
            for q in range(s, min(s + BLOCK_PIXELS, pixels)):
                b, oy, ox = q // (g.out_h * g.out_w), q // g.out_w % g.out_h, q % g.out_w
                ys = [y for ky in range(g.kernel[0]) if 0 <= (y := oy * g.stride[0] - g.pad[0] + ky * g.dilation[0]) < g.in_h]
                xs = [x for kx in range(g.kernel[1]) if 0 <= (x := ox * g.stride[1] - g.pad[1] + kx * g.dilation[1]) < g.in_w]
                for y in ys:
                    for x in xs:
                        read(node, ins[0], ((b * g.in_h + y) * g.in_w + x) * g.in_pixel + np.arange(g.in_pixel))
    for t in graph.outputs:
        if t in acts:
            read(graph.nodes[-1], t, np.arange(graph.tensor(t).nbytes))


def largest_first_size(graph: Graph, plan: ArenaPlan) -> int:
    """The floor: largest buffer first, each at the lowest aligned offset clear of live neighbours."""
    members: dict[int, list[int]] = {}
    for t in plan.lifetimes:
        root = t
        while root in plan.aliases:
            root = plan.aliases[root]
        members.setdefault(root, []).append(t)
    bufs = sorted(((max(graph.tensor(t).nbytes for t in ts), min(plan.lifetimes[t][0] for t in ts),
                    max(plan.lifetimes[t][1] for t in ts)) for ts in members.values()), key=lambda b: (-b[0], b[1]))
    placed: list[tuple[int, int, int, int]] = []
    for size, first, last in bufs:
        off = 0
        for o, e, f, l in sorted(placed):
            if f <= last and first <= l and size and o < off + size and off < e:
                off = -(-e // plan.alignment) * plan.alignment
        placed.append((off, off + size, first, last))
    return max((e for _, e, _, _ in placed), default=0)


@pytest.mark.parametrize("seed", range(300))
def test_random_graphs(seed):
    rng = np.random.default_rng(seed)
    graph = random_graph(rng, int(rng.integers(1, 40)))
    for alignment in (1, 4, 16):
        plan = plan_arena(graph, alignment)
        assert all(off % alignment == 0 for off in plan.offsets.values())
        assert_sound(graph, plan)
        assert plan.size <= largest_first_size(graph, plan)


@pytest.mark.parametrize("seed", range(100))
def test_chains_reach_lower_bound(seed):
    """On a chain (each op reads the previous output) the best layout needs only the peak live bytes."""
    rng = np.random.default_rng(1000 + seed)
    graph = random_graph(rng, int(rng.integers(2, 30)), chain=True)
    plan = plan_arena(graph, alignment=1)
    assert_sound(graph, plan)
    assert plan.size == peak_live_bytes(graph)


def test_reshape_shares_bytes_only_when_input_dies():
    t = [Tensor(i, f"t{i}", (4, 4), "int8") for i in range(4)]
    dies = Graph(tuple(t), (Node(0, Op.SOFTMAX, (0,), (1,)), Node(1, Op.RESHAPE, (1,), (2,)),
                            Node(2, Op.SOFTMAX, (2,), (3,))), (0,), (3,))
    plan = plan_arena(dies)
    assert plan.aliases == {2: 1} and plan.offsets[2] == plan.offsets[1] and plan.size == 32
    lives_on = dataclasses.replace(dies, nodes=dies.nodes[:2] + (Node(2, Op.ADD, (2, 1), (3,)),))
    plan = plan_arena(lives_on)
    assert 2 not in plan.aliases and plan.offsets[2] != plan.offsets[1]
    assert_sound(lives_on, plan)


def test_inplace_hook_takes_the_input_that_dies(monkeypatch):
    """An op registered in INPLACE writes over whichever input dies there, and only that one."""
    monkeypatch.setitem(INPLACE, Op.ADD, lambda node: [(node.inputs[0], node.outputs[0]),
                                                       (node.inputs[1], node.outputs[0])])
    t = [Tensor(i, f"t{i}", (64,), "int8") for i in range(4)]
    g = Graph(tuple(t), (Node(0, Op.SOFTMAX, (0,), (1,)), Node(1, Op.ADD, (0, 1), (2,)),
                         Node(2, Op.ADD, (2, 0), (3,))), (0,), (3,))
    plan = plan_arena(g)
    assert plan.aliases == {2: 1, 3: 2}  # t0 lives on to node 2, so node 1 reuses t1, node 2 reuses t2
    assert plan.size == 128
    assert_sound(g, plan)


def test_check_plan_rejects_bad_plans():
    t = [Tensor(i, f"t{i}", (8,), "int8") for i in range(4)]
    g = Graph(tuple(t), (Node(0, Op.SOFTMAX, (0,), (1,)), Node(1, Op.ADD, (0, 1), (2,)),
                         Node(2, Op.SOFTMAX, (2,), (3,))), (0,), (3,))
    plan = plan_arena(g)
    check_plan(g, plan)
    clash = dataclasses.replace(plan, offsets={**plan.offsets, 1: plan.offsets[0]})
    with pytest.raises(ValueError, match=r"tensor 0 't0'.*tensor 1 't1'.*overlap"):
        check_plan(g, clash)
    with pytest.raises(ValueError, match=rf"tensor \d 't\d' ends at byte {plan.size}, past the arena size"):
        check_plan(g, dataclasses.replace(plan, size=plan.size - 1))
    with pytest.raises(ValueError, match="not 16-byte aligned"):
        check_plan(g, dataclasses.replace(plan, offsets={**plan.offsets, 3: plan.offsets[3] + 1}))
    with pytest.raises(ValueError, match=r"tensor 2 't2' may not take over the bytes of tensor 1"):
        check_plan(g, dataclasses.replace(plan, aliases={2: 1}))
    with pytest.raises(ValueError, match="lifetimes do not match"):
        check_plan(g, dataclasses.replace(plan, lifetimes={**plan.lifetimes, 3: (2, 2)}))


@pytest.mark.skipif(not MODEL_FILES, reason=f"shared models not found at {MODELS}")
@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_shared_models(path):
    graph = read_model(path)
    plan = plan_arena(graph)
    assert_sound(graph, plan)
    assert set(plan.offsets) == {t.index for t in graph.activation_tensors()}
    if not plan.overlaps:
        assert plan.size <= peak_live_bytes(graph) * 1.01 + plan.alignment  # near-optimal on real models


def windowed_graph(rng: np.random.Generator, n_nodes: int) -> Graph:
    """A random NHWC network: convolutions, depthwise convolutions and pools of random geometry
    (kernel, stride, dilation, padding, channels), with same-shape ADDs joining two branches."""
    tensors: list[Tensor] = []

    def new(shape, dtype="int8", const=False) -> int:
        tensors.append(Tensor(len(tensors), f"t{len(tensors)}", tuple(int(d) for d in shape), dtype, None,
                              np.zeros(shape, dtype) if const else None))
        return len(tensors) - 1

    dtype = ("int8", "int16")[int(rng.random() < 0.2)]
    x = new((int(rng.integers(1, 3)), int(rng.integers(3, 14)), int(rng.integers(3, 14)),
             int(rng.choice([1, 3, 4, 8, 16]))), dtype)
    inputs, avail, nodes = (x,), [x], []
    for k in range(n_nodes):
        src = avail[-1] if rng.random() < 0.7 else avail[int(rng.integers(len(avail)))]
        n, h, w, c = tensors[src].shape
        same = [t for t in avail if t != src and tensors[t].shape == (n, h, w, c)]
        if same and rng.random() < 0.25:
            nodes.append(Node(k, Op.ADD, (src, same[-1]), (new((n, h, w, c), dtype),)))
            avail.append(nodes[-1].outputs[0])
            continue
        op = [Op.CONV_2D, Op.DEPTHWISE_CONV_2D, Op.AVERAGE_POOL_2D, Op.MAX_POOL_2D][int(rng.integers(4))]
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        dh, dw = (1, 1) if op in (Op.AVERAGE_POOL_2D, Op.MAX_POOL_2D) or rng.random() < 0.7 else (2, 2)
        padding = "SAME" if rng.random() < 0.7 else "VALID"
        oh = (h + sh - 1) // sh if padding == "SAME" else (h + sh - ((kh - 1) * dh + 1)) // sh
        ow = (w + sw - 1) // sw if padding == "SAME" else (w + sw - ((kw - 1) * dw + 1)) // sw
        if oh < 1 or ow < 1:
            continue
        attrs = {"padding": padding, "stride_h": sh, "stride_w": sw, "activation": "NONE"}
        if op == Op.CONV_2D:
            oc = int(rng.choice([1, 4, 8, 16, 24]))
            ins = (src, new((oc, kh, kw, c), "int8", const=True))
            attrs |= {"dilation_h": dh, "dilation_w": dw}
        elif op == Op.DEPTHWISE_CONV_2D:
            oc = c
            ins = (src, new((1, kh, kw, c), "int8", const=True))
            attrs |= {"dilation_h": dh, "dilation_w": dw, "depth_multiplier": 1}
        else:
            oc = c
            ins = (src,)
            attrs |= {"filter_h": kh, "filter_w": kw}
        nodes.append(Node(len(nodes), op, ins, (new((n, oh, ow, oc), dtype),), attrs))
        avail.append(nodes[-1].outputs[0])
    nodes = [dataclasses.replace(nd, index=i) for i, nd in enumerate(nodes)]
    return Graph(tuple(tensors), tuple(nodes), inputs, (avail[-1],), "windowed")


@pytest.mark.parametrize("seed", range(60))
def test_windowed_graphs_overlap_soundly(seed):
    """Random windowed networks: every plan passes check_plan and the tagged run (each read finds
    its producer's bytes under the contract's worst-case access order), at several alignments."""
    rng = np.random.default_rng(5000 + seed)
    graph = windowed_graph(rng, int(rng.integers(1, 12)))
    for alignment in (1, 4, 16):
        plan = plan_arena(graph, alignment)
        assert_sound(graph, plan)
        for dst, src in plan.overlaps.items():
            node = next(n for n in graph.nodes if dst in n.outputs)
            assert plan.offsets[src] - plan.offsets[dst] >= min_shift(graph, node)


def test_min_shift_follows_the_geometry():
    """3x3 stride-1 SAME depthwise over W columns of C bytes: a run of 4 pixels ends (4 + W + 1)
    pixels past the first byte its successors read; a 1x1 convolution only 4 pixels."""
    def node_graph(op, kernel, c_out, w=5, c=64):
        t = [Tensor(0, "x", (1, 25, w, c), "int8"), Tensor(1, "y", (1, 25, w, c_out), "int8"),
             Tensor(2, "f", (c_out if op == Op.CONV_2D else 1, kernel, kernel, c), "int8", None,
                    np.zeros((c_out if op == Op.CONV_2D else 1, kernel, kernel, c), np.int8))]
        attrs = {"padding": "SAME", "stride_h": 1, "stride_w": 1, "dilation_h": 1, "dilation_w": 1,
                 "activation": "NONE", "depth_multiplier": 1}
        return Graph(tuple(t), (Node(0, op, (0, 2), (1,), attrs),), (0,), (1,))

    dw = node_graph(Op.DEPTHWISE_CONV_2D, 3, 64)
    assert min_shift(dw, dw.nodes[0]) == (4 + 5 + 1) * 64
    pw = node_graph(Op.CONV_2D, 1, 64)
    assert min_shift(pw, pw.nodes[0]) == 4 * 64
    wide = node_graph(Op.CONV_2D, 1, 128)  # output pixels twice the input's: the last run decides
    assert min_shift(wide, wide.nodes[0]) == (25 * 5) * 128 - (25 * 5 - 4) * 64
    too_deep = node_graph(Op.DEPTHWISE_CONV_2D, 3, 144, c=144)  # 144 x 9 taps: two DSP passes
    assert min_shift(too_deep, too_deep.nodes[0]) is None


def test_check_plan_refuses_a_shift_one_step_short():
    """Slide a planned overlapping output up by one alignment step: check_plan must refuse it."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        graph = windowed_graph(rng, 6)
        plan = plan_arena(graph, alignment=4)
        tight = [(d, s) for d, s in plan.overlaps.items()
                 if plan.offsets[s] - plan.offsets[d] - 4 < min_shift(graph, graph.producers()[d])]
        if tight:
            break
    dst, src = tight[0]
    worse = dataclasses.replace(plan, offsets={**plan.offsets, dst: plan.offsets[dst] + 4})
    with pytest.raises(ValueError, match=rf"tensor {src} .*tensor {dst} .*overlap while both live"):
        check_plan(graph, worse)
    with pytest.raises(AssertionError, match="overwritten"):
        run_tagged(graph, worse)


@pytest.mark.skipif(not MODEL_FILES, reason=f"shared models not found at {MODELS}")
@pytest.mark.parametrize("name", ["kws_ref_model", "vww_96_int8", "pretrainedResnet_quant"])
def test_overlaps_shrink_the_mlperf_arenas(name):
    """On the MLPerf Tiny CNNs the planned arena is below the most bytes live at one step when
    every tensor keeps its own bytes (the floor without overlaps), and the tagged run passes."""
    path = next(p for p in MODEL_FILES if p.stem == name)
    graph = read_model(path)
    plan = plan_arena(graph)
    assert_sound(graph, plan)
    life = plan.lifetimes
    disjoint_floor = max(sum(graph.tensor(t).nbytes for t, (a, b) in life.items() if a <= s <= b
                             and t not in plan.aliases) for s in range(-1, len(graph.nodes) + 1))
    assert plan.overlaps and plan.size < disjoint_floor
    if name != "kws_ref_model":  # kws: each output must start under its input, so the chain drifts down
        assert plan.size <= peak_live_bytes(graph) + 2 * plan.alignment


def test_chain_layout_is_smallest_on_a_drifting_chain():
    """Six 1x1 convolutions of 64 channels over 100 pixels: each output starts 4 pixels (256 bytes)
    under its input (side by side would take two tensors), so the best arena is one tensor plus
    six shifts."""
    tensors = [Tensor(0, "x", (1, 1, 100, 64), "int8")]
    nodes = []
    for k in range(6):
        tensors.append(Tensor(len(tensors), f"w{k}", (64, 1, 1, 64), "int8", None, np.zeros((64, 1, 1, 64), np.int8)))
        tensors.append(Tensor(len(tensors), f"y{k}", (1, 1, 100, 64), "int8"))
        nodes.append(Node(k, Op.CONV_2D, (nodes[-1].outputs[0] if nodes else 0, len(tensors) - 2), (len(tensors) - 1,),
                          {"padding": "SAME", "stride_h": 1, "stride_w": 1, "dilation_h": 1, "dilation_w": 1,
                           "activation": "NONE"}))
    graph = Graph(tuple(tensors), tuple(nodes), (0,), (nodes[-1].outputs[0],))
    plan = plan_arena(graph)
    assert_sound(graph, plan)
    assert plan.size == 6400 + 6 * 256 and len(plan.overlaps) == 6


def test_check_plan_refuses_overlaps_no_contract_covers():
    """A fully connected output over its dying input, or a depthwise layer whose channels x taps
    exceed the one-pass bound overlapped at any shift: check_plan refuses both."""
    def graph_of(op, x_shape, y_shape, w_shape, attrs):
        t = [Tensor(0, "x", x_shape, "int8"), Tensor(1, "y", y_shape, "int8"),
             Tensor(2, "w", w_shape, "int8", None, np.zeros(w_shape, np.int8))]
        return Graph(tuple(t), (Node(0, op, (0, 2), (1,), attrs),), (0,), (1,))

    fc = graph_of(Op.FULLY_CONNECTED, (1, 64), (1, 64), (64, 64), {"activation": "NONE"})
    deep = graph_of(Op.DEPTHWISE_CONV_2D, (1, 8, 8, 144), (1, 8, 8, 144), (1, 3, 3, 144),
                    {"padding": "SAME", "stride_h": 1, "stride_w": 1, "dilation_h": 1, "dilation_w": 1,
                     "activation": "NONE", "depth_multiplier": 1})
    for graph in (fc, deep):
        plan = plan_arena(graph)
        assert not plan.overlaps and plan.offsets[0] != plan.offsets[1]
        x_bytes = graph.tensor(0).nbytes
        for shift in (0, 16, x_bytes // 2):
            bad = dataclasses.replace(plan, offsets={0: shift, 1: 0}, size=2 * x_bytes)
            with pytest.raises(ValueError, match="overlap while both live"):
                check_plan(graph, bad)
