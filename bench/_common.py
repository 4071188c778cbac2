"""Shared by the bench scripts: where the shared models are, table printing, atomic result files,
capturing what native code (TFLM) prints on file descriptor 2, and running a model on a target
(pack, build, flash, verify bit-exactly, stop)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mcuq import flash, pipeline
from mcuq.build import BuildResult, build
from mcuq.verify import VerifyResult, verify

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "models"
RESULTS = ROOT / "bench" / "results"


def model_path(name: str) -> Path:
    """The shared model file called ``name`` (without .tflite), wherever it sits under MODELS."""
    found = sorted(MODELS.glob(f"*/{name}.tflite"))
    if not found:
        sys.exit(f"model {name}.tflite not found under {MODELS}")
    return found[0]


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a right-aligned plain-text table (first column left-aligned)."""
    cells = [list(map(str, header))] + [[f"{v:,}" if isinstance(v, int) else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, r in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def write_results(name: str, data: Any) -> Path:
    """Write bench/results/<name>.json atomically (temporary file, then rename)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return path


@dataclass
class Captured:
    text: str = ""


@contextmanager
def native_stderr() -> Iterator[Captured]:
    """Capture file descriptor 2, where C/C++ code writes (Python's sys.stderr never sees it)."""
    sys.stderr.flush()
    saved = os.dup(2)
    captured = Captured()
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.text = tmp.read().decode("utf-8", "replace")


@dataclass(frozen=True)
class OnTarget:
    """A model packed, built and verified bit-exact on a board by `run_on_target`."""

    packed: pipeline.Packed
    built: BuildResult
    result: VerifyResult  # result.total: instructions (QEMU) or cycles (chip) per inference


def run_on_target(model: Path, board: str, pack_dir: Path, count: int,
                  warn: Callable[[str], None] = print,
                  options: pipeline.QuantOptions = pipeline.QuantOptions(), optimize: str = "size") -> OnTarget:
    """Pack ``model`` (a .tflite, quantized with ``options`` if float) for ``board`` into ``pack_dir``,
    build the firmware (`mcuq build --optimize`), flash it (emulated boards: start QEMU), run ``count`` seeded random inputs
    with `mcuq verify` and stop the emulator, whatever happened. Exits with verify's table when
    any output is not bit-exact: a count of a wrong computation is worth nothing."""
    packed = pipeline.pack(model, board, pack_dir, options, warn)
    built = build(pack_dir, optimize=optimize)
    try:
        flash.flash(pack_dir)
        result = verify(pack_dir, count=count)
    finally:
        flash.stop(pack_dir)
    if not result.ok:
        raise SystemExit(f"{model.name}: not bit-exact on {board}:\n{result.format_table()}")
    return OnTarget(packed, built, result)
