"""Accuracy and memory of float vs tflite vs pow2 vs pow2 with per-layer bitwidth search.

Models: the digits CNN trained on the spot (examples/digits_cnn.py, scikit-learn's 8x8 digits,
labelled held-out split) and the shared float models ad01_fp32, pretrainedResnet, vww_96_float
(synthetic seeded inputs as in bench/quant_report.py: no labelled data sets ship with them, so
their figure is top-1 agreement with float, or output SQNR for the autoencoder). For each
configuration: the figure on held-out data, weight bytes (int4 packed two per byte), arena
bytes (mcuq.plan.plan_arena), whether tflite-micro runs the written model bit-exactly like
the simulator, and instructions per inference and flash bytes on the emulated Cortex-M7 (the
quantized graph written as .tflite, packed, built, flashed to QEMU and run by `mcuq verify`,
bit-exact or the script stops; int4 weights run on the firmware's s8_s4 kernels, packed two per
byte in flash). Writes bench/results/accuracy.json and docs/accuracy.md.

    python bench/accuracy.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import digits_cnn  # noqa: E402
from _common import MODELS, RESULTS, ROOT, print_table, run_on_target, write_results  # noqa: E402
from quant_report import _commit, _write, smooth, tflm_check, uniform  # noqa: E402

from mcuq import __version__  # noqa: E402
from mcuq.ir import Graph  # noqa: E402
from mcuq.plan import plan_arena  # noqa: E402
from mcuq.quant import (  # noqa: E402
    Budget, EvalData, QuantResult, RangeMethod, Scheme, evaluate, plot_sqnr, quantize,
)
from mcuq.quant.build import weight_bytes  # noqa: E402
from mcuq.reader import read_model  # noqa: E402
from mcuq.writer import write_model  # noqa: E402

CALIB_SAMPLES = 32
EVAL_SAMPLES = 32
TFLM_SAMPLES = 2
MAX_DROP = 1.0  # bitwidth budget with real data: points of top-1 agreement with float (calibration set)
SQNR_MARGIN = 3.0  # with synthetic data: the all-8-bit pow2 output SQNR minus this, in dB
RESULTS_PLOTS = ROOT / "bench" / "results"
BOARD = "qemu-m7"
TARGET_INPUTS = 1  # seeded random inputs per configuration on the target (each checked bit-exact)
COUNTER = "instructions (SysTick under QEMU -icount shift=0; resolution 40 per layer)"
NO_FLOAT = "float model: the firmware runs integer-only graphs"


@dataclass(frozen=True)
class Case:
    """A float model with calibration and held-out data (labels where they exist)."""

    name: str
    graph: Graph
    calib: np.ndarray
    held: np.ndarray
    labels: np.ndarray | None
    data: str
    classifier: bool


def digits_case() -> Case:
    rng = np.random.default_rng(0)
    xtr, ytr, xte, yte = digits_cnn.load_digits_split(0)
    net = digits_cnn.Net(rng)
    net.train(xtr, ytr, 12, rng)
    return Case("digits_cnn", net.to_graph(), xtr[:256, None], xte[:, None], yte,
                "sklearn digits: 256 training images calibrate, 360 held-out labelled test images", True)


def shared_case(name: str, domain: tuple[float, float], draw: Callable, classifier: bool) -> Case | None:
    path = next(iter(sorted(MODELS.glob(f"*/{name}.tflite"))), None)
    if path is None:
        print(f"skip {name}: not under {MODELS}", file=sys.stderr)
        return None
    g = read_model(path)
    shape = g.input_tensors()[0].shape
    calib = draw(np.random.default_rng(0), CALIB_SAMPLES, shape, *domain)
    held = draw(np.random.default_rng(1), EVAL_SAMPLES, shape, *domain)
    return Case(name, g, calib, held, None, f"synthetic {draw.__name__} inputs in [{domain[0]:g}, {domain[1]:g}], "
                f"{CALIB_SAMPLES} calibrate, {EVAL_SAMPLES} held out", classifier)


def figure(case: Case, r: QuantResult, heldout: bool = False) -> dict:
    """The held-out figure of a configuration: accuracy (labels), top-1 agreement or output SQNR.

    A report quantize measured on the labelled held-out data is reused unless ``heldout``."""
    rep = r.report
    if case.labels is None or heldout:
        rep = evaluate(case.graph, r.graph, [case.held], "held-out data", labels=case.labels)
    out = rep.outputs[0]
    d = {"sqnr_db": out.sqnr_db, "top1_agreement_pct": out.top1_agreement_pct}
    if rep.accuracy is not None:
        d.update(accuracy_pct=rep.accuracy.integer_pct, float_accuracy_pct=rep.accuracy.float_pct,
                 agreement_pct=rep.accuracy.agreement_pct)
    return d


def budget_for(case: Case, pow2: QuantResult) -> Budget:
    """Top-1 budget where the data are real; an SQNR floor on synthetic inputs, where a few dozen
    samples make top-1 agreement too coarse (one sample = 3 points) and often trivial."""
    if case.labels is not None:
        return Budget(max_drop=MAX_DROP)
    return Budget(min_sqnr_db=round(pow2.report.outputs[0].sqnr_db - SQNR_MARGIN, 1))


def on_target(qg: Graph, name: str) -> dict:
    """Instructions per inference of ``qg`` on qemu-m7 and the flash its firmware takes: the
    whole image, and the packed model alone (weights, per-node params, tables).

    The graph is written as .tflite, packed, built, flashed and run on TARGET_INPUTS seeded
    random inputs by `mcuq verify`; anything not bit-exact stops the script (run_on_target)."""
    with tempfile.TemporaryDirectory(prefix="mcuq-accuracy-") as work:
        path = Path(work) / f"{name}.tflite"
        path.write_bytes(write_model(qg))
        run = run_on_target(path, BOARD, Path(work) / name, TARGET_INPUTS,
                            warn=lambda s: print(f"{name}: {s}", file=sys.stderr))
    print(f"{name}: {round(run.result.total):,} instructions per inference on {BOARD}", file=sys.stderr)
    b = run.built
    return {"instructions": round(run.result.total), "flash_bytes": b.flash_used,
            "model_flash_bytes": b.flash_used - b.code_used}


def measure(case: Case) -> dict:
    said: list[str] = []
    ev = EvalData((case.held,), case.labels) if case.labels is not None else None
    runs: dict[str, QuantResult] = {}
    for scheme in (Scheme.TFLITE, Scheme.POW2):
        runs[str(scheme)] = quantize(case.graph, [case.calib], scheme, warn=said.append, eval_data=ev)
    budget = budget_for(case, runs["pow2"])
    runs["pow2+bits"] = quantize(case.graph, [case.calib], Scheme.POW2, warn=said.append, eval_data=ev,
                                 budget=budget)
    float_fig: dict = {"top1_agreement_pct": 100.0} if case.classifier else {"sqnr_db": "inf"}
    if case.labels is not None:
        float_fig = {"accuracy_pct": runs["tflite"].report.accuracy.float_pct}
    configs = [{"config": "float", **float_fig, "weight_bytes": sum(t.nbytes for t in case.graph.tensors if t.is_const),
                "arena_bytes": plan_arena(case.graph).size, "instructions": None, "flash_bytes": None,
                "instructions_not_measured": NO_FLOAT, "tflm_bit_exact": None}]
    for name, r in runs.items():
        qg = r.graph
        if case.labels is not None:  # plots of the labelled model only: a few PNGs in the repository
            plot_sqnr(r.report, RESULTS_PLOTS / f"accuracy_{case.name}_{name.replace('+', '_')}.png")
        configs.append({
            "config": name, **figure(case, r), "weight_bytes": weight_bytes(qg),
            "arena_bytes": plan_arena(qg).size, **on_target(qg, f"{case.name}_{name.replace('+', '_')}"),
            "tflm_bit_exact": tflm_check(qg, case.held[:TFLM_SAMPLES]),
            "report": r.report.to_dict(),
            "max_accumulator_bits": max((a.bits for a in r.accumulators), default=None),
        })
    return {"model": case.name, "data": case.data, "budget": budget.describe(), "warnings": said,
            "configs": configs}


def ablation(case: Case) -> list[dict]:
    """Held-out figures of each scheme x range method x bias correction (8-bit weights)."""
    rows = []
    for scheme in Scheme:
        for method in (RangeMethod.MINMAX, RangeMethod.MSE):
            for bc in (False, True):
                r = quantize(case.graph, [case.calib], scheme, warn=lambda s: None, range_method=method,
                             bias_correction=bc)
                rows.append({"scheme": str(scheme), "range_method": str(method), "bias_correction": bc,
                             **figure(case, r, heldout=True)})
    return rows


def run() -> dict:
    cases = [digits_case(),
             shared_case("ad01_fp32", (-84.85, 14.86), uniform, False),
             shared_case("pretrainedResnet", (0.0, 255.0), smooth, True),
             shared_case("vww_96_float", (0.0, 1.0), smooth, True)]
    entries = []
    for case in cases:
        if case is not None:
            print(case.name, file=sys.stderr)
            entries.append({**measure(case), "ablation": ablation(case)})
    return {"mcuq_version": __version__, "commit": _commit(), "numpy": np.__version__,
            "calib_samples": CALIB_SAMPLES, "eval_samples": EVAL_SAMPLES,
            "target": {"board": BOARD, "inputs_per_config": TARGET_INPUTS, "counter": COUNTER,
                       "firmware_uncommitted": _firmware_changes()},
            "models": entries}


def _firmware_changes() -> list[str]:
    """Files under firmware/ that differ from the commit (the instruction counts include them)."""
    out = subprocess.run(["git", "status", "--porcelain", "--", "firmware"], cwd=ROOT, capture_output=True,
                         text=True)
    return sorted(line[3:] for line in out.stdout.splitlines())


def _fig(c: dict) -> str:
    if "accuracy_pct" in c:
        return f"{c['accuracy_pct']:.2f} % acc."
    if c.get("top1_agreement_pct") is not None:
        return f"{c['top1_agreement_pct']:.1f} % agree"
    v = c["sqnr_db"]
    return f"{v:.1f} dB" if isinstance(v, float) else f"{v} dB"


def _table_rows(results: dict) -> list[list]:
    rows = []
    for e in results["models"]:
        for c in e["configs"]:
            exact = c["tflm_bit_exact"]
            rep = c.get("report") or {}
            b = rep.get("bitwidth_search")
            rows.append([e["model"], c["config"], _fig(c),
                         "-" if c.get("sqnr_db") in (None, "inf") else f"{c['sqnr_db']:.1f}",
                         c["weight_bytes"], c["arena_bytes"],
                         "-" if b is None else f"{len(b['int4_layers'])} int4, {b['saved_pct']:.1f} % saved"
                         + ("" if b["met"] else " (budget NOT met)"),
                         "-" if c.get("max_accumulator_bits") is None else c["max_accumulator_bits"],
                         "-" if exact is None else f"{exact['tensors_equal']}/{exact['tensors_compared']}",
                         "-" if c["instructions"] is None else c["instructions"],
                         "-" if c["flash_bytes"] is None else c["flash_bytes"],
                         "-" if c["flash_bytes"] is None else c["model_flash_bytes"]])
    return rows


HEADER = ["model", "config", "held-out", "out SQNR dB", "weight B", "arena B", "bitwidth search",
          "max acc. bits", "TFLM = sim", "instr/inf (qemu-m7)", "flash B (qemu-m7)", "model flash B"]


def verdicts(results: dict) -> list[str]:
    """The digits CNN against issue 4's targets, as measured."""
    e = next((m for m in results["models"] if m["model"] == "digits_cnn"), None)
    if e is None:
        return []
    c = {x["config"]: x for x in e["configs"]}
    fl, tf, p2, pb = (c[k]["accuracy_pct"] for k in ("float", "tflite", "pow2", "pow2+bits"))
    b = c["pow2+bits"]["report"]["bitwidth_search"]
    ok = lambda cond: "met" if cond else "NOT met"  # noqa: E731
    return [
        f"- pow2 int8 within 1 point of float: {p2:.2f} % vs {fl:.2f} % ({p2 - fl:+.2f} points): {ok(fl - p2 <= 1)}.",
        f"- pow2 within 0.5 point of the tflite scheme: {p2:.2f} % vs {tf:.2f} % ({p2 - tf:+.2f}): "
        f"{ok(abs(tf - p2) <= 0.5)}.",
        f"- bitwidth search at least 30 % fewer weight bytes than all-8-bit at under 1 point of drop: "
        f"{b['weight_bytes']:,} vs {b['weight_bytes_8bit']:,} B ({b['saved_pct']:.1f} % saved), accuracy "
        f"{pb:.2f} % ({pb - fl:+.2f} points vs float): {ok(b['saved_pct'] >= 30 and fl - pb < 1)}.",
    ]


