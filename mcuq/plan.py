"""Static arena planner: one byte offset per activation tensor, chosen ahead of time.

Lifetimes come from execution order; tensors whose lifetimes overlap get disjoint bytes unless an
op lets its output take over the bytes of an input that dies there (``INPLACE``: today only
RESHAPE). Several greedy layouts are tried (largest-first lowest fit, the usual floor, and a
two-ended fit under the lower bound, optimal on chains) and the smallest arena is kept;
``check_plan`` verifies any plan against the graph independently of how it was made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from mcuq.ir import NO_TENSOR, Graph, Node, Op

# Op -> (input, output) tensor pairs whose bytes may be shared when the input dies at the node.
# The output must not be larger than the input, and the op must read each input element before
# writing the output element at the same address (a later issue adds elementwise ops here).
INPLACE: dict[Op | str, Callable[[Node], Iterable[tuple[int, int]]]] = {
    Op.RESHAPE: lambda node: [(node.inputs[0], node.outputs[0])],
}


@dataclass(frozen=True)
class ArenaPlan:
    """Where each activation tensor lives in one arena of ``size`` bytes.

    ``lifetimes`` maps a tensor to (first node, last node) that touches it; -1 means "before node
    0" (graph inputs), len(nodes) means "after the last node" (graph outputs). ``aliases`` maps a
    tensor to the tensor whose bytes it takes over in place (same offset).
    """

    size: int
    offsets: dict[int, int]
    lifetimes: dict[int, tuple[int, int]]
    aliases: dict[int, int]
    alignment: int


@dataclass(frozen=True)
class _Buffer:
    """A run of bytes shared by one tensor and its in-place aliases."""

    tensors: tuple[int, ...]
    nbytes: int
    first: int
    last: int


def lifetimes(graph: Graph) -> dict[int, tuple[int, int]]:
    """(first node, last node) touching each activation tensor, inputs from -1, outputs to len(nodes).

    A non-constant tensor that nodes read but none writes and that is no graph input is a variable
    (recurrent state, updated in place by its op): it keeps its bytes for the whole run.
    """
    end = len(graph.nodes)
    span: dict[int, list[int]] = {}
    for t in graph.inputs:
        span[t] = [-1, -1]
    for node in graph.nodes:
        for t in (*node.inputs, *node.outputs):
            if t != NO_TENSOR:
                s = span.setdefault(t, [node.index, node.index])
                s[1] = max(s[1], node.index)
    produced = {t for n in graph.nodes for t in n.outputs}
    for t, s in span.items():
        if t not in produced and t not in graph.inputs:
            s[:] = [-1, end]  # never written by a node: a variable tensor (state) that outlives the run
    for t in graph.outputs:
        span.setdefault(t, [-1, end])[1] = end
    return {t.index: (span[t.index][0], span[t.index][1]) for t in graph.activation_tensors()}


def _aliases(graph: Graph, life: dict[int, tuple[int, int]]) -> dict[int, int]:
    """Output -> input pairs that INPLACE allows here: the input dies at the node and is big enough."""
    found: dict[int, int] = {}
    for node in graph.nodes:
        hook = INPLACE.get(node.op)
        for src, dst in hook(node) if hook else ():
            if (src in life and dst in life and dst not in found and src not in found.values()
                    and life[src][1] == node.index
                    and graph.tensor(dst).nbytes <= graph.tensor(src).nbytes):
                found[dst] = src
    return found


def _buffers(graph: Graph, life: dict[int, tuple[int, int]], aliases: dict[int, int]) -> list[_Buffer]:
    root = {}
    for t in life:
        r = t
        while r in aliases:
            r = aliases[r]
        root[t] = r
    groups: dict[int, list[int]] = {}
    for t in sorted(life):
        groups.setdefault(root[t], []).append(t)
    return [_Buffer(tuple(ts), max(graph.tensor(t).nbytes for t in ts), min(life[t][0] for t in ts),
                    max(life[t][1] for t in ts)) for ts in groups.values()]


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _peak(buffers: list[_Buffer], n_nodes: int, alignment: int = 1) -> int:
    steps = range(-1, n_nodes + 1)
    return max((sum(_align(b.nbytes, alignment) for b in buffers if b.first <= s <= b.last) for s in steps),
               default=0)


def peak_live_bytes(graph: Graph) -> int:
    """Most bytes live at any one step: a lower bound on any plan's size (in-place aliases count once)."""
    life = lifetimes(graph)
    return _peak(_buffers(graph, life, _aliases(graph, life)), len(graph.nodes))


