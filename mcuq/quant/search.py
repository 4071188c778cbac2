"""Per-layer weight bitwidth search under an accuracy budget (post-training, Goyal et al.).

Every candidate configuration is judged on the whole network (integer simulator against the
float outputs of the search samples), so interactions between layers count. Greedy: first each
layer alone at 4 bits (its sensitivity), then layers in order of least sensitivity (ties: most
bytes saved first) are switched to 4 bits one at a time, kept when the whole network still meets
the budget. A layer that alone breaks the budget is not tried again. 1 + 2L evaluations at most.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from mcuq.errors import CalibrationError
from mcuq.fixedpoint import quantize_real
from mcuq.ir import Graph
from mcuq.quant.build import Plan, build, int4_allowed, weight_bytes
from mcuq.quant.report import BitwidthSearch, is_classification, sqnr
from mcuq.simulate import prepare_graph, run_integer
from mcuq.simulate.floating import dequantize

Warn = Callable[[str], None]
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Budget:
    """How much the integer model may lose against float: ``max_drop`` percentage points of top-1
    agreement with float on the first output (it must be a classifier), or an SQNR floor in dB on
    the first output. Exactly one is given."""

    max_drop: float | None = None
    min_sqnr_db: float | None = None

    def __post_init__(self) -> None:
        if (self.max_drop is None) == (self.min_sqnr_db is None):
            raise ValueError("a Budget takes exactly one of max_drop and min_sqnr_db")
        if self.max_drop is not None and not 0 <= self.max_drop <= 100:
            raise ValueError(f"max_drop {self.max_drop} is not within [0, 100] percentage points")

    def describe(self) -> str:
        if self.max_drop is not None:
            return f"top-1 agreement with float >= {100 - self.max_drop:g} % (max drop {self.max_drop:g} points)"
        return f"output SQNR >= {self.min_sqnr_db:g} dB"

    def met(self, score: float) -> bool:
        if self.max_drop is not None:
            return 100.0 - score <= self.max_drop + 1e-9
        return score >= self.min_sqnr_db


def search_bitwidths(plan: Plan, samples: list[np.ndarray], float_outs: list[list[np.ndarray]],
                     budget: Budget, warn: Warn, progress: Progress | None = None
                     ) -> tuple[Graph, BitwidthSearch]:
    """The integer graph with the fewest weight bytes found that meets ``budget`` on ``samples``.

    ``float_outs`` are the float model's outputs on those samples. When not even all-8-bit
    weights meet the budget, says so through ``warn`` and keeps all-8-bit (the best found).
    """
    fg = plan.fg
    if budget.max_drop is not None and not is_classification(fg, fg.outputs[0]):
        raise CalibrationError(f"{fg.name}: a top-1 budget (max drop) needs a softmax classifier output; "
                               "give an SQNR floor instead")
    candidates = [layer for layer in plan.layers if int4_allowed(layer)]
    total = 1 + 2 * len(candidates)
    cache: dict[frozenset[int], tuple[Graph, float]] = {}

    def evaluate(four: frozenset[int]) -> tuple[Graph, float]:
        if four not in cache:
            qg = build(plan, {k: 4 for k in four}, warn)
            cache[four] = (qg, _score(qg, samples, float_outs, budget))
            if progress:
                progress("bitwidth search", len(cache), total)
        return cache[four]

    base_graph, base = evaluate(frozenset())
    bytes8 = weight_bytes(base_graph)
    if not budget.met(base):
        warn(f"{fg.name}: no weight bitwidths meet the budget ({budget.describe()}): all-8-bit scores "
             f"{base:.2f}; keeping all-8-bit weights, the best found")
        return base_graph, BitwidthSearch(budget.describe(), False, base, base, bytes8, bytes8,
                                              len(cache), ())
    alone = {layer.node: evaluate(frozenset({layer.node})) for layer in candidates}
    saved = {k: bytes8 - weight_bytes(g) for k, (g, _) in alone.items()}
    order = sorted((k for k in alone if budget.met(alone[k][1])), key=lambda k: (-alone[k][1], -saved[k]))
    chosen: frozenset[int] = frozenset()
    best_graph, best = base_graph, base
    for k in order:
        trial = chosen | {k}
        g, score = evaluate(trial)
        if budget.met(score):
            chosen, best_graph, best = trial, g, score
    names = tuple(layer.name for layer in plan.layers if layer.node in chosen)
    return best_graph, BitwidthSearch(
        budget.describe(), True, base, best, bytes8, weight_bytes(best_graph), len(cache), names)


def _score(qg: Graph, samples: list[np.ndarray], float_outs: list[list[np.ndarray]], budget: Budget) -> float:
    """Top-1 agreement % (max_drop budgets) or SQNR dB of the first output over the samples."""
    params = prepare_graph(qg)
    t = qg.output_tensors()[0]
    agree = signal = noise = 0.0
    n = samples[0].shape[0]
    for s in range(n):
        xs = [quantize_real(a[s], x.quant.scale[0], x.quant.zero_point[0], "int8")
              for a, x in zip(samples, qg.input_tensors())]
        q = run_integer(qg, xs, params=params)[0]
        f = float_outs[s][0].astype(np.float64)
        d = dequantize(np.asarray(q), t.quant).astype(np.float64)
        if budget.max_drop is not None:
            agree += float(np.mean(f.argmax(-1) == d.argmax(-1)))
        else:
            signal += float(np.sum(f * f))
            noise += float(np.sum((f - d) ** 2))
    return 100.0 * agree / n if budget.max_drop is not None else sqnr(signal, noise)