def markdown(results: dict) -> str:
    head = "| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER)
    rows = "\n".join("| " + " | ".join(f"{v:,}" if isinstance(v, int) else str(v) for v in r) + " |"
                     for r in _table_rows(results))
    budgets = "\n".join(f"- {e['model']}: {e['data']}; bitwidth budget: {e['budget']}."
                         + (f" Warnings: {'; '.join(e['warnings'])}" if e["warnings"] else "")
                         for e in results["models"])
    t = results["target"]
    fw = ("" if not t["firmware_uncommitted"] else
          f" The firmware was built with uncommitted changes to {', '.join(t['firmware_uncommitted'])}.")
    n = t["inputs_per_config"]
    return (DOC_HEAD.format(version=results["mcuq_version"], commit=results["commit"],
                            inputs=f"{n} seeded random input{'s' if n != 1 else ''}", firmware=fw)
            + f"{head}\n{rows}\n\n{budgets}\n\n## Issue 4 targets on the digits CNN\n\n"
            + "\n".join(verdicts(results)) + "\n\n" + ablation_table(results) + "\n" + DOC_BODY)


def ablation_table(results: dict) -> str:
    """Held-out figure per model (columns) for each scheme / range method / bias correction (rows)."""
    models = [e for e in results["models"] if "ablation" in e]
    if not models:
        return ""
    head = "| scheme | range | bias corr. | " + " | ".join(e["model"] for e in models) + " |\n"
    head += "|---|---|---|" + "---|" * len(models)
    best = {(e["model"], c["scheme"]): max(x["sqnr_db"] for x in e["ablation"] if x["scheme"] == c["scheme"])
            for e in models for c in e["ablation"]}
    lines = []
    for k, row in enumerate(models[0]["ablation"]):
        cells = []
        for e in models:
            c = e["ablation"][k]
            fig = f"{c['sqnr_db']:.1f} dB"
            if c["sqnr_db"] == best[(e["model"], c["scheme"])]:
                fig = f"**{fig}**"
            if "accuracy_pct" in c:
                fig += f", {c['accuracy_pct']:.2f} %"
            elif c.get("top1_agreement_pct") is not None:
                fig += f", {c['top1_agreement_pct']:.1f} %"
            cells.append(fig)
        lines.append(f"| {row['scheme']} | {row['range_method']} | {'yes' if row['bias_correction'] else 'no'} | "
                     + " | ".join(cells) + " |")
    return (ABLATION_HEAD + head + "\n" + "\n".join(lines) + "\n")


