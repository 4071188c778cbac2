"""How well an integer graph reproduces its float model: outputs, every layer, labelled accuracy.

SQNR = 10 log10(sum f^2 / sum (f - dequant(q))^2) over all elements and samples, per output and
per layer output (every node's output tensor, float executor vs integer simulator on the same
samples); top-1 agreement for softmax outputs; float and integer accuracy when labels are given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mcuq.fixedpoint import quantize_real
from mcuq.ir import Graph, Op
from mcuq.quant.accumulator import accumulator_bits
from mcuq.quant.scheme import Scheme
from mcuq.simulate import prepare_graph, run_integer
from mcuq.simulate.floating import dequantize, run_float

Progress = Callable[[str, int, int], None]
_WEIGHT_BITS = {"int8": 8, "int4": 4}


@dataclass(frozen=True)
class OutputAgreement:
    """How well one integer output reproduces the float one over a set of samples."""

    name: str
    sqnr_db: float  # 10 log10(sum f^2 / sum (f - dequant(q))^2); inf when equal
    max_abs_error: float
    top1_agreement_pct: float | None  # classification outputs (softmax, > 1 class) only


@dataclass(frozen=True)
class LayerReport:
    """One node: SQNR of its output, and for weighted layers the weight and accumulator bits."""

    node: int
    op: str
    name: str  # output tensor
    sqnr_db: float
    weight_bits: int | None = None
    accumulator_bits: int | None = None  # worst-case signed bits (mcuq.quant.accumulator)


@dataclass(frozen=True)
class Accuracy:
    """Top-1 accuracy against labels of the float and the integer model, and their agreement."""

    samples: int
    float_pct: float
    integer_pct: float
    agreement_pct: float

    @property
    def drop(self) -> float:
        """Percentage points lost by the integer model."""
        return self.float_pct - self.integer_pct


@dataclass(frozen=True)
class BitwidthSearch:
    """What the per-layer weight bitwidth search found under its budget."""

    budget: str
    met: bool  # False: no configuration met the budget; the best found is kept
    score_8bit: float  # the budget's measure with every layer at 8 bits
    score: float  # and with the chosen bitwidths
    weight_bytes_8bit: int
    weight_bytes: int
    evaluated: int  # whole-network evaluations the search made
    int4_layers: tuple[str, ...]

    @property
    def saved_pct(self) -> float:
        return 100.0 * (1 - self.weight_bytes / self.weight_bytes_8bit) if self.weight_bytes_8bit else 0.0


@dataclass(frozen=True)
class QuantReport:
    """Float vs integer agreement of a quantized model on a sample set (quantize: its calibration
    set, or the evaluation data when given)."""

    model: str
    scheme: Scheme
    samples: int
    calibration: str
    outputs: tuple[OutputAgreement, ...]
    range_method: str = ""
    layers: tuple[LayerReport, ...] = ()
    accuracy: Accuracy | None = None
    bitwidth: BitwidthSearch | None = None
    weight_bytes: int | None = None

    def to_dict(self) -> dict:
        b = self.bitwidth
        return {
            "model": self.model,
            "scheme": str(self.scheme),
            "range_method": self.range_method,
            "samples": self.samples,
            "calibration": self.calibration,
            "weight_bytes": self.weight_bytes,
            "outputs": [
                {"name": o.name, "sqnr_db": json_float(o.sqnr_db), "max_abs_error": o.max_abs_error,
                 "top1_agreement_pct": o.top1_agreement_pct}
                for o in self.outputs
            ],
            "accuracy": None if self.accuracy is None else {
                "samples": self.accuracy.samples, "float_pct": self.accuracy.float_pct,
                "integer_pct": self.accuracy.integer_pct, "agreement_pct": self.accuracy.agreement_pct},
            "layers": [
                {"node": r.node, "op": r.op, "name": r.name, "sqnr_db": json_float(r.sqnr_db),
                 "weight_bits": r.weight_bits, "accumulator_bits": r.accumulator_bits}
                for r in self.layers
            ],
            "bitwidth_search": None if b is None else {
                "budget": b.budget, "met": b.met, "score_8bit": b.score_8bit, "score": b.score,
                "weight_bytes_8bit": b.weight_bytes_8bit, "weight_bytes": b.weight_bytes,
                "saved_pct": b.saved_pct, "evaluated": b.evaluated, "int4_layers": list(b.int4_layers)},
        }

    def format(self) -> str:
        method = f", range {self.range_method}" if self.range_method else ""
        lines = [f"quantization ({self.scheme}{method}) of {self.model}: {self.samples} samples, "
                 f"{self.calibration}",
                 f"  {'output':<28} {'SQNR dB':>8} {'max |err|':>10} {'top-1 agree':>12}"]
        for o in self.outputs:
            top1 = "-" if o.top1_agreement_pct is None else f"{o.top1_agreement_pct:.1f} %"
            lines.append(f"  {o.name[:28]:<28} {o.sqnr_db:>8.2f} {o.max_abs_error:>10.4g} {top1:>12}")
        a = self.accuracy
        if a is not None:
            lines.append(f"  accuracy on {a.samples} labelled samples: float {a.float_pct:.2f} %, "
                         f"integer {a.integer_pct:.2f} % (drop {a.drop:.2f} points), "
                         f"top-1 agreement {a.agreement_pct:.2f} %")
        b = self.bitwidth
        if b is not None:
            verdict = "met" if b.met else "NOT met, best found kept"
            lines.append(f"  bitwidth search ({b.budget}, {verdict}): {len(b.int4_layers)} layer(s) at 4 bits, "
                         f"weights {b.weight_bytes:,} B vs {b.weight_bytes_8bit:,} B all-8-bit "
                         f"({b.saved_pct:.1f} % saved); score {b.score:.2f} vs {b.score_8bit:.2f}")
        if self.layers:
            lines.append(f"  {'#':>3} {'op':<18} {'output':<28} {'SQNR dB':>8} {'w bits':>6} {'acc bits':>8}")
            for r in self.layers:
                wb = "-" if r.weight_bits is None else str(r.weight_bits)
                ab = "-" if r.accumulator_bits is None else str(r.accumulator_bits)
                lines.append(f"  {r.node:>3} {r.op[:18]:<18} {r.name[:28]:<28} {r.sqnr_db:>8.2f} {wb:>6} {ab:>8}")
        return "\n".join(lines)


def plot_sqnr(report: QuantReport, path: str | Path) -> Path:
    """A PNG bar chart of per-layer SQNR (matplotlib, Agg backend); returns the path written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    path = Path(path)
    rows = report.layers
    finite = [r.sqnr_db for r in rows if math.isfinite(r.sqnr_db)]
    top = max(finite, default=60.0) + 10.0
    values = [min(max(r.sqnr_db, 0.0), top) for r in rows]
    colors = ["tab:orange" if r.weight_bits == 4 else "tab:blue" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(rows) + 2), 4.0))
    ax.bar(range(len(rows)), values, color=colors)
    ax.legend(handles=[Patch(color="tab:blue", label="8-bit or no weights"),
                       Patch(color="tab:orange", label="4-bit weights")], fontsize=7, loc="lower right")
    ax.set_xticks(range(len(rows)), [f"{r.node} {r.op}" for r in rows], rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("SQNR (dB), float vs integer")
    title = f"{report.model}: {report.scheme}"
    if report.accuracy is not None:
        title += f", accuracy {report.accuracy.integer_pct:.1f} % (float {report.accuracy.float_pct:.1f} %)"
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path


def measure(fg: Graph, qg: Graph, samples: list[np.ndarray], labels: np.ndarray | None, scheme: Scheme,
            how: str, progress: Progress | None, per_layer: bool = True, **extra) -> QuantReport:
    """Run float and integer graphs sample by sample: output agreement, per-layer SQNR, accuracy.

    With ``per_layer``, ``qg`` has ``fg``'s nodes in the same order (quantize keeps them), so
    node k's output in one is node k's output in the other.
    """
    n = samples[0].shape[0]
    k = len(qg.outputs)
    signal, noise, max_err = np.zeros(k), np.zeros(k), np.zeros(k)
    agree, rows = np.zeros(k), np.zeros(k)
    lsig, lnoise = np.zeros(len(qg.nodes)), np.zeros(len(qg.nodes))
    classify = [is_classification(fg, i) for i in fg.outputs]
    right_f = right_q = same = 0
    params = prepare_graph(qg)
    for s in range(n):
        xs = [quantize_real(a[s], t.quant.scale[0], t.quant.zero_point[0], "int8")
              for a, t in zip(samples, qg.input_tensors())]
        iv = run_integer(qg, xs, params=params, all_tensors=True)
        fv = run_float(fg, [a[s] for a in samples], all_tensors=True)
        for j, (fn, qn) in enumerate(zip(fg.nodes, qg.nodes) if per_layer else ()):
            f = fv[fn.outputs[0]].astype(np.float64)
            t = qg.tensor(qn.outputs[0])
            d = dequantize(np.asarray(iv[t.index]), t.quant).astype(np.float64)
            lsig[j] += float(np.sum(f * f))
            lnoise[j] += float(np.sum((f - d) ** 2))
        for o, (fi, t) in enumerate(zip(fg.outputs, qg.output_tensors())):
            f = fv[fi].astype(np.float64)
            d = dequantize(np.asarray(iv[t.index]), t.quant).astype(np.float64)
            signal[o] += float(np.sum(f * f))
            noise[o] += float(np.sum((f - d) ** 2))
            max_err[o] = max(max_err[o], float(np.abs(f - d).max(initial=0.0)))
            if classify[o]:
                agree[o] += int(np.sum(f.argmax(-1) == d.argmax(-1)))
                rows[o] += f.size // f.shape[-1]
            if o == 0 and labels is not None:
                pf, pq = int(f.reshape(-1).argmax()), int(d.reshape(-1).argmax())
                right_f += pf == labels[s]
                right_q += pq == labels[s]
                same += pf == pq
        if progress:
            progress("compare", s + 1, n)
    outputs = tuple(
        OutputAgreement(t.name, sqnr(signal[o], noise[o]), float(max_err[o]),
                        100.0 * agree[o] / rows[o] if classify[o] else None)
        for o, t in enumerate(qg.output_tensors())
    )
    acc_bits = {a.node: a.bits for a in accumulator_bits(qg)}
    layers = tuple(
        LayerReport(j, str(node.op), qg.tensor(node.outputs[0]).name, sqnr(lsig[j], lnoise[j]),
                    _WEIGHT_BITS.get(qg.tensor(node.inputs[1]).dtype) if j in acc_bits else None,
                    acc_bits.get(j))
        for j, node in enumerate(qg.nodes if per_layer else ())
    )
    acc = None
    if labels is not None:
        acc = Accuracy(n, 100.0 * right_f / n, 100.0 * right_q / n, 100.0 * same / n)
    return QuantReport(fg.name, scheme, n, how, outputs, layers=layers, accuracy=acc, **extra)


def is_classification(g: Graph, i: int) -> bool:
    """A softmax output (possibly reshaped) over more than one class."""
    producers = g.producers()
    node = producers.get(i)
    while node is not None and node.op == Op.RESHAPE:
        node = producers.get(node.inputs[0])
    shape = g.tensor(i).shape
    return node is not None and node.op == Op.SOFTMAX and bool(shape) and shape[-1] > 1


def sqnr(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)


def json_float(v: float) -> float | str:
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")
