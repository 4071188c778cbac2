"""Structure-aware mutation of .tflite files and a sandboxed runner of `mcuq inspect/sim/pack` on
them, shared by tests/test_fuzz_models.py (bounded, in CI) and bench/fuzz_models.py (10,000 cases).

The mutator walks the flatbuffer itself (tflite's schema: Model, OperatorCode, SubGraph, Tensor,
QuantizationParameters, Operator, Buffer, builtin options tables) and records every site worth
breaking: offsets, vtables, vector lengths, dimensions, types, buffer indices, quantization
arrays, opcode indices, operator and graph tensor indices, option values. A case is a seeded
choice among truncation, bit flips, byte runs, rewrites of such sites (sometimes several) and
copies of one site's value onto another of its kind; case_of() remakes a case from its seed.

Cases run in a child process (spawned, so a crash, hang or memory blow-up cannot take the
caller down) under an address-space cap, with a time limit per case. Each command ends in
"ok" (checked: a readable result), "error:<ErrorClass>" (exit 2, one "error: ..." line after
any "WARNING: " lines, a McuqError, nothing left behind) or "FAIL:<what>" (traceback, internal
error, several lines, crash, hang, partial output, memory cap hit). Seeded, not hypothesis: a
case is one integer to replay, and the same seeds give the same counts on every machine.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import resource
import shutil
import struct
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

COMMANDS = ("inspect", "sim", "pack")
CASE_SECONDS = 60.0  # a case taking longer is a hang (a normal one takes well under 5 s)
MEMORY_CAP = 6 << 30  # address space of the worker: a case needing more is a memory blow-up
INPUT_ELEMENTS = 1 << 20  # sim/calibration inputs are made for inputs up to this size

# --- the flatbuffer walk ------------------------------------------------------------------------

# table -> {vtable slot: (kind, element or table, site label)} for the fields worth breaking.
_SCHEMA = {
    "Model": {1: ("tables", "OperatorCode", None), 2: ("tables", "SubGraph", None), 3: ("string", None, None),
              4: ("tables", "Buffer", None)},
    "OperatorCode": {0: ("scalar", "b", "builtin_code"), 1: ("string", None, None), 2: ("scalar", "i", "op_version"),
                     3: ("scalar", "i", "builtin_code")},
    "SubGraph": {0: ("tables", "Tensor", None), 1: ("vector", "i", "graph_io"), 2: ("vector", "i", "graph_io"),
                 3: ("tables", "Operator", None), 4: ("string", None, None)},
    "Tensor": {0: ("vector", "i", "dim"), 1: ("scalar", "b", "dtype"), 2: ("scalar", "I", "buffer_index"),
               3: ("string", None, None), 4: ("table", "Quantization", None), 7: ("vector", "i", "dim")},
    "Quantization": {0: ("vector", "f", "minmax"), 1: ("vector", "f", "minmax"), 2: ("vector", "f", "scale"),
                     3: ("vector", "q", "zero_point"), 6: ("scalar", "i", "quant_dim")},
    "Operator": {0: ("scalar", "I", "opcode_index"), 1: ("vector", "i", "op_io"), 2: ("vector", "i", "op_io"),
                 3: ("scalar", "B", "options_type"), 4: ("table", "Options", None),
                 5: ("vector", "B", None)},
    "Buffer": {0: ("vector", "B", None), 1: ("scalar", "Q", "buffer_extent"), 2: ("scalar", "Q", "buffer_extent")},
}


@dataclass(frozen=True)
class Site:
    """A place in the file: what it is (``kind``), where, and its struct format."""

    kind: str
    pos: int
    fmt: str


@dataclass
class _Walk:
    buf: bytes
    sites: list[Site] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)

    def u32(self, p: int) -> int:
        return struct.unpack_from("<I", self.buf, p)[0]

    def add(self, kind: str, pos: int, fmt: str) -> None:
        self.sites.append(Site(kind, pos, fmt))

    def ref(self, p: int) -> int:
        """Follow the uoffset stored at ``p`` (recorded as an offset site)."""
        self.add("uoffset", p, "I")
        return p + self.u32(p)

    def table(self, pos: int, name: str) -> None:
        if pos in self.seen:
            return
        self.seen.add(pos)
        vt = pos - struct.unpack_from("<i", self.buf, pos)[0]
        vsize = struct.unpack_from("<H", self.buf, vt)[0]
        self.add("soffset", pos, "i")
        self.add("vtable", vt, "H")
        self.add("vtable", vt + 2, "H")
        fields = {}
        for slot in range((vsize - 4) // 2):
            self.add("vtable", vt + 4 + 2 * slot, "H")
            off = struct.unpack_from("<H", self.buf, vt + 4 + 2 * slot)[0]
            if off:
                fields[slot] = pos + off
        if name == "Options":  # any builtin options table: scalar fields, width from the layout
            ends = sorted(fields.values()) + [pos + struct.unpack_from("<H", self.buf, vt + 2)[0]]
            for start, end in zip(ends, ends[1:]):
                width = end - start
                fmt = "i" if width >= 4 else "h" if width >= 2 else "b"
                self.add("option", start, fmt)
            return
        for slot, p in fields.items():
            spec = _SCHEMA[name].get(slot)
            if spec is None:
                continue
            kind, elem, label = spec
            if kind == "scalar":
                self.add(label, p, elem)
            elif kind == "table":
                self.table(self.ref(p), elem)
            elif kind == "string":
                self.add("vec_len", self.ref(p), "I")
            else:
                start = self.ref(p)
                n = self.u32(start)
                self.add("vec_len", start, "I")
                if kind == "tables":
                    for k in range(n):
                        self.table(self.ref(start + 4 + 4 * k), elem)
                elif label is not None:
                    size = struct.calcsize(elem)
                    for k in range(min(n, 256)):
                        self.add(label, start + 4 + size * k, elem)


def sites_of(buf: bytes) -> list[Site]:
    """Every site of a well-formed .tflite file (the originals; mutants are never walked)."""
    walk = _Walk(buf)
    walk.table(walk.ref(0), "Model")
    return walk.sites


# --- mutations ----------------------------------------------------------------------------------

_INTERESTING = {
    "dim": [-1, -2, -(1 << 31), 0, (1 << 31) - 1, 1 << 16, 1 << 20, 1 << 24, 1000003, 3, 7],
    "graph_io": [-1, -2, 1 << 20, (1 << 31) - 1],
    "op_io": [-1, -2, 1 << 20, (1 << 31) - 1],
    "buffer_index": [0, 1, 1 << 20, (1 << 32) - 1],
    "quant_dim": [-1, 1, 2, 3, 4, 100, (1 << 31) - 1],
    "zero_point": [-129, 128, 255, -(1 << 63), (1 << 63) - 1, 1 << 40],
    "opcode_index": [1, 2, 1 << 16, (1 << 32) - 1],
    "builtin_code": [0, 1, 3, 4, 9, 17, 22, 25, 40, 255, -1, 1 << 20],
    "dtype": [0, 1, 2, 3, 7, 9, 10, 17, 18, 255],
    "option": [0, -1, 1, 2, 5, 127, -(1 << 31), (1 << 31) - 1, 1 << 16],
    "vec_len": [0, 1, (1 << 31) - 1, (1 << 32) - 1, 1 << 20],
    "uoffset": [0, 1, 4, (1 << 31) - 1, (1 << 32) - 4],
    "soffset": [0, 4, -4, (1 << 31) - 1, -(1 << 31)],
    "vtable": [0, 1, 4, 0xFFFF, 0x7FFF],
    "buffer_extent": [1, 8, 1 << 40, (1 << 64) - 1],
    "op_version": [0, -1, 1 << 20],
    "options_type": [0, 1, 2, 5, 255],
}
_SCALES = [0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e-45, 1e38, 3.4e38, 1e-30, 1.0]


def _write(buf: bytearray, site: Site, value) -> None:
    if site.pos + struct.calcsize("<" + site.fmt) > len(buf):
        return
    if site.fmt in "fd":
        struct.pack_into("<" + site.fmt, buf, site.pos, value)
        return
    bits = 8 * struct.calcsize(site.fmt)
    value = int(value) & ((1 << bits) - 1)
    struct.pack_into("<" + site.fmt.upper() if site.fmt.islower() else "<" + site.fmt, buf, site.pos, value)


def _read(buf: bytes, site: Site):
    return struct.unpack_from("<" + site.fmt, buf, site.pos)[0]


def _rewrite(buf: bytearray, site: Site, rng: random.Random) -> None:
    """Give ``site`` a value chosen for its kind: a boundary, a neighbour of the old one, or noise."""
    old = _read(buf, site)
    if site.fmt in "fd":
        _write(buf, site, rng.choice(_SCALES) if rng.random() < 0.8 else old * rng.choice([-1, 2, 0.5, 1e6]))
        return
    choice = rng.random()
    if choice < 0.6:
        value = rng.choice(_INTERESTING.get(site.kind, [0, -1, 1 << 30]))
    elif choice < 0.85:
        value = old + rng.choice([-4, -2, -1, 1, 2, 4, 8])
    else:
        value = rng.getrandbits(8 * struct.calcsize(site.fmt))
    _write(buf, site, value)


def _swap(buf: bytearray, sites: list[Site], rng: random.Random) -> None:
    """Copy one site's value onto another of the same kind (a plausible wrong index, dim or code)."""
    a, b = rng.choice(sites), rng.choice(sites)
    _write(buf, a, _read(buf, b))


