"""Arena bytes: mcuq's static plan beside TensorFlow Lite Micro's, on the MLPerf Tiny models.

TFLM figures are measured here with the tflite-micro Python interpreter (reference kernels):
``head`` is its non-persistent part (activations and kernel scratch: what mcuq's plan replaces),
``total`` adds the persistent tail (runtime structs, per-channel quantization tables), and
``smallest`` is the smallest ``arena_size`` that allocates and runs, found by bisection.
``recorded`` is the print_allocations total noted in ../shared/models/README.md.
The lower bound is the most activation bytes live at one step.
Usage: python bench/arena.py   (writes bench/results/arena.json)
"""

from __future__ import annotations

import hashlib
import re
from importlib.metadata import version
from pathlib import Path

import numpy as np
from _common import model_path, native_stderr, print_table, write_results
from tflite_micro.python.tflite_micro import runtime

from mcuq import __version__
from mcuq.plan import check_plan, peak_live_bytes, plan_arena
from mcuq.reader import read_model

RECORDED_TFLM_TOTAL = {"kws_ref_model": 24272, "vww_96_int8": 103680, "pretrainedResnet_quant": 55984,
                       "ad01_int8": 3984}
ALIGNMENT = 16


def _interpreter(path: Path, n_inputs: int, arena_size: int | None):
    """A TFLM interpreter that has run once on zeros, or None if ``arena_size`` is too small."""
    with native_stderr():
        try:
            it = runtime.Interpreter.from_file(str(path), arena_size=arena_size)
        except RuntimeError:
            return None
        for i in range(n_inputs):
            d = it.get_input_details(i)
            it.set_input(np.zeros(d["shape"], d["dtype"]), i)
        it.invoke()
    return it


def tflm_allocations(path: Path, n_inputs: int) -> dict[str, int]:
    """TFLM's print_allocations head / tail / total bytes, read from what it prints on stderr."""
    it = _interpreter(path, n_inputs, None)
    with native_stderr() as out:
        it.print_allocations()
    found = dict(re.findall(r"Arena allocation (total|head|tail) (\d+) bytes", out.text))
    if set(found) != {"total", "head", "tail"}:
        raise SystemExit(f"unexpected print_allocations output for {path.name}:\n{out.text}")
    return {k: int(v) for k, v in found.items()}


def tflm_smallest_arena(path: Path, n_inputs: int, start: int) -> int:
    """Smallest arena_size with which TFLM allocates and runs the model (doubling from ``start``, then bisection)."""
    lo, hi = 0, start
    while _interpreter(path, n_inputs, hi) is None:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _interpreter(path, n_inputs, mid) is not None else (mid, hi)
    return hi


def measure(name: str) -> dict:
    path = model_path(name)
    graph = read_model(path)
    plan = plan_arena(graph, ALIGNMENT)
    check_plan(graph, plan)
    tflm = tflm_allocations(path, len(graph.inputs))
    return {
        "model": name,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "mcuq_arena_bytes": plan.size,
        "lower_bound_bytes": peak_live_bytes(graph),
        "activation_bytes_total": sum(t.nbytes for t in graph.activation_tensors()),
        "tflm_head_bytes": tflm["head"],
        "tflm_tail_bytes": tflm["tail"],
        "tflm_total_bytes": tflm["total"],
        "tflm_smallest_working_bytes": tflm_smallest_arena(path, len(graph.inputs), tflm["total"]),
        "tflm_total_recorded_bytes": RECORDED_TFLM_TOTAL[name],
    }


def main() -> None:
    results = [measure(name) for name in RECORDED_TFLM_TOTAL]
    rows = [(r["model"], r["mcuq_arena_bytes"], r["lower_bound_bytes"], r["tflm_head_bytes"],
             r["tflm_total_bytes"], r["tflm_smallest_working_bytes"], r["tflm_total_recorded_bytes"],
             f"{r['mcuq_arena_bytes'] / r['tflm_head_bytes']:.0%}",
             f"{r['mcuq_arena_bytes'] / r['tflm_total_bytes']:.0%}") for r in results]
    print_table(("model", "mcuq arena", "lower bound", "TFLM head", "TFLM total", "TFLM smallest",
                 "TFLM recorded", "mcuq/head", "mcuq/total"), rows)
    path = write_results("arena", {
        "mcuq_version": __version__,
        "tflite_micro_version": version("tflite-micro"),
        "alignment": ALIGNMENT,
        "models": results,
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
