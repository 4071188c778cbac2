"""Static arena planner: one byte offset per activation tensor, chosen ahead of time.

Lifetimes come from execution order; tensors live at the same step get disjoint bytes, with two
exceptions at a node where an input dies:
- ``INPLACE`` ops (RESHAPE; same-shape elementwise ADD, MUL, activations, int-to-int QUANTIZE)
  write their output over that input at the same offset (an alias);
- windowed ops (CONV_2D, DEPTHWISE_CONV_2D, pools) may start their output ``shift`` bytes below
  the input's start, ``shift`` derived from the op geometry (``min_shift``) so that no write lands
  on an input byte still to be read: the overlap contract in firmware/include/mcuq_kernels.h.
Several greedy layouts are tried (largest-first lowest fit, the usual floor; a two-ended fit
under the lower bound, optimal on chains; time-ordered layouts that slide each output under its
input) and the smallest arena is kept. ``check_plan`` verifies any plan against the graph,
re-deriving lifetimes and the overlap rule pixel by pixel, independently of how it was made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from mcuq.ir import NO_TENSOR, Graph, Node, Op
from mcuq.simulate.common import output_size_and_padding

# The overlap contract (mcuq_kernels.h): windowed kernels produce output pixels in raster order
# (batch, row, column), in runs of at most BLOCK_PIXELS; a run's output bytes may be written at
# any time while the run's input windows are read, and never again afterwards.
BLOCK_PIXELS = 4
# Depthwise kernels keep that order only when one pass over the pixels covers every channel:
# the planner overlaps a depthwise layer only with depth multiplier 1, channels a multiple of 4
# and channels x taps at most this (the DSP path's one-chunk bound, 2 x MCUQ_DSP_BLOCK_WORDS / 2).
DEPTHWISE_ONE_PASS = 1280
WINDOWED = (Op.CONV_2D, Op.DEPTHWISE_CONV_2D, Op.AVERAGE_POOL_2D, Op.MAX_POOL_2D)


def _same_shape_inputs(node: Node) -> list[tuple[int, int]]:
    return [(t, node.outputs[0]) for t in node.inputs if t != NO_TENSOR]


# Op -> (input, output) tensor pairs whose bytes may be shared when the input dies at the node.
# The kernel reads each input element before writing the output element at the same address
# (mcuq_kernels.h says "in place" for each); _aliases also requires equal shape and dtype
# (RESHAPE: output not larger), so broadcast operands never alias.
INPLACE: dict[Op | str, Callable[[Node], Iterable[tuple[int, int]]]] = {
    Op.RESHAPE: lambda node: [(node.inputs[0], node.outputs[0])],
    Op.ADD: _same_shape_inputs,
    Op.MUL: _same_shape_inputs,
    Op.LOGISTIC: lambda node: [(node.inputs[0], node.outputs[0])],
    Op.TANH: lambda node: [(node.inputs[0], node.outputs[0])],
    Op.QUANTIZE: lambda node: [(node.inputs[0], node.outputs[0])],
}


@dataclass(frozen=True)
class ArenaPlan:
    """Where each activation tensor lives in one arena of ``size`` bytes.

    ``lifetimes`` maps a tensor to (first node, last node) that touches it; -1 means "before node
    0" (graph inputs), len(nodes) means "after the last node" (graph outputs). ``aliases`` maps a
    tensor to the tensor whose bytes it takes over in place (same offset). ``overlaps`` maps a
    windowed op's output to the input whose bytes it partly takes over (starting at least
    ``min_shift`` bytes below it).
    """

    size: int
    offsets: dict[int, int]
    lifetimes: dict[int, tuple[int, int]]
    aliases: dict[int, int]
    alignment: int
    overlaps: dict[int, int]


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


@dataclass(frozen=True)
class Window:
    """Access geometry of a windowed op's input 0 and output 0 (NHWC, bytes per pixel)."""

    batches: int
    in_h: int
    in_w: int
    in_pixel: int
    out_h: int
    out_w: int
    out_pixel: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int]  # top, left


