"""Arena and code bytes: mcuq's static plan beside TensorFlow Lite Micro's on the MLPerf Tiny
models, and the firmware's code bytes (flash but the packed model) per model and board.

TFLM figures are measured here with the tflite-micro Python interpreter (reference kernels):
``head`` is its non-persistent part (activations and kernel scratch: what mcuq's plan replaces),
``total`` adds the persistent tail (runtime structs, per-channel quantization tables), and
``smallest`` is the smallest ``arena_size`` that allocates and runs, found by bisection.
``recorded`` is the print_allocations total noted in ../shared/models/README.md.
The lower bound is the most activation bytes live at one step (an overlapping windowed output
counted over its input at the least span min_shift allows); "no overlap" is the plan when every
tensor keeps bytes of its own (RESHAPE aside). The targets are issue 5's: at most 0.7x TFLM's
arena as measured there (32-bit build), below TinyEngine's 60,728 bytes on vww_96_int8, code
under 16 KB; TFLM's code bytes are the figures recorded there.
Usage: python bench/arena.py   (writes bench/results/arena.json; builds every board: a few minutes)
"""

from __future__ import annotations

import hashlib
import re
from importlib.metadata import version
from pathlib import Path

import tempfile
from unittest import mock

import numpy as np
from _common import model_path, native_stderr, print_table, write_results
from tflite_micro.python.tflite_micro import runtime

from mcuq import __version__, pipeline, plan as planner
from mcuq.boards import all_boards
from mcuq.build import build
from mcuq.ir import Op
from mcuq.plan import check_plan, peak_live_bytes, plan_arena
from mcuq.reader import read_model

RECORDED_TFLM_TOTAL = {"kws_ref_model": 24272, "vww_96_int8": 103680, "pretrainedResnet_quant": 55984,
                       "ad01_int8": 3984}
ISSUE_TFLM_ARENA = {"kws_ref_model": 22820, "vww_96_int8": 100708, "pretrainedResnet_quant": 54996,
                    "ad01_int8": 2580}  # issue 5: TFLM + CMSIS-NN, 32-bit build, same emulated M7
ISSUE_TFLM_CODE = {"kws_ref_model": 51360, "vww_96_int8": 51360, "pretrainedResnet_quant": 49408,
                   "ad01_int8": 25568}
TINYENGINE_VWW = 60728
CODE_TARGET = 16 * 1024
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


def no_overlap_size(graph) -> int:
    """The plan's size when only RESHAPE shares bytes and no windowed output overlaps its input."""
    with mock.patch.dict(planner.INPLACE, {Op.RESHAPE: planner.INPLACE[Op.RESHAPE]}, clear=True), \
            mock.patch.object(planner, "min_shift", lambda graph, node: None):
        return plan_arena(graph, ALIGNMENT).size


def code_bytes(path: Path) -> dict[str, int]:
    """Board -> firmware code bytes (flash but the packed model) of ``path`` packed and built for it."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        pipeline.pack(path, "qemu-m7", Path(tmp) / "p", pipeline.QuantOptions(), warn=lambda _: None)
        for board in all_boards():
            out[board.name] = build(Path(tmp) / "p", board.name).code_used
    return out


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
        "no_overlap_bytes": no_overlap_size(graph),
        "overlapping_outputs": len(plan.overlaps),
        "in_place_outputs": sum(graph.producers()[t].op != Op.RESHAPE for t in plan.aliases),
        "lower_bound_bytes": peak_live_bytes(graph),
        "issue_tflm_arena_bytes": ISSUE_TFLM_ARENA[name],
        "code_bytes": code_bytes(path),
        "issue_tflm_code_bytes": ISSUE_TFLM_CODE[name],
        "activation_bytes_total": sum(t.nbytes for t in graph.activation_tensors()),
        "tflm_head_bytes": tflm["head"],
        "tflm_tail_bytes": tflm["tail"],
        "tflm_total_bytes": tflm["total"],
        "tflm_smallest_working_bytes": tflm_smallest_arena(path, len(graph.inputs), tflm["total"]),
        "tflm_total_recorded_bytes": RECORDED_TFLM_TOTAL[name],
    }


def main() -> None:
    results = [measure(name) for name in RECORDED_TFLM_TOTAL]
    rows = [(r["model"], r["mcuq_arena_bytes"], r["no_overlap_bytes"], r["lower_bound_bytes"], r["tflm_head_bytes"],
             r["tflm_total_bytes"], r["tflm_smallest_working_bytes"], r["tflm_total_recorded_bytes"],
             f"{r['mcuq_arena_bytes'] / r['tflm_head_bytes']:.0%}",
             f"{r['mcuq_arena_bytes'] / r['tflm_total_bytes']:.0%}") for r in results]
    print_table(("model", "mcuq arena", "no overlap", "lower bound", "TFLM head", "TFLM total", "TFLM smallest",
                 "TFLM recorded", "mcuq/head", "mcuq/total"), rows)
    print()
    targets = []
    for r in results:
        limit = int(0.7 * r["issue_tflm_arena_bytes"])
        if r["model"] == "vww_96_int8":
            limit = min(limit, TINYENGINE_VWW - 1)
        worst = max(r["code_bytes"].values())
        targets.append((r["model"], r["mcuq_arena_bytes"], limit, "yes" if r["mcuq_arena_bytes"] <= limit else "NO",
                        *r["code_bytes"].values(), r["issue_tflm_code_bytes"], "yes" if worst < CODE_TARGET else "NO"))
    boards = list(results[0]["code_bytes"])
    print_table(("model", "arena", "target", "met", *(f"code {b}" for b in boards), "TFLM code", "code < 16 KB"),
                targets)
    path = write_results("arena", {
        "mcuq_version": __version__,
        "tflite_micro_version": version("tflite-micro"),
        "alignment": ALIGNMENT,
        "models": results,
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
