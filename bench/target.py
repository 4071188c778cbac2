"""The MLPerf Tiny int8 models on the emulated Cortex-M7 (QEMU mps2-an500, -icount shift=0):
instructions per inference and per MAC, measured by `mcuq verify` (which also proves every
output bit-exact), planned arena bytes beside TFLM's, and the firmware's flash bytes split into
weights (constant tensors), model tables (per-node parameters, tensor and node tables) and code.

Instruction counts come from SysTick under -icount (one tick = 40 instructions, so each layer's
count has a resolution of 40); they are instructions, not cycles.
Usage: python bench/target.py   (writes bench/results/target.json)
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from importlib.metadata import version
from pathlib import Path

from _common import model_path, print_table, run_on_target, write_results
from arena import RECORDED_TFLM_TOTAL, tflm_allocations

from mcuq import __version__

BOARD = "qemu-m7"
COUNT = 3
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


def measure(name: str, work: Path) -> dict:
    path = model_path(name)
    run = run_on_target(path, BOARD, work / name, COUNT)
    packed, built, result = run.packed, run.built, run.result
    macs = sum(c.macs for c in result.layers)
    split = flash_split(built.elf)
    tflm = tflm_allocations(path, len(packed.integer.graph.inputs))
    return {
        "model": name,
        "sha256": packed.manifest["model_sha256"],
        "bit_exact_inputs": result.exact,
        "instructions_per_inference": round(result.total),
        "macs": macs,
        "instructions_per_mac": round(result.total / macs, 3),
        "arena_bytes": packed.manifest["arena_bytes"],
        "tflm_arena_head_bytes": tflm["head"],
        "tflm_arena_total_bytes": tflm["total"],
        "flash_bytes": built.flash_used,
        "flash_weight_bytes": split["weights"],
        "flash_table_bytes": split["tables"],
        "flash_code_bytes": built.flash_used - split["weights"] - split["tables"],
        "ram_bytes": built.ram_used,
        "layers": [{"index": c.index, "op": c.op, "macs": c.macs, "instructions": round(c.count)}
                   for c in result.layers],
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mcuq-bench-") as work:
        results = [measure(name, Path(work)) for name in RECORDED_TFLM_TOTAL]
    rows = [(r["model"], r["instructions_per_inference"], r["macs"], f"{r['instructions_per_mac']:.2f}",
             r["arena_bytes"], r["tflm_arena_head_bytes"], r["tflm_arena_total_bytes"], r["flash_bytes"],
             r["flash_weight_bytes"], r["flash_table_bytes"], r["flash_code_bytes"], r["ram_bytes"])
            for r in results]
    print_table(("model", "instructions", "MACs", "instr/MAC", "arena", "TFLM head", "TFLM total", "flash",
                 "weights", "tables", "code", "RAM"), rows)
    path = write_results("target", {
        "mcuq_version": __version__,
        "tflite_micro_version": version("tflite-micro"),
        "board": BOARD,
        "inputs_per_model": COUNT,
        "counter": "instructions (SysTick under QEMU -icount shift=0)",
        "models": results,
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