MUTATIONS = ("truncate", "bitflip", "byte_run", "site", "swap", "stacked")


def mutate(original: bytes, sites: list[Site], rng: random.Random) -> tuple[str, bytes]:
    """One seeded mutant of ``original``: (what was done, its bytes)."""
    by_kind: dict[str, list[Site]] = {}
    for s in sites:
        by_kind.setdefault(s.kind, []).append(s)
    how = rng.choice(MUTATIONS)
    buf = bytearray(original)
    if how == "truncate":
        cut = rng.choice([rng.randrange(len(buf)), rng.choice(sites).pos, len(buf) - rng.randrange(1, 64)])
        return how, bytes(buf[:max(cut, 0)])
    if how == "bitflip":
        for _ in range(rng.choice([1, 1, 2, 4, 16])):
            p = rng.randrange(len(buf))
            buf[p] ^= 1 << rng.randrange(8)
        return how, bytes(buf)
    if how == "byte_run":
        start = rng.randrange(len(buf))
        n = min(rng.choice([1, 2, 4, 8, 64, 1024]), len(buf) - start)
        fill = rng.choice([b"\x00", b"\xff", b"\x7f", b"\x80", None])
        buf[start:start + n] = bytes(rng.getrandbits(8) for _ in range(n)) if fill is None else fill * n
        return how, bytes(buf)
    kinds = sorted(by_kind)
    if how == "swap":
        kind = rng.choice(kinds)
        _swap(buf, by_kind[kind], rng)
        return f"swap:{kind}", bytes(buf)
    done = []
    for _ in range(1 if how == "site" else rng.randint(2, 4)):
        kind = rng.choice(kinds)
        _rewrite(buf, rng.choice(by_kind[kind]), rng)
        done.append(kind)
    return f"{how}:{'+'.join(done)}", bytes(buf)