def _fit(b: _Buffer, placed: dict[_Buffer, int], alignment: int, cap: int | None, best_fit: bool) -> int:
    """An aligned offset for ``b`` clear of every placed buffer live at the same time.

    Without ``cap``: the lowest gap that fits (or the tightest one, ``best_fit``). With ``cap``:
    the bottom-most or the top-most spot below ``cap``, whichever hugs its edge closer, so that
    neighbours in time alternate between the two ends (optimal on a chain); past ``cap`` if needed.
    """
    busy = sorted((off, off + p.nbytes) for p, off in placed.items()
                  if p.first <= b.last and b.first <= p.last and p.nbytes)
    gaps, cursor = [], 0
    for start, stop in busy:
        if start - cursor >= b.nbytes:
            gaps.append((cursor, start))
        cursor = max(cursor, _align(stop, alignment))
    if cap is None:
        if best_fit and gaps:
            return min(gaps, key=lambda g: (g[1] - g[0], g[0]))[0]
        return gaps[0][0] if gaps else cursor
    gaps.append((cursor, max(cap, cursor + b.nbytes)))
    low = gaps[0][0]
    for start, stop in reversed(gaps):
        high = (min(stop, cap) - b.nbytes) // alignment * alignment
        if high >= start:
            return high if cap - (high + b.nbytes) < low else low
    return low


def _layout(order: list[_Buffer], alignment: int, cap: int | None, best_fit: bool = False) -> dict[_Buffer, int]:
    placed: dict[_Buffer, int] = {}
    for b in order:
        placed[b] = _fit(b, placed, alignment, cap, best_fit)
    return placed


def plan_arena(graph: Graph, alignment: int = 16) -> ArenaPlan:
    """Plan offsets for every activation tensor of ``graph``, keeping the smallest of several greedy layouts."""
    if alignment < 1:
        raise ValueError(f"alignment must be positive, got {alignment}")
    life = lifetimes(graph)
    aliases = _aliases(graph, life)
    buffers = _buffers(graph, life, aliases)
    orderings = [
        sorted(buffers, key=lambda b: (-b.nbytes, b.first)),
        sorted(buffers, key=lambda b: (-b.nbytes * (b.last - b.first + 1), b.first)),
        sorted(buffers, key=lambda b: (-(b.last - b.first), -b.nbytes, b.first)),
        sorted(buffers, key=lambda b: (b.first, -b.nbytes)),
    ]
    n = len(graph.nodes)
    caps = {_align(_peak(buffers, n), alignment), _peak(buffers, n, alignment)}
    layouts = [_layout(order, alignment, None, best_fit) for order in orderings for best_fit in (False, True)]
    layouts += [_layout(order, alignment, cap) for order in orderings for cap in sorted(caps)]
    best = min(layouts, key=lambda placed: max((off + b.nbytes for b, off in placed.items()), default=0))
    size = max((off + b.nbytes for b, off in best.items()), default=0)
    offsets = {t: off for b, off in best.items() for t in b.tensors}
    return ArenaPlan(size, dict(sorted(offsets.items())), life, aliases, alignment)


def check_plan(graph: Graph, plan: ArenaPlan) -> None:
    """Raise ValueError naming the tensors if ``plan`` is not a valid arena layout for ``graph``."""
    def name(t: int) -> str:
        return f"tensor {t} '{graph.tensor(t).name}'"

    life = lifetimes(graph)
    if plan.lifetimes != life:
        raise ValueError("plan lifetimes do not match the graph's execution order (plan for another graph?)")
    for t in life:
        if t not in plan.offsets:
            raise ValueError(f"{name(t)} has no offset")
        off, nbytes = plan.offsets[t], graph.tensor(t).nbytes
        if off < 0 or off % plan.alignment:
            raise ValueError(f"{name(t)} at offset {off} is not {plan.alignment}-byte aligned")
        if off + nbytes > plan.size:
            raise ValueError(f"{name(t)} ends at byte {off + nbytes}, past the arena size {plan.size}")
    allowed = _aliases(graph, life)
    for dst, src in plan.aliases.items():
        if allowed.get(dst) != src:
            raise ValueError(f"{name(dst)} may not take over the bytes of {name(src)}")
        if plan.offsets[dst] != plan.offsets[src]:
            raise ValueError(f"{name(dst)} aliases {name(src)} but sits at another offset")
    shared = set(plan.aliases.items())
    ts = sorted(life)
    for i, a in enumerate(ts):
        a0, a1 = plan.offsets[a], plan.offsets[a] + graph.tensor(a).nbytes
        for b in ts[i + 1:]:
            b0, b1 = plan.offsets[b], plan.offsets[b] + graph.tensor(b).nbytes
            live_together = life[a][0] <= life[b][1] and life[b][0] <= life[a][1]
            if live_together and a0 < b1 and b0 < a1 and a0 < a1 and b0 < b1 and (a, b) not in shared and (b, a) not in shared:
                raise ValueError(f"{name(a)} (bytes {a0}..{a1}) and {name(b)} (bytes {b0}..{b1}) "
                                 f"overlap while both live")
