"""Run the frame parser's libFuzzer target (firmware/fuzz/fuzz_frame_parser.c, ASan + UBSan) for
10^6 executions: executions, time, coverage, corpus, crashes; writes bench/results/fuzz_frames.json.

    python bench/fuzz_frames.py [--runs N] [--seed S]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import print_table, write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sanitized_build import BuildError, build_fuzzer, seed_corpus  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            exe = build_fuzzer(tmp / "fuzz_frame_parser")
        except BuildError as e:
            sys.exit(str(e))
        corpus = seed_corpus(tmp / "corpus")
        t0 = time.perf_counter()
        proc = subprocess.run([str(exe), f"-runs={args.runs}", f"-seed={args.seed}", "-max_len=4096",
                               "-print_final_stats=1", f"-artifact_prefix={tmp}/", str(corpus)],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        crashes = sorted(p.name for p in tmp.glob("*") if p.name.startswith(("crash-", "leak-", "timeout-", "oom-")))
        corpus_size = len(list(corpus.iterdir()))
    stats = {k: int(v) for k, v in re.findall(r"stat::(\w+):\s+(\d+)", proc.stderr)}
    cov = re.findall(r"cov: (\d+) ft: (\d+)", proc.stderr)
    result = {"runs_requested": args.runs, "seed": args.seed, "executions": stats.get("number_of_executed_units", 0),
              "seconds": round(seconds, 1), "execs_per_second": stats.get("average_exec_per_sec", 0),
              "peak_rss_mb": stats.get("peak_rss_mb", 0), "coverage_edges": int(cov[-1][0]) if cov else 0,
              "features": int(cov[-1][1]) if cov else 0, "corpus_files": corpus_size,
              "exit_code": proc.returncode, "crashes": crashes}
    print_table(["what", "value"], [[k, v] for k, v in result.items()])
    print(f"wrote {write_results('fuzz_frames', result)}")
    if proc.returncode != 0 or crashes:
        print(proc.stderr[-3000:], file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
