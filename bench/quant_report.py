"""Measure how well mcuq's int8 quantization agrees with float on the shared float models.

For each float model in ../shared/models: quantize on a seeded calibration set, then measure
SQNR and top-1 agreement of the integer simulator against the float executor on the
calibration set (QuantReport) and on a held-out set drawn the same way. As a reference, the
int8 sibling that MLPerf Tiny / tflite-micro ship for the same network (converted by
TensorFlow with its own, real calibration data) is measured on the same held-out set.
Writes bench/results/quant_report.json and docs/quantization-report.md.

    python bench/quant_report.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tflite_micro.python.tflite_micro import runtime

from mcuq import __version__
from mcuq.fixedpoint import quantize_real
from mcuq.ir import Graph
from mcuq.quant import Scheme, evaluate, quantize
from mcuq.reader import read_model
from mcuq.simulate import run_integer
from mcuq.simulate.floating import run_float
from mcuq.writer import write_model

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "models"
CALIB_SAMPLES = 32
EVAL_SAMPLES = 32
TFLM_SAMPLES = 4  # held-out samples also run in tflite-micro, every tensor compared
TFLM_ARENA = 4 << 20


@dataclass(frozen=True)
class Case:
    """A shared float model, the input domain its int8 sibling declares, and the sibling."""

    model: str
    domain: tuple[float, float]
    reference: str
    images: bool


CASES = (
    Case("tflite-micro/hello_world_float", (0.0, 6.2832), "tflite-micro/hello_world_int8", False),
    Case("mlperf-tiny/ad01_fp32", (-84.85, 14.86), "mlperf-tiny/ad01_int8", False),
    Case("mlperf-tiny/pretrainedResnet", (0.0, 255.0), "mlperf-tiny/pretrainedResnet_quant", True),
    Case("mlperf-tiny/vww_96_float", (0.0, 1.0), "mlperf-tiny/vww_96_int8", True),
)


def uniform(rng: np.random.Generator, n: int, shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
    """Independent uniform values over the input domain."""
    return rng.uniform(lo, hi, (n, *shape)).astype(np.float32)


def smooth(rng: np.random.Generator, n: int, shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
    """Image-like samples: a random 4x4 grid per channel, bilinearly upsampled, plus mild noise."""
    _, h, w, c = shape
    grid = rng.uniform(0, 1, (n, 4, 4, c))

    def lerp(size: int) -> np.ndarray:
        pos = np.linspace(0, 3, size)
        m = np.maximum(0, 1 - np.abs(pos[:, None] - np.arange(4)[None]))
        return m / m.sum(axis=1, keepdims=True)

    img = np.einsum("hi,nijc,wj->nhwc", lerp(h), grid, lerp(w))
    img = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
    return (lo + (hi - lo) * img)[:, None].astype(np.float32)


DATA: dict[str, Callable[..., np.ndarray]] = {"uniform": uniform, "smooth": smooth}


def measure(case: Case, kind: str) -> dict:
    path = MODELS / f"{case.model}.tflite"
    g = read_model(path)
    make = DATA[kind]
    (shape,) = [t.shape for t in g.input_tensors()]
    calib = make(np.random.default_rng(0), CALIB_SAMPLES, shape, *case.domain)
    held = make(np.random.default_rng(1), EVAL_SAMPLES, shape, *case.domain)
    result = quantize(g, [calib], scheme=Scheme.TFLITE)
    heldout = evaluate(g, result.graph, [held], label="held-out data")
    entry = {
        "model": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "data": kind,
        "input_domain": list(case.domain),
        "calibration": result.report.to_dict(),
        "heldout": heldout.to_dict(),
    }
    entry["tflm_bit_exact"] = tflm_check(result.graph, held[:TFLM_SAMPLES])
    if heldout.outputs[0].top1_agreement_pct is not None:
        probs = np.stack([run_float(g, [x])[0].reshape(-1) for x in held])
        entry["heldout_float"] = {"classes_predicted": int(len(np.unique(probs.argmax(axis=1)))),
                                  "mean_top_probability": float(probs.max(axis=1).mean())}
    ref_path = MODELS / f"{case.reference}.tflite"
    if ref_path.exists():
        ref = evaluate(g, read_model(ref_path), [held], label="held-out data")
        entry["reference"] = {"file": ref_path.name, "heldout": ref.to_dict()}
    return entry


def tflm_check(qg: Graph, samples: np.ndarray) -> dict:
    """Run the written .tflite in tflite-micro: how many (sample, tensor) pairs equal run_integer's."""
    model = write_model(qg)
    (t_in,) = qg.input_tensors()
    compared = equal = 0
    for x in samples:
        xq = quantize_real(x, t_in.quant.scale[0], t_in.quant.zero_point[0], "int8")
        it = runtime.Interpreter.from_bytes(model, arena_size=TFLM_ARENA,
                                            intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
        it.set_input(xq, 0)
        it.invoke()
        want = run_integer(qg, [xq], all_tensors=True)
        for t in qg.activation_tensors():
            got = np.array(it.GetTensor(t.index, 0)["tensor_data"]).reshape(t.shape)
            compared += 1
            equal += int(got.dtype == want[t.index].dtype and np.array_equal(got, want[t.index]))
    return {"samples": len(samples), "tensors_compared": compared, "tensors_equal": equal}


def run() -> dict:
    entries = []
    for case in CASES:
        if not (MODELS / f"{case.model}.tflite").exists():
            print(f"skip {case.model}: not in {MODELS}", file=sys.stderr)
            continue
        for kind in ("uniform", "smooth") if case.images else ("uniform",):
            print(f"{case.model} ({kind})", file=sys.stderr)
            entries.append(measure(case, kind))
    return {"mcuq_version": __version__, "commit": _commit(), "numpy": np.__version__,
            "calib_samples": CALIB_SAMPLES, "eval_samples": EVAL_SAMPLES, "models": entries}


def markdown(results: dict) -> str:
    rows = []
    for e in results["models"]:
        cal, held = e["calibration"]["outputs"][0], e["heldout"]["outputs"][0]
        ref = e["reference"]["heldout"]["outputs"][0] if "reference" in e else None
        ref_cells = f"{_db(ref['sqnr_db'])} | {_pct(ref['top1_agreement_pct'])}" if ref else "n/a | n/a"
        rows.append(
            f"| {e['model']} | {e['data']} | {_db(cal['sqnr_db'])} | {_pct(cal['top1_agreement_pct'])} "
            f"| {_db(held['sqnr_db'])} | {_pct(held['top1_agreement_pct'])} | {ref_cells} "
            f"| {e['tflm_bit_exact']['tensors_equal']}/{e['tflm_bit_exact']['tensors_compared']} |"
        )
    notes = [f"- {e['model']} ({e['data']}): over the held-out samples the float model predicts "
             f"{e['heldout_float']['classes_predicted']} distinct class(es), mean top probability "
             f"{e['heldout_float']['mean_top_probability']:.2f}."
             for e in results["models"] if "heldout_float" in e]
    refs = "".join(f"\n- {e['model']} -> {e['reference']['file']}" for e in results["models"]
                   if "reference" in e and e["data"] == "uniform")
    return f"""# Quantization report: float vs int8 agreement on the shared float models

Generated by `python bench/quant_report.py` (mcuq {results['mcuq_version']}, commit {results['commit']});
raw numbers in `bench/results/quant_report.json`. Do not edit by hand: rerun the script.

## What is measured

For each float model in `../shared/models`, `mcuq.quant.quantize` (scheme `tflite`: per-tensor
asymmetric int8 activations whose clipping range is chosen from calibration data by the default
`mse` range method, per-channel symmetric int8 weights with bias correction, int32
biases) builds the int8-only graph. Its outputs come from `mcuq.simulate.run_integer`, which is
bit-exact with TensorFlow Lite Micro (tests/test_quant.py asserts it per model, every tensor),
and are dequantized and compared with `mcuq.simulate.run_float`. The last column re-checks that
here: each quantized graph, written by `mcuq.writer.write_model` and run by the tflite-micro
interpreter on {TFLM_SAMPLES} held-out samples, gives every tensor np.array_equal to the simulator
(equal / compared, over samples x tensors).

- **SQNR** = 10 log10(sum f^2 / sum (f - dequant(q))^2) over all output elements and samples.
- **top-1** = % of samples whose argmax agrees; only for softmax outputs with more than one
  class (ResNet-8 CIFAR-10, VWW); "-" otherwise (sine regression, AD autoencoder).

Data: no real data sets ship with the shared models, so inputs are synthetic and seeded. Each
model's inputs are drawn over the input domain of the network (as its int8 sibling's input
quantization declares it): sine x in [0, 2pi], AD log-mel features in [-84.9, 14.9], CIFAR
pixels in [0, 255], VWW pixels in [0, 1]. `uniform` draws every value independently; `smooth`
(image models only) draws image-like samples: a random 4x4 grid per channel, bilinearly
upsampled, plus mild noise. {results['calib_samples']} calibration samples (seed 0) build the
int8 graph and give the "calibration" columns (`QuantResult.report`); {results['eval_samples']}
held-out samples (seed 1) give the "held-out" columns (`mcuq.quant.evaluate`).

The "TF int8" columns measure, on the same held-out samples and against the same float model,
the int8 model shipped with the same network (TensorFlow's converter, calibrated by its
authors on their own data, which is not available here):
{refs}

It is a reference point, not a like-for-like contest: that model was calibrated for real
inputs, ours for these synthetic ones.

## Results

| model | data | SQNR dB (calibration) | top-1 (calibration) | SQNR dB (held-out) | top-1 (held-out) | TF int8 SQNR dB | TF int8 top-1 | TFLM = simulator |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

## Reading it

How decided the float classifiers are on these synthetic inputs:

{chr(10).join(notes)}

- SQNR of a softmax output is dominated by its largest probabilities: a classifier that is sure
  of one class on every sample (VWW here) scores a high SQNR and a trivial 100 % top-1. The
  spread ResNet-8 outputs are the harder and more telling case.
- Top-1 on a few dozen synthetic samples is a smoke signal, not an accuracy figure: no labelled
  data set of the benchmark tasks is available offline.
- The power-of-two scheme, other range methods and per-layer weight bitwidths are compared in
  [accuracy.md](accuracy.md) (`python bench/accuracy.py`).
"""


def _db(v: float | str) -> str:
    return v if isinstance(v, str) else f"{v:.1f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} %"


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def _write(path: Path, text: str) -> None:
    """Write atomically: a temporary file beside the target, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "quant_report.json")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "quantization-report.md")
    args = ap.parse_args()
    results = run()
    _write(args.json, json.dumps(results, indent=1) + "\n")
    _write(args.doc, markdown(results))
    print(f"wrote {args.json} and {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