# --- running one case ---------------------------------------------------------------------------


def _inputs(model: Path, case_dir: Path, seed: int) -> tuple[Path, Path]:
    """Inputs (one sample) and calibration data (4 samples) for the graph the reader makes of
    ``model``; empty files' worth when it does not read or its inputs are unusable."""
    from mcuq.errors import McuqError
    from mcuq.reader import read_model

    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    try:
        graph = read_model(model)
        for k, t in enumerate(graph.input_tensors()):
            dt = np.dtype(t.dtype)
            if t.size > INPUT_ELEMENTS or dt.kind not in "iuf":
                break
            if dt.kind == "f":
                arrays[f"in{k}"] = rng.standard_normal((4, *t.shape)).astype(dt)
            else:
                info = np.iinfo(dt)
                arrays[f"in{k}"] = rng.integers(info.min, info.max, (4, *t.shape), endpoint=True).astype(dt)
    except (McuqError, TypeError):
        pass
    inputs, calib = case_dir / "in.npz", case_dir / "calib.npz"
    np.savez(inputs, **{k: a[0] for k, a in arrays.items()})
    np.savez(calib, **arrays)
    return inputs, calib


def _valid_result(command: str, out: Path, stdout: str) -> str | None:
    """Why a successful command's result is unusable, or None."""
    from mcuq.graphfile import load_graph

    if command == "inspect":
        return None if stdout.startswith("model ") and "arena" in stdout else "inspect printed no report"
    if command == "sim":
        with np.load(out) as npz:
            return None if "out0" in npz.files else "sim wrote no out0"
    manifest = json.loads((out / "manifest.json").read_text())
    load_graph(out / "graph")
    return None if (out / "src" / "mcuq_model.c").is_file() and manifest["model"] else "pack output incomplete"


