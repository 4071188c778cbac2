"""The MLPerf Tiny int8 models on the emulated Cortex-M7 (QEMU mps2-an500), Cortex-M4
(mps2-an386) and Cortex-M55 (mps3-an547: its convolutions and fully connected layers on Helium),
-icount shift=0: instructions per inference, per layer and per MAC, measured by
`mcuq verify` (which also proves every output bit-exact); the split between MAC-loop work and
per-output work; planned arena bytes beside TFLM's; the firmware's flash bytes split into weights
(constant tensors), model tables (per-node parameters, tensor and node tables) and code.

Instruction counts come from SysTick under -icount (one tick = 40 instructions, so each layer's
count has a resolution of 40); they are instructions, not cycles.

MAC loops versus per-output work is an estimate, not a measurement (the counter sees whole
layers): for each kind of layer with MACs (CONV_2D 1x1, CONV_2D with larger windows, depthwise,
fully connected) and each board, a least-squares fit over every such layer in the four models,
instructions = a * MACs + b * output elements + c with a, b, c >= 0, gives a, the MAC-loop cost
per MAC. A layer's MAC-loop work is a * MACs; the rest (bias, requantization, clamp, store,
window set-up, the call) is its per-output work. Where every layer of a kind has the same MACs
per output (all depthwise layers here are 3x3), a and b cannot be told apart and that kind stays
unsplit. Ops without MACs (ADD, pooling, softmax, ...) are per-output work. The fit's worst
relative residual is printed beside it.

Beside each int8 model runs a power-of-two version (every requantization a shift: `--scheme
pow2`), quantized by mcuq from the float original (ad01_fp32, vww_96_float, pretrainedResnet;
kws_ref_model_float32 is a dynamic-range hybrid, so kws has none) and calibrated on seeded random
inputs: its counts are comparable, its accuracy is not measured here. Runs use the default build
(`mcuq build`: everything at -Os); on qemu-m7 each int8 model also runs built with `mcuq build
--optimize speed` (the DSP kernels at -O2): fewer instructions, more code.

Computed MACs leave out those of constant channels (CONV_2D output channels whose filter row is
all zero, 971 of them in vww_96_int8: their output is known at pack time and mcuq computes none of
their products); instructions per MAC are reported over the model's MACs and over computed ones,
and the MAC-loop fit uses computed MACs.

Each run appends one record (git commit, date, per board and model: instructions, arena, code,
flash, RAM) to bench/results/history.jsonl and prints the change against the previous record, so
a change that makes anything slower or bigger shows.
Usage: python bench/target.py   (writes bench/results/target.json, appends history.jsonl)
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import numpy as np
from _common import RESULTS, ROOT, model_path, print_table, run_on_target, write_results
from arena import RECORDED_TFLM_TOTAL, tflm_allocations

from mcuq import __version__
from mcuq.pipeline import QuantOptions
from mcuq.ir import Op
from mcuq.quant import Scheme
from mcuq.simulate.conv import constant_channels, prepare_conv2d

BOARDS = ("qemu-m7", "qemu-m4", "qemu-m55")
MODELS = tuple(RECORDED_TFLM_TOTAL)
COUNT = 3
MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
POW2_SOURCE = {"ad01_int8": "ad01_fp32", "vww_96_int8": "vww_96_float", "pretrainedResnet_quant": "pretrainedResnet"}
HISTORY = RESULTS / "history.jsonl"
# TFLM + CMSIS-NN on qemu-m7 (issue 5): instructions, arena bytes (32-bit build), code bytes.
TFLM_M7 = {"ad01_int8": (583255, 2580, 25568), "kws_ref_model": (7643132, 22820, 51360),
           "vww_96_int8": (24025586, 100708, 51360), "pretrainedResnet_quant": (30027712, 54996, 49408)}
TRACKED = ("instructions", "arena_bytes", "code_bytes", "flash_bytes", "ram_bytes")
_WEIGHTS = re.compile(r"mcuq_t\d+$")
_TABLES = re.compile(r"mcuq_(p\d+(_\w+)?|n\d+_(in|out)|tensors|nodes|inputs|outputs)$")


def flash_split(elf: Path) -> dict[str, int]:
    """Bytes of the model's weights and of its tables in the ELF, from the symbol table."""
    out = subprocess.run(["arm-none-eabi-nm", "--size-sort", "-S", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    sizes = {"weights": 0, "tables": 0}
    for line in out.splitlines():
        _, size, _, name = line.split(maxsplit=3)
        if _WEIGHTS.match(name):
            sizes["weights"] += int(size, 16)
        elif _TABLES.match(name):
            sizes["tables"] += int(size, 16)
    return sizes


def kind(graph, node) -> str:
    """The op, with CONV_2D split into 1x1 and larger windows (different kernel paths)."""
    op = str(node.op)
    if op == "CONV_2D":
        _, kh, kw, _ = graph.tensor(node.inputs[1]).shape
        return "CONV_2D 1x1" if kh * kw == 1 else "CONV_2D KxK"
    return op


def measure(name: str, board: str, work: Path, tflm: dict[str, int], scheme: Scheme = Scheme.TFLITE,
            optimize: str = "size") -> dict:
    """Pack, build (``optimize``: `mcuq build --optimize`), flash and verify ``name`` (pow2: its
    float source quantized with power-of-two scales) on ``board``: totals and one row per layer."""
    source = name if scheme == Scheme.TFLITE else POW2_SOURCE[name]
    run = run_on_target(model_path(source), board, work / f"{source}-{scheme}-{optimize}-{board}", COUNT, print,
                        QuantOptions(scheme=scheme), optimize)
    packed, built, result = run.packed, run.built, run.result
    graph = packed.integer.graph
    macs = sum(c.macs for c in result.layers)
    split = flash_split(built.elf)
    layers = []
    for c in result.layers:
        node = graph.nodes[c.index]
        outputs = sum(int(np.prod(graph.tensor(t).shape)) for t in node.outputs)
        layers.append({"index": c.index, "op": c.op, "kind": kind(graph, node), "macs": c.macs,
                       "computed_macs": computed_macs(graph, node, c.macs), "outputs": outputs,
                       "instructions": round(c.count)})
    computed = sum(x["computed_macs"] for x in layers)
    return {
        "model": name,
        "scheme": str(scheme),
        "optimize": optimize,
        "source": source,
        "board": board,
        "sha256": packed.manifest["model_sha256"],
        "bit_exact_inputs": result.exact,
        "instructions": round(result.total),
        "macs": macs,
        "instructions_per_mac": round(result.total / macs, 3),
        "computed_macs": computed,
        "instructions_per_computed_mac": round(result.total / computed, 3),
        "arena_bytes": packed.manifest["arena_bytes"],
        "tflm_arena_head_bytes": tflm["head"],
        "tflm_arena_total_bytes": tflm["total"],
        "flash_bytes": built.flash_used,
        "weight_bytes": split["weights"],
        "table_bytes": split["tables"],
        "code_bytes": built.flash_used - split["weights"] - split["tables"],
        "ram_bytes": built.ram_used,
        "layers": layers,
    }


def _nonnegative_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Least squares y ~ x @ coef with coef >= 0: the best over the column subsets that keep the
    first column (a handful of columns, so every subset is tried)."""
    n = x.shape[1]
    best, best_err = None, np.inf
    for mask in range(1, 1 << n):
        cols = [i for i in range(n) if mask >> i & 1]
        if 0 not in cols or np.linalg.matrix_rank(x[:, cols]) < len(cols):
            continue
        sol, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
        if (sol < 0).any():
            continue
        coef = np.zeros(n)
        coef[cols] = sol
        err = float(np.sum((x @ coef - y) ** 2))
        if err < best_err:
            best, best_err = coef, err
    return best


def computed_macs(graph, node, macs: int) -> int:
    """``macs`` less those of the node's constant channels (channel_data rows with M = 0, r > 0:
    mcuq.simulate.conv.constant_row), which the firmware does not compute."""
    if node.op != Op.CONV_2D or graph.tensor(node.inputs[0]).dtype != "int8":
        return macs
    constant = constant_channels(prepare_conv2d(graph, node))
    return macs * int(np.sum(~constant)) // len(constant)


def fit_mac_cost(runs: list[dict]) -> dict[str, dict]:
    """Per kind of layer with MACs: instructions = a * MACs + b * outputs + c over its layers in
    ``runs`` (one board), least squares with a, b, c >= 0, or why it cannot be split."""
    fits = {}
    kinds = sorted({r["kind"] for run in runs for r in run["layers"] if r["op"] in MAC_OPS})
    for k in kinds:
        rows = [(r["computed_macs"], r["outputs"], r["instructions"]) for run in runs for r in run["layers"]
                if r["kind"] == k]
        x = np.array([[m, o, 1.0] for m, o, _ in rows], dtype=float)
        y = np.array([i for _, _, i in rows], dtype=float)
        if len({m / o for m, o, _ in rows}) < 2:
            fits[k] = {"layers": len(rows), "split": False,
                       "why": "every layer has the same MACs per output: MAC and per-output cost not separable"}
            continue
        coef = _nonnegative_fit(x, y) if len(rows) >= 4 else None
        if coef is None:
            fits[k] = {"layers": len(rows), "split": False, "why": "too few distinct layers for a, b and c"}
            continue
        worst = float(np.max(np.abs(x @ coef - y) / y))
        fits[k] = {"layers": len(rows), "split": True, "per_mac": round(float(coef[0]), 3),
                   "per_output": round(float(coef[1]), 2), "per_call": round(float(coef[2])),
                   "worst_residual": round(worst, 3)}
    return fits


def work_split(run: dict, fits: dict[str, dict]) -> dict[str, int]:
    """Instructions of one run in MAC loops (estimated), per-output work, and unsplit MAC layers."""
    out = {"mac_loops": 0, "per_output": 0, "unsplit": 0}
    for r in run["layers"]:
        fit = fits.get(r["kind"])
        if r["op"] not in MAC_OPS:
            out["per_output"] += r["instructions"]
        elif fit is None or not fit["split"]:
            out["unsplit"] += r["instructions"]
        else:
            loops = min(r["instructions"], round(fit["per_mac"] * r["computed_macs"]))
            out["mac_loops"] += loops
            out["per_output"] += r["instructions"] - loops
    return out


def git_state() -> tuple[str, bool]:
    """HEAD's commit and whether the sources the numbers depend on have uncommitted changes."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "firmware", "mcuq", "boards"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return head or "unknown", bool(dirty)


def key(run: dict) -> str:
    """model@board; model/pow2@board for the power-of-two versions, model/speed@board for speed builds
    (records before the default build became size: no suffix for speed, /size for size)."""
    suffix = "" if run["scheme"] == Scheme.TFLITE else "/" + run["scheme"]
    return f"{run['model']}{suffix}{'/speed' if run.get('optimize') == 'speed' else ''}@{run['board']}"


def history_record(runs: list[dict]) -> dict:
    commit, dirty = git_state()
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit, "dirty": dirty,
            "results": {key(r): {k: r[k] for k in TRACKED} for r in runs}}


