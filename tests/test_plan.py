"""Arena planner: valid on many seeded random graphs and on every shared model, close to the lower bound."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from mcuq.ir import NO_TENSOR, Graph, Node, Op, Tensor
from mcuq.plan import INPLACE, ArenaPlan, check_plan, peak_live_bytes, plan_arena
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
    """Brute force: at every step the live tensors' byte ranges are disjoint, in-place pairs aside."""
    check_plan(graph, plan)
    shared = {frozenset(p) for p in plan.aliases.items()}
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
    assert peak <= plan.size, "smaller than the bytes live at one step: impossible"
    assert plan.size <= sum(-(-n // plan.alignment) * plan.alignment for n in nbytes.values())
    assert peak == peak_live_bytes(graph)


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
    assert plan.aliases == {} and plan.offsets[2] != plan.offsets[1]
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
    assert plan.size <= peak_live_bytes(graph) * 1.01 + plan.alignment  # near-optimal on real models