def run_commands(model: Path, case_dir: Path, seed: int) -> dict[str, str]:
    """`mcuq inspect`, `sim` and `pack` on ``model`` in this process; outcome per command."""
    from click.testing import CliRunner

    from mcuq.cli import main
    from mcuq.errors import McuqError

    inputs, calib = _inputs(model, case_dir, seed)
    fast = ["--calib", str(calib), "--range-method", "minmax"]
    args = {"inspect": ["inspect", str(model)],
            "sim": ["sim", str(model), "--inputs", str(inputs), "--out", str(case_dir / "out.npz"), *fast],
            "pack": ["pack", str(model), "-o", str(case_dir / "packed"), *fast]}
    outs = {"inspect": None, "sim": case_dir / "out.npz", "pack": case_dir / "packed"}
    outcomes = {}
    for command in COMMANDS:
        before = set(os.listdir(case_dir))
        result = CliRunner().invoke(main, args[command])
        lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("WARNING: ")]
        cause = result.exception.__context__ if isinstance(result.exception, SystemExit) else result.exception
        if "Traceback" in result.output or "Traceback" in result.stderr:
            outcomes[command] = "FAIL:traceback"
        elif result.exit_code == 0:
            try:
                why = _valid_result(command, outs[command], result.stdout)
            except Exception as e:  # an unreadable result is a failure, whatever the reason
                why = f"{type(e).__name__}: {e}"
            outcomes[command] = "ok" if why is None else f"FAIL:invalid result ({why})"
        elif isinstance(cause, MemoryError):
            outcomes[command] = "FAIL:memory"
        elif not isinstance(cause, McuqError):
            outcomes[command] = f"FAIL:internal ({type(cause).__name__}: {str(cause)[:200]})"
        elif result.exit_code != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
            outcomes[command] = f"FAIL:not one error line (exit {result.exit_code}, {len(lines)} lines)"
        elif set(os.listdir(case_dir)) != before:
            outcomes[command] = f"FAIL:left {sorted(set(os.listdir(case_dir)) - before)} behind"
        else:
            outcomes[command] = f"error:{type(cause).__name__}"
    return outcomes


