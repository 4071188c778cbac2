"""Soak: 1,000 seeded random vectors through `mcuq verify` on qemu-m7 for kws_ref_model.

Every output must be bit-exact and the serial link must lose nothing (no corrupt frame, no
retry). A response counts as lost only after --timeout seconds (default 10, the CLI's is 2): on a
shared, overloaded machine QEMU can stall past 2 s, which is load, not the link.
Prints a table, writes bench/results/soak.json.
Usage: python bench/soak.py [--count N] [--model NAME] [--board BOARD] [--timeout S]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import model_path, print_table, write_results  # noqa: E402

from mcuq import flash, pipeline  # noqa: E402
from mcuq.build import build  # noqa: E402
from mcuq.graphfile import load_graph  # noqa: E402
from mcuq.simulate import prepare_graph, run_integer  # noqa: E402
from mcuq.verify import random_samples, verify  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--model", default="kws_ref_model")
    ap.add_argument("--board", default="qemu-m7")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before a response counts as lost")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mcuq-soak-") as tmp:
        pack = Path(tmp) / args.model
        pipeline.pack(model_path(args.model), args.board, pack, pipeline.QuantOptions(), print)
        build(pack)
        graph = load_graph(pack / "graph")
        flash.flash(pack)
        marks: list[float] = []
        load = os.getloadavg()[0]
        try:
            start = time.monotonic()
            result = verify(pack, count=args.count, seed=0, timeout=args.timeout,
                            progress=lambda done, n: marks.append(time.monotonic()))
            seconds = time.monotonic() - start
        finally:
            flash.stop(pack)
    # the host simulator's share of the time: the same vectors, simulated alone
    xs = random_samples(graph, args.count, 0)
    params = prepare_graph(graph)
    t0 = time.monotonic()
    for s in range(args.count):
        run_integer(graph, [a[s] for a in xs], all_tensors=True, params=params)
    host_seconds = time.monotonic() - t0
    in_bytes = sum(t.nbytes for t in graph.input_tensors())
    out_bytes = sum(t.nbytes for t in graph.output_tensors())
    link = result.link
    steps = np.diff(marks) if len(marks) > 1 else np.array([seconds])
    row = {
        "model": args.model, "board": args.board, "vectors": result.samples, "bit_exact": result.exact,
        "mismatches": result.samples - result.exact, "lost_frames": link.lost, "retries": link.retries,
        "corrupt_frames": link.corrupt, "late_answers": link.stale, "timeout_s": args.timeout,
        "requests": link.requests, "seconds": round(seconds, 2),
        "ms_per_vector": round(1000 * seconds / result.samples, 1),
        "ms_per_vector_p99": round(1000 * float(np.percentile(steps, 99)), 1),
        "host_simulator_seconds": round(host_seconds, 2), "input_bytes": in_bytes, "output_bytes": out_bytes,
        "instructions_per_inference": round(result.total),
        "host_load_average": round(load, 1),  # other work on the machine stretches the time
    }
    print_table(["model", "board", "vectors", "mismatches", "lost frames", "retries", "seconds", "ms/vector",
                 "host sim s"],
                [[row["model"], row["board"], row["vectors"], row["mismatches"], row["lost_frames"],
                  row["retries"], row["seconds"], row["ms_per_vector"], row["host_simulator_seconds"]]])
    print(f"wrote {write_results('soak', row)}")
    if row["mismatches"] or row["lost_frames"] or row["corrupt_frames"]:
        sys.exit(f"soak failed: {row['mismatches']} mismatches, {row['lost_frames']} lost frames, "
                 f"{row['corrupt_frames']} corrupt frames")


if __name__ == "__main__":
    main()