def window(graph: Graph, node: Node) -> Window | None:
    """The window geometry of a CONV_2D / DEPTHWISE_CONV_2D / pool node, or None when the overlap
    contract does not cover it (other ops, not 4-D, depthwise kernels that take several passes)."""
    if node.op not in WINDOWED or not node.inputs or node.inputs[0] == NO_TENSOR or len(node.outputs) != 1:
        return None
    x, y, a = graph.tensor(node.inputs[0]), graph.tensor(node.outputs[0]), node.attrs
    if len(x.shape) != 4 or len(y.shape) != 4 or x.shape[0] != y.shape[0] or "int4" in (x.dtype, y.dtype):
        return None
    if node.op in (Op.AVERAGE_POOL_2D, Op.MAX_POOL_2D):
        kh, kw, dh, dw = a["filter_h"], a["filter_w"], 1, 1
    else:
        if len(node.inputs) < 2 or node.inputs[1] == NO_TENSOR or len(graph.tensor(node.inputs[1]).shape) != 4:
            return None
        _, kh, kw, _ = graph.tensor(node.inputs[1]).shape
        dh, dw = a["dilation_h"], a["dilation_w"]
        if node.op == Op.DEPTHWISE_CONV_2D and (y.shape[3] != x.shape[3] or x.shape[3] % 4
                                                or x.shape[3] * kh * kw > DEPTHWISE_ONE_PASS):
            return None
    n, h, w, _ = x.shape
    oh, pt = output_size_and_padding(h, kh, a["stride_h"], dh, a["padding"])
    ow, pl = output_size_and_padding(w, kw, a["stride_w"], dw, a["padding"])
    if y.shape[1:3] != (oh, ow):
        return None
    return Window(n, h, w, x.nbytes // (n * h * w), oh, ow, y.nbytes // (n * oh * ow), (kh, kw),
                  (a["stride_h"], a["stride_w"]), (dh, dw), (pt, pl))


def _first_inside(out: int, size: int, kernel: int, stride: int, dilation: int, pad: int) -> np.ndarray:
    """Per output position, the first input position its window reads inside the image (-1: none)."""
    taps = np.arange(out)[:, None] * stride - pad + np.arange(kernel)[None, :] * dilation
    inside = (taps >= 0) & (taps < size)
    return np.where(inside.any(1), np.where(inside, taps, size).min(1), -1)


def min_shift(graph: Graph, node: Node) -> int | None:
    """Fewest bytes a windowed node's output must start below its input for the overlap contract to
    hold (negative: it may even start above), or None when the node may not overlap.

    Output pixels run in raster order; a run of BLOCK_PIXELS starting at pixel s writes up to
    out_start + (s + 4) * out_pixel and must stay below every input byte pixels s.. still read:
    shift >= max over s of (s + 4) * out_pixel - min_{q >= s} first_read(q).
    """
    g = window(graph, node)
    if g is None:
        return None
    fy = _first_inside(g.out_h, g.in_h, g.kernel[0], g.stride[0], g.dilation[0], g.pad[0])
    fx = _first_inside(g.out_w, g.in_w, g.kernel[1], g.stride[1], g.dilation[1], g.pad[1])
    image = np.arange(g.batches)[:, None, None] * g.in_h
    first = ((image + fy[None, :, None]) * g.in_w + fx[None, None, :]) * g.in_pixel
    reads = (fy[None, :, None] >= 0) & (fx[None, None, :] >= 0) & np.ones((g.batches, 1, 1), bool)
    first = np.where(reads, first, np.iinfo(np.int64).max).reshape(-1).astype(np.int64)
    needed = np.minimum.accumulate(first[::-1])[::-1]  # lowest input byte read from pixel s on
    pixels = first.size
    ends = np.minimum(np.arange(pixels) + BLOCK_PIXELS, pixels) * g.out_pixel
    live = needed < np.iinfo(np.int64).max
    return int((ends[live] - needed[live]).max()) if live.any() else -graph.tensor(node.outputs[0]).nbytes


def _aliases(graph: Graph, life: dict[int, tuple[int, int]]) -> dict[int, int]:
    """Output -> input pairs that INPLACE allows here: the input dies at the node, same shape and
    dtype (RESHAPE: not smaller)."""
    found: dict[int, int] = {}
    for node in graph.nodes:
        hook = INPLACE.get(node.op)
        for src, dst in hook(node) if hook else ():
            s, d = graph.tensor(src), graph.tensor(dst)
            fits = d.nbytes <= s.nbytes if node.op == Op.RESHAPE else (s.shape, s.dtype) == (d.shape, d.dtype)
            if (src in life and dst in life and dst not in found and src not in found.values()
                    and life[src][1] == node.index and fits):
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