ABLATION_HEAD = """## Range method and bias correction (8-bit weights)

Held-out output SQNR against float (then accuracy or top-1 agreement) of each scheme with the
`minmax` and `mse` range methods, with and without bias correction; bold: the best SQNR of a
scheme on a model. The default (`mse`, bias correction on) was chosen on these figures and on
the same grid with 64 held-out samples; the differences are a few dB at most and no single
setting wins everywhere. Models without conv layers (ad01) have nothing to correct, and there
min/max wins the MSE contest on every tensor. Top-1 agreement on 32 synthetic samples moves in
steps of 3 points.

"""


DOC_HEAD = """# Accuracy and memory: float, tflite, pow2, pow2 with per-layer bitwidths

Generated by `python bench/accuracy.py` (mcuq {version}, commit {commit}); raw numbers in
`bench/results/accuracy.json`, per-layer SQNR plots of the digits CNN in
`bench/results/accuracy_digits_cnn_*.png`. Do not
edit the tables by hand: rerun the script.

## Results

"held-out": accuracy on labelled test images (digits), else top-1 agreement with float (the
classifiers) or output SQNR against float (the autoencoder), on data not used to calibrate.
Weight bytes: all constants (float32 for the float model; int4 packed two per byte). Arena:
`mcuq.plan.plan_arena` (float32 activations for the float model). TFLM = sim: the quantized
graph written as .tflite and run by tflite-micro equals `run_integer` on every tensor
(equal / compared). Instructions per inference: the quantized graph written as .tflite, packed
for qemu-m7, built, flashed to QEMU (mps2-an500, -icount shift=0) and run by `mcuq verify` on
{inputs}, every output bit-exact with the host simulator (else the script
stops); counted with SysTick under -icount (instructions, not cycles; 40 per tick, per layer).
They measure the firmware's kernels at the commit above and change with them.{firmware} Layers
with int4 weights run on the s8_s4 kernels (weights packed two per byte in flash; filters up to
1280 weights unpacked once per call for the int8 kernel, larger ones unpacked in the inner
loop); a bitwidth search that kept every layer at 8 bits gives an int8 graph. Flash:
the whole firmware image `mcuq build` links for qemu-m7 (code, packed model, .data), in bytes;
"model flash": its packed model alone (weights, per-node params, tables). The kernels a model
does not use are not linked, so int4 layers bring the s8_s4 kernels' code (and keep the int8
kernels they hand small filters to).

"""