def previous_record() -> dict | None:
    if not HISTORY.exists():
        return None
    lines = [line for line in HISTORY.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


def print_changes(old: dict | None, new: dict) -> None:
    """Each tracked figure against the previous record; larger is worse for all of them."""
    if old is None:
        print("\nno previous record in history.jsonl")
        return
    rows, same = [], 0
    for key, figures in new["results"].items():
        before = old["results"].get(key)
        for k in TRACKED:
            if before is None or k not in before:
                continue
            delta = figures[k] - before[k]
            if delta == 0:
                same += 1
                continue
            pct = f"{100 * delta / before[k]:+.2f}%" if before[k] else ""
            rows.append((key, k, before[k], figures[k], f"{delta:+,}", pct, "WORSE" if delta > 0 else "better"))
    print(f"\nchange against {old['commit'][:10]} ({old['date']}), {same} figures unchanged:")
    if rows:
        print_table(("model@board", "figure", "before", "now", "change", "%", ""), rows)


def main() -> None:
    tflm = {name: tflm_allocations(model_path(name), 1) for name in MODELS}
    with tempfile.TemporaryDirectory(prefix="mcuq-bench-") as work:
        runs = [measure(name, board, Path(work), tflm[name]) for board in BOARDS for name in MODELS]
        runs += [measure(name, board, Path(work), tflm[name], Scheme.POW2) for board in BOARDS
                 for name in MODELS if name in POW2_SOURCE]
        runs += [measure(name, BOARDS[0], Path(work), tflm[name], optimize="speed") for name in MODELS]
    fits = {board: fit_mac_cost([r for r in runs if r["board"] == board and r["scheme"] == Scheme.TFLITE
                                 and r["optimize"] == "size"]) for board in BOARDS}
    for r in runs:
        r["work_split"] = work_split(r, fits[r["board"]])
    print_table(("model", "scheme", "optimize", "board", "instructions", "MACs", "instr/MAC", "computed MACs",
                 "instr/computed MAC", "MAC loops", "per-output", "unsplit",
                 "TFLM (m7)", "arena", "TFLM head", "code", "weights", "tables", "RAM"),
                [(r["model"], r["scheme"], r["optimize"], r["board"], r["instructions"], r["macs"],
                  f"{r['instructions_per_mac']:.2f}", r["computed_macs"], f"{r['instructions_per_computed_mac']:.2f}",
                  r["work_split"]["mac_loops"], r["work_split"]["per_output"], r["work_split"]["unsplit"],
                  TFLM_M7[r["model"]][0], r["arena_bytes"], r["tflm_arena_head_bytes"], r["code_bytes"],
                  r["weight_bytes"], r["table_bytes"], r["ram_bytes"]) for r in runs])
    print("\nMAC-loop fit per kind of layer (instructions = a * MACs + b * outputs + c, all >= 0):")
    print_table(("board", "kind", "layers", "a /MAC", "b /output", "c /call", "worst residual", "note"),
                [(board, op, f["layers"], f.get("per_mac", "-"), f.get("per_output", "-"), f.get("per_call", "-"),
                  f.get("worst_residual", "-"), f.get("why", "")) for board in BOARDS for op, f in fits[board].items()])
    print("\nper layer (instructions per MAC, or per output element for ops without MACs):")
    for r in runs:
        cells = [f"{x['op'][:4]}{x['index']}:{x['instructions'] / (x['macs'] or x['outputs']):.2f}" for x in r["layers"]]
        print(f"  {key(r)}: {' '.join(cells)}")
    path = write_results("target", {
        "mcuq_version": __version__,
        "tflite_micro_version": version("tflite-micro"),
        "boards": list(BOARDS),
        "inputs_per_model": COUNT,
        "counter": "instructions (SysTick under QEMU -icount shift=0)",
        "work_split_method": "per kind of layer and board, least squares instructions = a*MACs + b*outputs + c "
                             "(a, b, c >= 0) over the layers of that kind; MAC loops = a*MACs, per-output = the "
                             "rest; ops without MACs are per-output; kinds whose layers all have the same MACs per "
                             "output stay unsplit",
        "tflm_cmsis_nn_qemu_m7": {k: dict(zip(("instructions", "arena_bytes", "code_bytes"), v))
                                  for k, v in TFLM_M7.items()},
        "fits": fits,
        "models": runs,
    })
    record = history_record(runs)
    print_changes(previous_record(), record)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with HISTORY.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    print(f"\nwrote {path}, appended {HISTORY}")


if __name__ == "__main__":
    main()
