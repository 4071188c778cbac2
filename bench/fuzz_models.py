"""Fuzz `mcuq inspect`, `sim` and `pack` with 10,000 structure-aware mutants of the shared models
(tests/model_mutator.py): counts by outcome (ok / clear error by class / failure) per command,
the slowest case and the largest peak memory; writes bench/results/fuzz_models.json.

    python bench/fuzz_models.py [--count N] [--seed S] [--jobs J]
    python bench/fuzz_models.py --replay    # the failures in the JSON again, after fixes
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import MODELS, RESULTS, print_table, write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from model_mutator import COMMANDS, Case, Outcome, Sandbox, case_of, cases  # noqa: E402


def replay() -> None:
    """Run the failing cases recorded in fuzz_models.json again; record their outcomes beside them."""
    data = json.loads((RESULTS / "fuzz_models.json").read_text())
    sandbox, rows = Sandbox(), []
    try:
        for k, f in enumerate(data["failures"]):
            out = sandbox.run(case_of(next(MODELS.glob(f"*/{f['model']}.tflite")), f["seed"]), k)
            rows.append({"model": f["model"], "seed": f["seed"], "mutation": f["mutation"], "results": out.results})
    finally:
        sandbox.close()
    print_table(["model", "seed", *COMMANDS],
                [[r["model"], str(r["seed"]), *(r["results"].get(c, "?") for c in COMMANDS)] for r in rows])
    data["replayed_failures"] = rows
    print(f"wrote {write_results('fuzz_models', data)}")
    sys.exit(1 if any(v.startswith("FAIL") for r in rows for v in r["results"].values()) else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="cases run side by side (one worker process each)")
    parser.add_argument("--replay", action="store_true", help="run the failures of the last run again")
    args = parser.parse_args()
    if args.replay:
        return replay()
    models = sorted(MODELS.glob("*/*.tflite"))
    if not models:
        sys.exit(f"no models under {MODELS}")
    counts = {c: Counter() for c in COMMANDS}
    mutations, failures, per_model = Counter(), [], Counter()
    slowest, peak = (0.0, ""), (0, "")
    local, sandboxes = threading.local(), []

    def run(k_case: tuple[int, Case]) -> Outcome:
        if not hasattr(local, "sandbox"):  # one worker process per thread
            local.sandbox = Sandbox()
            sandboxes.append(local.sandbox)
        return local.sandbox.run(k_case[1], k_case[0])

    t0 = time.perf_counter()
    numbered = enumerate(cases(models, args.count, args.seed))
    with ThreadPoolExecutor(args.jobs) as pool:
        # in batches, so that only a few mutants are held in memory at once
        batches = iter(lambda: list(itertools.islice(numbered, 16 * args.jobs)), [])
        for k, out in enumerate(o for batch in batches for o in pool.map(run, batch)):
            case = out.case
            mutations[case.mutation.split(":")[0]] += 1
            per_model[case.model] += out.seconds
            label = f"{case.model} seed {case.seed} ({case.mutation})"
            for command in COMMANDS:
                counts[command][out.results.get(command, out.results.get("case", "FAIL:harness"))] += 1
            if out.failed:
                failures.append({"model": case.model, "seed": case.seed, "mutation": case.mutation,
                                 "results": out.results})
                print(f"FAIL {label}: {out.results}", flush=True)
            slowest = max(slowest, (out.seconds, label))
            peak = max(peak, (out.peak_bytes, label))
            if (k + 1) % 500 == 0:
                print(f"{k + 1} cases, {time.perf_counter() - t0:.0f} s, {len(failures)} failures", flush=True)
    for sandbox in sandboxes:
        sandbox.close()
    seconds = time.perf_counter() - t0
    outcomes = sorted({o for c in counts.values() for o in c}, key=lambda o: (o != "ok", o.startswith("FAIL"), o))
    print(f"\n{args.count} cases over {len(models)} models in {seconds:.0f} s "
          f"(seed {args.seed}; mutations {dict(mutations)})\n")
    print_table(["outcome", *COMMANDS], [[o, *(counts[c][o] for c in COMMANDS)] for o in outcomes])
    print(f"\nfailures {len(failures)}; slowest case {slowest[0]:.2f} s ({slowest[1]}); "
          f"largest peak memory {peak[0] / 2**20:.0f} MiB ({peak[1]})")
    path = write_results("fuzz_models", {
        "cases": args.count, "seed": args.seed, "jobs": args.jobs, "models": [m.name for m in models],
        "seconds": round(seconds, 1),
        "mutations": dict(mutations),
        "seconds_per_model": {m: round(t, 1) for m, t in sorted(per_model.items())},
        "outcomes": {c: dict(counts[c]) for c in COMMANDS},
        "failures": failures, "slowest_case": {"seconds": round(slowest[0], 2), "case": slowest[1]},
        "peak_memory": {"bytes": peak[0], "case": peak[1]},
    })
    print(f"wrote {path}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
