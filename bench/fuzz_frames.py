"""Run the firmware's libFuzzer targets under ASan + UBSan: the frame parser
(firmware/fuzz/fuzz_frame_parser.c) for 10^6 executions, and the request handling with a packed
model (firmware/fuzz/fuzz_app.c, hello_world_int8) for 10^5; executions, time, coverage, corpus,
crashes per target; writes bench/results/fuzz_frames.json.

    python bench/fuzz_frames.py [--runs N] [--app-runs N] [--seed S]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import model_path, print_table, write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sanitized_build import (BuildError, build_app_fuzzer, build_fuzzer, model_independent_objects,  # noqa: E402
                             seed_corpus)

from mcuq import pipeline  # noqa: E402

APP_MODEL = "hello_world_int8"


def fuzz(exe: Path, runs: int, seed: int, work: Path) -> dict:
    """One libFuzzer run of ``exe`` from the seed corpus; its figures."""
    corpus = seed_corpus(work / f"{exe.name}-corpus")
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), f"-runs={runs}", f"-seed={seed}", "-max_len=4096", "-print_final_stats=1",
                           f"-artifact_prefix={work}/", str(corpus)], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    stats = {k: int(v) for k, v in re.findall(r"stat::(\w+):\s+(\d+)", proc.stderr)}
    cov = re.findall(r"cov: (\d+) ft: (\d+)", proc.stderr)
    crashes = sorted(p.name for p in work.iterdir() if p.name.startswith(("crash-", "leak-", "timeout-", "oom-")))
    if proc.returncode != 0 or crashes:
        print(proc.stderr[-3000:], file=sys.stderr)
    return {"executions": stats.get("number_of_executed_units", 0), "seconds": round(seconds, 1),
            "execs_per_second": stats.get("average_exec_per_sec", 0), "peak_rss_mb": stats.get("peak_rss_mb", 0),
            "coverage_edges": int(cov[-1][0]) if cov else 0, "corpus_files": len(list(corpus.iterdir())),
            "exit_code": proc.returncode, "crashes": crashes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="executions of the frame parser target")
    parser.add_argument("--app-runs", type=int, default=100_000, help="executions of the request handling target")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            parser_exe = build_fuzzer(tmp / "fuzz_frame_parser")
            pipeline.pack(model_path(APP_MODEL), "qemu-m7", tmp / "packed", pipeline.QuantOptions(), print)
            app_exe = build_app_fuzzer(tmp / "packed", model_independent_objects(tmp / "shared"), tmp / "fuzz_app")
        except BuildError as e:
            sys.exit(str(e))
        for name, exe, runs in (("frame parser", parser_exe, args.runs),
                                (f"request handling ({APP_MODEL})", app_exe, args.app_runs)):
            work = tmp / f"{exe.name}-run"
            work.mkdir()
            results[name] = fuzz(exe, runs, args.seed, work)
    keys = list(next(iter(results.values())))
    print_table(["target", *keys], [[name, *(r[k] for k in keys)] for name, r in results.items()])
    print(f"wrote {write_results('fuzz_frames', {'seed': args.seed, 'targets': results})}")
    if any(r["exit_code"] != 0 or r["crashes"] for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