def _peak_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _worker(conn, memory_cap: int) -> None:
    """Child process: run cases sent over ``conn`` until it closes."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))
    from mcuq import cli, pipeline  # noqa: F401  (import once, before the first case's clock starts)

    # pack's SQNR plot takes matplotlib about a second a float model and reads only the report's
    # numbers (tests/test_cli.py checks it); the stub keeps the fuzzing at a few cases a second
    pipeline._sqnr_png = lambda report: b"\x89PNG stub"

    while True:
        try:
            case_id, data, seed = conn.recv()
        except EOFError:
            return
        case_dir = Path(tempfile.mkdtemp(prefix=f"mcuq-fuzz-{case_id}-"))
        try:
            model = case_dir / "model.tflite"
            model.write_bytes(data)
            _peak_reset()
            t0 = time.perf_counter()
            try:
                outcomes = run_commands(model, case_dir, seed)
            except BaseException as e:  # the harness itself must not die with the case
                outcomes = {"harness": f"FAIL:harness ({type(e).__name__}: {e}; "
                                       f"{traceback.format_exc(limit=-3)[-600:]})"}
            conn.send((outcomes, time.perf_counter() - t0, _peak_bytes()))
        finally:
            shutil.rmtree(case_dir, ignore_errors=True)


@dataclass(frozen=True)
class Case:
    """One mutant: its source model, seed, mutation and bytes."""

    model: str
    seed: int
    mutation: str
    data: bytes


@dataclass(frozen=True)
class Outcome:
    case: Case
    results: dict[str, str]  # command -> "ok" | "error:<Class>" | "FAIL:<what>"
    seconds: float
    peak_bytes: int

    @property
    def failed(self) -> bool:
        return any(r.startswith("FAIL") for r in self.results.values())


class Sandbox:
    """A spawned worker process that runs cases; restarted after a crash or a hang."""

    def __init__(self, case_seconds: float = CASE_SECONDS, memory_cap: int = MEMORY_CAP):
        self.case_seconds = case_seconds
        self.memory_cap = memory_cap
        self.ctx = multiprocessing.get_context("spawn")
        self.proc = None
        self.conn = None

    def _start(self) -> None:
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, self.memory_cap), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.conn.close()
        self.proc = self.conn = None

    def run(self, case: Case, case_id: int) -> Outcome:
        if self.proc is None:
            self._start()
        t0 = time.perf_counter()
        self.conn.send((case_id, case.data, case.seed))
        if not self.conn.poll(self.case_seconds + 30):  # + the worker's start-up on the first case
            self._kill()
            return Outcome(case, {"case": f"FAIL:hang (over {self.case_seconds:.0f} s)"}, time.perf_counter() - t0, 0)
        try:
            results, seconds, peak = self.conn.recv()
        except EOFError:
            code = self.proc.exitcode if self.proc else None
            self._kill()
            return Outcome(case, {"case": f"FAIL:crash (worker exit {code})"}, time.perf_counter() - t0, 0)
        if seconds > self.case_seconds:
            results = {**results, "case": f"FAIL:hang ({seconds:.0f} s)"}
        return Outcome(case, results, seconds, peak)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.proc.join(timeout=10)
            if self.proc.is_alive():
                self.proc.kill()
        self.proc = self.conn = None


def case_of(model: Path, case_seed: int) -> Case:
    """The mutant ``cases`` made of ``model`` with ``case_seed`` (to replay a failure)."""
    data = model.read_bytes()
    mutation, mutant = mutate(data, sites_of(data), random.Random(case_seed))
    return Case(model.stem, case_seed, mutation, mutant)


def cases(models: list[Path], count: int, seed: int):
    """``count`` seeded mutants, round-robin over ``models`` (each walked once)."""
    originals = [(m.stem, m.read_bytes()) for m in models]
    walked = [(name, data, sites_of(data)) for name, data in originals]
    for k in range(count):
        name, data, sites = walked[k % len(walked)]
        case_seed = seed * 1_000_003 + k
        mutation, mutant = mutate(data, sites, random.Random(case_seed))
        yield Case(name, case_seed, mutation, mutant)