def _rules(graph: Graph, buffers: list[_Buffer]) -> dict[tuple[_Buffer, _Buffer], int]:
    """(input buffer, output buffer) -> min_shift for windowed nodes where the input's bytes die."""
    of = {t: b for b in buffers for t in b.tensors}
    rules = {}
    for node in graph.nodes:
        if node.op in WINDOWED and node.inputs and node.inputs[0] in of and node.outputs[0] in of:
            src, dst = of[node.inputs[0]], of[node.outputs[0]]
            if src is not dst and src.last == node.index and dst.first == node.index:
                shift = min_shift(graph, node)
                if shift is not None and shift < dst.nbytes:
                    rules[(src, dst)] = shift
    return rules


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _peak(buffers: list[_Buffer], n_nodes: int, rules: dict[tuple[_Buffer, _Buffer], int],
          alignment: int = 1) -> int:
    """Most bytes live at one step, an overlapping pair counted as the least bytes it can span."""
    saved = {}
    for (src, dst), shift in rules.items():
        a, b = _align(src.nbytes, alignment), _align(dst.nbytes, alignment)
        saved[dst.first] = max(saved.get(dst.first, 0), a + b - max(a + max(shift, 0), b))
    steps = range(-1, n_nodes + 1)
    return max((sum(_align(b.nbytes, alignment) for b in buffers if b.first <= s <= b.last) - saved.get(s, 0)
                for s in steps), default=0)


def peak_live_bytes(graph: Graph) -> int:
    """Most bytes live at any one step, in-place aliases counted once and each windowed output over
    its dying input at the least span its min_shift allows: a lower bound on any plan's size."""
    life = lifetimes(graph)
    buffers = _buffers(graph, life, _aliases(graph, life))
    return _peak(buffers, len(graph.nodes), _rules(graph, buffers))


Placed = dict[_Buffer, int]
Rules = dict[tuple[_Buffer, _Buffer], int]


def _allowed(b: _Buffer, placed: Placed, rules: Rules, alignment: int, floor: int | None) -> list[tuple[float, float]]:
    """Aligned offsets where ``b`` clears every placed buffer live at the same time, as closed
    ranges (ends may be infinite), from ``floor`` up (None: unbounded)."""
    forbidden = []  # open intervals of b's offset
    for p, off in placed.items():
        if p.first <= b.last and b.first <= p.last and p.nbytes and b.nbytes:
            lo, hi = off - b.nbytes, off + p.nbytes
            if (p, b) in rules:  # b is p's windowed output: it may start rules[..] below p
                lo = off - min(b.nbytes, rules[(p, b)])
            elif (b, p) in rules:  # b is the input of p: p may start rules[..] below b
                hi = off + min(p.nbytes, rules[(b, p)])
            if lo < hi:
                forbidden.append((lo, hi))
    ranges, x = [], -np.inf if floor is None else floor
    for lo, hi in sorted(forbidden):
        if lo >= x:
            ranges.append((x, lo))
        x = max(x, hi)
    ranges.append((x, np.inf))
    out = []
    for s, e in ranges:
        s2 = s if s == -np.inf else _align(int(s), alignment)
        e2 = e if e == np.inf else int(e) // alignment * alignment
        if s2 <= e2:
            out.append((s2, e2))
    return out


