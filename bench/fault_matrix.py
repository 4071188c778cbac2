"""The serial fault matrix against QEMU: each scripted fault (tests/fault_proxy.py) injected
between verify and the real firmware of ad01_int8 on qemu-m7; whether it recovered bit-exact or
ended in one clear error, and how long it took. Prints a table, writes bench/results/fault_matrix.json.
Usage: python bench/fault_matrix.py [--model NAME] [--other NAME]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]
from _common import model_path, print_table, write_results  # noqa: E402
from fault_proxy import BOUND, CASES, COUNT, RUN_TIMEOUT, TIMEOUT, as_expected, run_case  # noqa: E402

from mcuq import pipeline  # noqa: E402
from mcuq.build import build  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ad01_int8", help="model verified in every case")
    ap.add_argument("--other", default="hello_world_int8", help="model of the wrong firmware")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mcuq-faults-") as tmp:
        packs = []
        for name in (args.model, args.other):
            pack = Path(tmp) / name
            pipeline.pack(model_path(name), "qemu-m7", pack, pipeline.QuantOptions(), print)
            build(pack)
            packs.append(pack)
        outcomes = []
        for case in CASES:
            out = run_case(case, *packs)
            outcomes.append(out)
            print(f"{case.name}: {out.outcome} in {out.seconds:.2f} s", file=sys.stderr)
    rows = [[o.case, o.outcome, f"{o.seconds:.2f}", o.injected, o.lost,
             o.message if o.outcome != "recovered" else ""] for o in outcomes]
    print_table(["case", "outcome", "seconds", "faults", "lost", "error"], rows)
    bad = [o for o, c in zip(outcomes, CASES) if not as_expected(c, o)]
    path = write_results("fault_matrix", {
        "model": args.model, "wrong_firmware_model": args.other, "board": "qemu-m7", "vectors_per_case": COUNT,
        "timeout_s": TIMEOUT, "run_timeout_s": RUN_TIMEOUT, "bound_s": BOUND,
        "cases": [asdict(o) | {"expected": c.expect} for o, c in zip(outcomes, CASES)],
        "unexpected": [o.case for o in bad]})
    print(f"wrote {path}")
    if bad:
        sys.exit(f"unexpected outcomes: {', '.join(o.case for o in bad)}")


if __name__ == "__main__":
    main()