DOC_BODY = """
## How pow2 works (what the kernel engineer builds on)

**Scales.** Every activation scale, every weight scale (per output channel; per tensor for int4
fully connected) and hence every bias scale s_in * s_w is an exact power of two 2^-n. Softmax
and logistic outputs keep TFLM's 1/256, tanh 1/128: powers of two already. Activation zero
points stay asymmetric (a non-negative range puts 0 at -128, so a fused ReLU clamps at the
zero point); for signed ranges the symmetric zero point 0 is a candidate too, kept when its
error is lower.

**Every multiplier is a shift.** A real multiplier m = 2^e goes through TFLM's
QuantizeMultiplier as frexp(2^e) = (0.5, e + 1), so M = round(0.5 * 2^31) = 2^30 and shift
s = e + 1, for conv, depthwise, fully connected (the per-tensor float32 product s_in * s_w is
exact too), MUL and QUANTIZE. ADD's prepare (TFLM-INTEGER.md section 7) gives
m1 = s1 / (2 max(s1, s2)), m2 likewise and mo = 2 max(s1, s2) / (2^20 s_out): ratios of powers of
two, so exact powers of two as well. The one exception is MEAN, whose 1/N is folded into its
multiplier (a shift only when N is a power of two); a dead channel (all weights ~0) gets scale
s_out / s_in, multiplier 1, so no multiplier is ever flushed to 0.

**The shift-only rounding rule, derived.** TFLM's MBQM(x, M, s) = rdbpot(srdhm(x << l, M), r)
with l = max(s, 0), r = max(-s, 0). With M = 2^30,
srdhm(a, 2^30) = floor((a 2^30 + 2^30) / 2^31) = floor((a + 1) / 2) = (a + 1) >> 1. Hence, for a
multiplier 2^e (s = e + 1):

- e >= 0 (left): l = e + 1, r = 0: ((x << (e + 1)) + 1) >> 1 = x << e, exact, provided
  |x| < 2^(30 - e) (TFLM's x << l is int32 arithmetic; beyond it overflows).
- e <= -1 (right by k = -e >= 1): l = 0, r = k - 1: **y = rdbpot((x + 1) >> 1, k - 1)**, where
  rdbpot(v, j) = (v >> j) + ((v & (2^j - 1)) > ((2^j - 1) >> 1) + (v < 0)) is the round-half-away
  shift. It rounds twice (first half-up by one bit, then half-away), so it is not
  round-to-nearest: 1 * 2^-2 gives 1. This is THE rule a shift-only kernel must apply to stay
  bit-exact with TFLM and with `mcuq.simulate` (tests/test_quant_pow2.py checks it against
  `mbqm` on random int32 values for e in [-31, 5]).

The same two lines are the requantization of conv/depthwise/FC (then + zero point, clamp), MUL,
QUANTIZE, and each of ADD's three rescalings (operands: x - zp shifted left 20, then right by
k; the sum: right by k). No 64-bit multiply remains.

**Add and concatenation.** ADD operands keep their own power-of-two scales (each chosen for its
own tensor); the kernel aligns them to twice the larger scale by the exact shifts above, and the
output scale is chosen for the result's own error. CONCATENATION has no requantizing path in
TFLM, so all its operands and its output share one quantization, chosen on all their values
together (the concatenated result). Nothing forces a whole block onto one format.

## Activation ranges (Bounded ReLU)

`range_method`: `minmax` (Jacob et al.), `percentile` (0.01 / 99.99 %), `mse` (default): among
min/max, the 99 / 99.9 / 99.99 % percentiles and min/max shrunk on a 33-point grid down to 20 %,
each mapped by the scheme to its quantization (for pow2 the candidates are the powers of two
that grid reaches, and the symmetric option), the one with the least mean squared error on the
sampled calibration values (4096 per tensor per sample, extremes included). At 8 bits the
winner is usually min/max or one power of two finer: rounding error is small, clipping error
large. The percentile method alone is worse than min/max on every tensor tried.

**Bias correction.** After rounding, a channel's weights carry the same error at every position;
its mean effect (W_q - W) . E[x] (E[x] per input channel over the calibration set) is
subtracted from the bias, for conv and depthwise layers. Fully connected layers are left
alone: their per-element input means come from as few values as there are samples.

## Per-layer weight bitwidths

`budget=Budget(max_drop=...)` (top-1 agreement with float on the calibration set, first output
a classifier) or `Budget(min_sqnr_db=...)`: each conv, depthwise and fully connected layer
gets 8- or 4-bit weights (int4 values in [-7, 7], dtype "int4", held unpacked in int8 arrays
in the IR, packed two per byte by the writer and in flash by `mcuq pack`, run by the firmware's
s8_s4 kernels; fully connected int4 per tensor, as TFLM requires). Greedy on the whole
network: each layer alone at 4 bits gives its sensitivity; then, least sensitive first (ties:
most bytes saved first), layers switch to 4 bits while the whole network still meets the
budget. At most 1 + 2L simulations of the calibration set. A budget
not even all-8-bit meets: a warning, all-8-bit kept (the best found), `met` false in the report.

## Accumulators

`mcuq.quant.accumulator_bits(graph)`: per conv/depthwise/FC layer, the worst case
max_c (sum_k |w[c,k]| * max|x - zp_in| + |bias[c]|), x over the range its producer's clamp
allows, and the signed bits that hold it; `check_accumulators` refuses a graph where it exceeds
the kernel's accumulator. `quantize` doubles the weight scale of a channel (a power of two
stays one) until its worst case fits int32, and says so.

**16-bit accumulation (decided, measured).** Cortex-M4/M7's SMLAD already does two 16x16 MACs
into 32 bits per instruction, so a narrower accumulator helps only where it lets two sums share
one register: (x_a + 2^16 x_b) * w adds sum_a + 2^16 sum_b with one MLA, sum_a read back from
the low half when |sum_a| < 2^15. Tried in the s8_s4 convolution for windows of at most 31
elements, where |w x| <= 8 * 128 proves the bound for any data, on the digits CNN's int4 first
layer (8x8x1, 3x3, 8 channels) on qemu-m7: 55,600 instructions, against 62,560 for the SMLAD
path with nibbles unpacked in the loop (57,600 against 61,160 for the same loop with one 32-bit
accumulator per pixel). But unpacking that small filter once into int8 and running the int8
kernel takes 44,840, so the 16-bit path served no layer and was removed. Elsewhere the bound
rarely holds: `accumulator_bits` finds 0 of 48 conv/FC layers within 16 bits in ad01_int8,
vww_96_int8 and pretrainedResnet_quant (18 to 32 bits), and 1 of 3 in the digits CNN with
searched bitwidths (that conv1, 15 bits), so the int8 kernels get no 16-bit path either.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "accuracy.md")
    ap.add_argument("--doc-only", action="store_true",
                    help="rewrite the doc from bench/results/accuracy.json without measuring")
    args = ap.parse_args()
    path = RESULTS / "accuracy.json"
    if args.doc_only:
        results = json.loads(path.read_text())
    else:
        results = run()
        path = write_results("accuracy", results)
    _write(args.doc, markdown(results))
    print_table(HEADER, _table_rows(results))
    print(f"wrote {path} and {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