def _fit(b: _Buffer, placed: Placed, rules: Rules, alignment: int, cap: int | None, best_fit: bool) -> int:
    """An aligned offset for ``b`` from 0 up, clear of every placed buffer live at the same time.

    Without ``cap``: the lowest spot (or the tightest gap, ``best_fit``). With ``cap``: the
    bottom-most or the top-most spot below ``cap``, whichever hugs its edge closer, so that
    neighbours in time alternate between the two ends (optimal on a chain); past ``cap`` if needed.
    """
    ranges = _allowed(b, placed, rules, alignment, 0)
    low = int(ranges[0][0])
    if cap is None:
        finite = [r for r in ranges if r[1] != np.inf]
        if best_fit and finite:
            return int(min(finite, key=lambda r: (r[1] - r[0], r[0]))[0])
        return low
    for s, e in reversed(ranges):
        high = min(e, (cap - b.nbytes) // alignment * alignment)
        if high >= s:
            return int(high) if cap - (high + b.nbytes) < low else low
    return low


def _slide(b: _Buffer, placed: Placed, rules: Rules, alignment: int, prefer_high: bool) -> int:
    """An aligned offset (unbounded) for ``b`` that widens the layout least; on a tie, right under
    its windowed input or right over its windowed output, then the lower (higher) spot."""
    if not placed:
        return 0
    ranges = _allowed(b, placed, rules, alignment, None)
    wanted = [(off - shift) // alignment * alignment for (p, q), shift in rules.items()
              if q is b and (off := placed.get(p)) is not None]
    wanted += [_align(off + shift, alignment) for (p, q), shift in rules.items()
               if p is b and (off := placed.get(q)) is not None]
    lo = min(placed.values())
    hi = max(off + p.nbytes for p, off in placed.items())
    best = None
    for s, e in ranges:
        for x in (*wanted, lo, hi - b.nbytes, s, e):
            if x in (np.inf, -np.inf):
                continue
            x = min(max(x, s), e)
            x = _align(int(x), alignment) if _align(int(x), alignment) <= e else int(x) // alignment * alignment
            if not s <= x <= e:
                continue
            key = (max(hi, x + b.nbytes) - min(lo, x), x not in wanted, -x if prefer_high else x)
            if best is None or key < best[0]:
                best = (key, x)
    return best[1]


def _layout(order: list[_Buffer], rules: Rules, alignment: int, cap: int | None,
            best_fit: bool = False) -> Placed:
    placed: Placed = {}
    for b in order:
        placed[b] = _fit(b, placed, rules, alignment, cap, best_fit)
    return placed


def _slide_layout(order: list[_Buffer], rules: Rules, alignment: int, prefer_high: bool) -> Placed:
    placed: Placed = {}
    for b in order:
        placed[b] = _slide(b, placed, rules, alignment, prefer_high)
    base = min(placed.values(), default=0)
    return {b: off - base for b, off in placed.items()}


def _chain_layout(buffers: list[_Buffer], rules: Rules, alignment: int, low: int, high: int) -> Placed | None:
    """The smallest layout when every buffer lives at the same time as its neighbours in time
    only (a chain of layers; None otherwise): bisection on the arena size, each size checked by
    one pass that keeps the offsets each buffer can take (two ranges: under its predecessor, or
    over it), then offsets picked backwards."""
    chain = sorted((b for b in buffers if b.nbytes), key=lambda b: (b.first, b.last))
    if any(b.first <= a.last for i, a in enumerate(chain) for b in chain[i + 2:]):
        return None
    # (most a successor may start below its predecessor's start, least above it), None: no constraint
    steps = [None if a.last < b.first else (min(rules.get((a, b), b.nbytes), b.nbytes), a.nbytes)
             for a, b in zip(chain, chain[1:])]

    def ranges(size: int) -> list[list[tuple[int, int]]] | None:
        top = [(size - b.nbytes) // alignment * alignment for b in chain]
        found = [[(0, top[0])]] if chain and top[0] >= 0 else []
        for k, step in enumerate(steps):
            lo, hi = min(r[0] for r in found[-1]), max(r[1] for r in found[-1])
            cand = [(0, top[k + 1])] if step is None else [
                (0, min(top[k + 1], (hi - step[0]) // alignment * alignment)), (_align(lo + step[1], alignment), top[k + 1])]
            cand = [(a, b) for a, b in cand if a <= b]
            if not cand:
                return None
            found.append(cand)
        return found if len(found) == len(chain) else None

    if not chain or ranges(high) is None:
        return None
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if ranges(mid) is not None else (mid + 1, high)
    found = ranges(high)
    x = found[-1][0][0]
    placed = {chain[-1]: x}
    for k in range(len(chain) - 2, -1, -1):
        step, (lo, hi) = steps[k], (min(r[0] for r in found[k]), max(r[1] for r in found[k]))
        if step is None:
            x = lo
        else:
            x = hi if hi >= x + step[0] else lo
            assert hi >= placed[chain[k + 1]] + step[0] or lo <= placed[chain[k + 1]] - step[1]
        placed[chain[k]] = x
    placed.update({b: 0 for b in buffers if not b.nbytes})
    return placed


def plan_arena(graph: Graph, alignment: int = 16) -> ArenaPlan:
    """Plan offsets for every activation tensor of ``graph``, keeping the smallest of several greedy layouts."""
    if alignment < 1:
        raise ValueError(f"alignment must be positive, got {alignment}")
    life = lifetimes(graph)
    aliases = _aliases(graph, life)
    buffers = _buffers(graph, life, aliases)
    rules = _rules(graph, buffers)
    orderings = [
        sorted(buffers, key=lambda b: (-b.nbytes, b.first)),
        sorted(buffers, key=lambda b: (-b.nbytes * (b.last - b.first + 1), b.first)),
        sorted(buffers, key=lambda b: (-(b.last - b.first), -b.nbytes, b.first)),
        sorted(buffers, key=lambda b: (b.first, -b.nbytes)),
    ]
    n = len(graph.nodes)
    caps = {_align(_peak(buffers, n, rules), alignment), _peak(buffers, n, rules, alignment)}
    layouts = [_layout(order, rules, alignment, None, best_fit) for order in orderings for best_fit in (False, True)]
    layouts += [_layout(order, rules, alignment, cap) for order in orderings for cap in sorted(caps)]
    if rules:
        in_time = sorted(buffers, key=lambda b: (b.first, -b.nbytes))
        backwards = sorted(buffers, key=lambda b: (-b.last, -b.nbytes))
        layouts += [_slide_layout(order, rules, alignment, high) for order in (in_time, backwards, orderings[0])
                    for high in (False, True)]
    best = min(layouts, key=lambda placed: max((off + b.nbytes for b, off in placed.items()), default=0))
    if rules:
        size = max((off + b.nbytes for b, off in best.items()), default=0)
        chain = _chain_layout(buffers, rules, alignment, _peak(buffers, n, rules), size)
        best = chain if chain is not None and max(o + b.nbytes for b, o in chain.items()) < size else best
    size = max((off + b.nbytes for b, off in best.items()), default=0)
    offsets = {t: off for b, off in best.items() for t in b.tensors}
    overlaps = {}
    for src, dst in rules:
        a, b = best[src], best[dst]
        if a < b + dst.nbytes and b < a + src.nbytes:
            node = graph.nodes[dst.first]
            overlaps[node.outputs[0]] = node.inputs[0]
    return ArenaPlan(size, dict(sorted(offsets.items())), life, aliases, alignment, overlaps)


def _overlap_safe(graph: Graph, node: Node, in_start: int, out_start: int) -> bool:
    """The overlap contract, pixel by pixel: for every run of BLOCK_PIXELS output pixels starting
    at pixel s, its output bytes end at or below every input byte that pixels s.. read."""
    g = window(graph, node)
    if g is None:
        return False
    (kh, kw), (sh, sw), (dh, dw), (pt, pl) = g.kernel, g.stride, g.dilation, g.pad
    lowest_read = []
    for b in range(g.batches):
        for oy in range(g.out_h):
            for ox in range(g.out_w):
                rows = [oy * sh - pt + ky * dh for ky in range(kh) if 0 <= oy * sh - pt + ky * dh < g.in_h]
                cols = [ox * sw - pl + kx * dw for kx in range(kw) if 0 <= ox * sw - pl + kx * dw < g.in_w]
                lowest_read.append(in_start + ((b * g.in_h + rows[0]) * g.in_w + cols[0]) * g.in_pixel
                                   if rows and cols else None)
    pixels, still_read = len(lowest_read), None
    for s in range(pixels - 1, -1, -1):
        if lowest_read[s] is not None:
            still_read = lowest_read[s] if still_read is None else min(still_read, lowest_read[s])
        written_to = out_start + min(s + BLOCK_PIXELS, pixels) * g.out_pixel
        if still_read is not None and written_to > still_read:
            return False
    return True


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
    writer = {t: n for n in graph.nodes for t in n.outputs}
    ts = sorted(life)
    for i, a in enumerate(ts):
        a0, a1 = plan.offsets[a], plan.offsets[a] + graph.tensor(a).nbytes
        for b in ts[i + 1:]:
            b0, b1 = plan.offsets[b], plan.offsets[b] + graph.tensor(b).nbytes
            live_together = life[a][0] <= life[b][1] and life[b][0] <= life[a][1]
            if not (live_together and a0 < b1 and b0 < a1 and a0 < a1 and b0 < b1) or {(a, b), (b, a)} & shared:
                continue
            src, dst = (a, b) if b in writer and writer[b].inputs[:1] == (a,) else (b, a)
            node = writer.get(dst)
            if not (node is not None and node.inputs[:1] == (src,) and life[src][1] == node.index
                    and life[dst][0] == node.index and src not in graph.outputs
                    and _overlap_safe(graph, node, plan.offsets[src], plan.offsets[dst])):
                raise ValueError(f"{name(a)} (bytes {a0}..{a1}) and {name(b)} (bytes {b0}..{b1}) "
                                 f"overlap while both live")
