"""The second host simulator: the firmware's own C (kernels, runtime, a pack output's model)
compiled for the host through cffi, so the code that runs on the chip can be checked against the
numpy simulator without a board.

The firmware sources are compiled with the target's strictness (gcc -O2 -std=c99 -Wall -Wextra
-Werror) into objects that a small cffi module links: kernel objects are shared between models,
the runtime, model and module are kept in DIR/build/host, all named by a hash of what they were
built from and written atomically.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from mcuq.errors import CalibrationError, McuqError, ModelError
from mcuq.graphfile import load_graph
from mcuq.ir import NO_TENSOR, Graph
from mcuq.pack import PAIRED_DTYPE, PRUNED_DTYPE, unpaired_filter, unpruned_filter

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
CFLAGS = ("-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-fPIC")
ALIGN = 16
GUARD = bytes(range(64))  # written after the arena; a run that changes it wrote out of bounds
_DTYPES = {0: np.int8, 1: np.int16, 2: np.int32, 3: np.int64, 4: np.float32, 5: np.uint8,
           6: "int4",  # int4: packed two per byte, read back unpacked to int8
           PAIRED_DTYPE: "int8 paired",  # a row-paired FULLY_CONNECTED filter, read back unpaired
           PRUNED_DTYPE: "int8 pruned"}  # a CONV_2D filter without its constant channels' rows, read back whole

# What Python sees of the runtime and the packed tables (cffi checks it against the real headers).
_CDEF = """
typedef enum { MCUQ_OK, MCUQ_ERR_PARAMS, MCUQ_ERR_RANGE, MCUQ_ERR_UNSUPPORTED, ... } mcuq_status_t;
typedef struct { const void *data; int32_t arena_offset; int32_t bytes; uint8_t dtype; uint8_t rank;
                 int32_t shape[4]; ...; } mcuq_tensor_t;
typedef struct { uint8_t op; uint8_t num_inputs; uint8_t num_outputs; const int16_t *inputs;
                 const int16_t *outputs; ...; } mcuq_node_t;
typedef struct { int16_t tensor; ...; } mcuq_io_t;
#define MCUQ_NUM_TENSORS ...
#define MCUQ_NUM_NODES ...
#define MCUQ_NUM_INPUTS ...
#define MCUQ_NUM_OUTPUTS ...
#define MCUQ_ARENA_BYTES ...
extern const mcuq_tensor_t mcuq_tensors[];
extern const mcuq_node_t mcuq_nodes[];
extern const mcuq_io_t mcuq_inputs[];
extern const mcuq_io_t mcuq_outputs[];
mcuq_status_t mcuq_run(uint8_t *arena, int last_node, uint32_t *node_counts);
mcuq_status_t mcuq_run_nodes(uint8_t *arena, int first_node, int last_node, uint32_t *node_counts,
                             int *failed_node);
void *mcuq_tensor_data(uint8_t *arena, int slot);
int32_t mcuq_tensor_bytes(int slot);
"""

# The host port: the counter is a monotonic nanosecond clock (wraps; deltas stay right).
_HOST_PORT = """
#include <time.h>
#include "mcuq_model.h"
#include "mcuq_runtime.h"

uint32_t mcuq_port_counter(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
}
"""


class HostBuildError(McuqError):
    """The host C build failed: no compiler, or the firmware sources do not compile."""


class KernelError(McuqError):
    """A firmware kernel returned a non-zero status on the host."""


def object_cache() -> Path:
    """Where model-independent objects (the kernels) are kept: $MCUQ_CACHE, else the user's cache
    directory (the store mcuq.build uses; the keys differ)."""
    if os.environ.get("MCUQ_CACHE"):
        return Path(os.environ["MCUQ_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mcuq" / "objects"


def _compiler() -> tuple[str, str]:
    """Path and version line of $CC (default gcc)."""
    name = os.environ.get("CC", "gcc")
    cc = shutil.which(name)
    if cc is None:
        raise HostBuildError(f"no C compiler: the host C simulator needs {name} on PATH (install gcc or set $CC)")
    return cc, _version(cc)


@lru_cache(maxsize=None)
def _version(cc: str) -> str:
    return subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.partition("\n")[0]


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update((part.encode() if isinstance(part, str) else part) + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class _Unit:
    """One C file and the object it compiles to (named by a hash of everything it depends on)."""

    source: Path
    obj: Path


def _units(cc: tuple[str, str], pack_dir: Path, firmware: Path) -> list[_Unit]:
    """Kernels (objects in the shared cache), then runtime and model (objects in DIR/build/host)."""
    fw_headers = sorted([*(firmware / "include").glob("*.h"), *(firmware / "kernels").glob("*.h")])
    model_headers = [*fw_headers, *sorted((firmware / "runtime").glob("*.h")), *sorted((pack_dir / "src").glob("*.h"))]
    groups = [(sorted((firmware / "kernels").glob("*.c")), fw_headers, object_cache()),
              ([firmware / "runtime" / "mcuq_runtime.c", pack_dir / "src" / "mcuq_model.c"], model_headers,
               pack_dir / "build" / "host")]
    units = []
    for sources, headers, store in groups:
        shared = [h.read_bytes() for h in headers]
        for src in sources:
            if not src.is_file():
                raise HostBuildError(f"{src}: firmware source missing")
            key = _digest("host", *cc, *CFLAGS, src.read_bytes(), *shared)
            units.append(_Unit(src, store / f"{src.stem}-{key[:20]}.o"))
    return units


def _compile(cc: str, unit: _Unit, includes: Sequence[Path]) -> str | None:
    """Compile ``unit`` unless its object exists; the first error line on failure, else None."""
    if unit.obj.exists():
        return None
    unit.obj.parent.mkdir(parents=True, exist_ok=True)
    tmp = unit.obj.with_name(f".{unit.obj.name}.{os.getpid()}.tmp")
    try:
        done = subprocess.run([cc, *CFLAGS, *(f"-I{d}" for d in includes), "-c", str(unit.source), "-o", str(tmp)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            return next((line for line in done.stderr.splitlines() if "error" in line), done.stderr.strip())
        os.replace(tmp, unit.obj)  # atomic: parallel builds may race to the same object
        return None
    finally:
        tmp.unlink(missing_ok=True)


def build_module(pack_dir: str | Path, firmware: Path = FIRMWARE) -> ModuleType:
    """Compile (or reuse) the cffi module of a pack output and import it.

    Kernel objects are shared between models through object_cache(); the runtime, the model and
    the module live in DIR/build/host. Every name carries a hash of the sources, headers,
    compiler and flags it was built from, so nothing stale is ever loaded.
    """
    import cffi

    pack_dir = Path(pack_dir)
    if not (pack_dir / "src" / "mcuq_model.c").is_file():
        raise ModelError(f"{pack_dir}: not an mcuq pack output (no src/mcuq_model.c)")
    cc = _compiler()
    units = _units(cc, pack_dir, firmware)
    name = "_mcuq_host_" + _digest(_CDEF, _HOST_PORT, sys.version, *(u.obj.name for u in units))[:16]
    if name in sys.modules:
        return sys.modules[name]
    cache = pack_dir / "build" / "host"
    built = next(cache.glob(f"{name}.*"), None) if cache.is_dir() else None
    if built is None:
        includes = [pack_dir / "src", firmware / "include", firmware / "runtime"]
        cache.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            errors = list(pool.map(lambda u: _compile(cc[0], u, includes), units))
        for unit, error in zip(units, errors):
            if error is not None:
                raise HostBuildError(f"{unit.source}: does not compile for the host: {error}")
        tmp = Path(tempfile.mkdtemp(prefix=".build.", dir=cache))
        try:
            ffi = cffi.FFI()
            ffi.cdef(_CDEF)
            ffi.set_source(name, _HOST_PORT, include_dirs=[str(d) for d in includes],
                           extra_objects=[str(u.obj) for u in units])
            try:
                so = Path(ffi.compile(tmpdir=str(tmp)))
            except Exception as e:  # cffi raises distutils/setuptools errors of several types
                raise HostBuildError(f"{pack_dir}: building the cffi host module failed: {e}") from None
            built = cache / so.name
            os.replace(so, built)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        keep = {built, *(u.obj for u in units)}
        for stale in cache.glob("*"):
            if stale.is_file() and not stale.name.startswith(".") and stale not in keep:
                stale.unlink(missing_ok=True)
    spec = importlib.util.spec_from_file_location(name, built)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


@dataclass(frozen=True)
class _Slot:
    """One row of the tensor table as numpy sees it."""

    dtype: type
    shape: tuple[int, ...]
    nbytes: int

    @staticmethod
    def of(entry: Any) -> _Slot:
        """From an mcuq_tensor_t row."""
        return _Slot(_DTYPES[entry.dtype], tuple(entry.shape[i] for i in range(entry.rank)), entry.bytes)


class HostModel:
    """A pack output's firmware, compiled for the host, with one 16-byte aligned arena (followed
    by guard bytes that every run checks).

    ``ffi`` and ``lib`` are the cffi module (the runtime API of mcuq_runtime.h and the packed
    tables), ``arena`` the arena pointer, for callers that drive the runtime themselves.
    """

    def __init__(self, pack_dir: str | Path):
        self.pack_dir = Path(pack_dir)
        self.graph: Graph = load_graph(self.pack_dir / "graph")
        module = build_module(self.pack_dir)
        self.ffi, self.lib = ffi, lib = module.ffi, module.lib
        self.slots = [_Slot.of(lib.mcuq_tensors[s]) for s in range(lib.MCUQ_NUM_TENSORS)]
        nodes = [lib.mcuq_nodes[k] for k in range(lib.MCUQ_NUM_NODES)]
        self.node_inputs = [[int(n.inputs[i]) for i in range(n.num_inputs)] for n in nodes]
        self.node_outputs = [[int(n.outputs[i]) for i in range(n.num_outputs)] for n in nodes]
        self.input_slots = [int(lib.mcuq_inputs[k].tensor) for k in range(lib.MCUQ_NUM_INPUTS)]
        self.output_slots = [int(lib.mcuq_outputs[k].tensor) for k in range(lib.MCUQ_NUM_OUTPUTS)]
        self.tensor_of_slot = self._slot_map()
        self._raw = ffi.new("uint8_t[]", lib.MCUQ_ARENA_BYTES + ALIGN + len(GUARD))
        self.arena = self._raw + (-int(ffi.cast("uintptr_t", self._raw)) % ALIGN)
        self._guard = ffi.buffer(self.arena + lib.MCUQ_ARENA_BYTES, len(GUARD))
        self._guard[:] = GUARD

    def _slot_map(self) -> dict[int, int]:
        """Tensor-table slot -> graph tensor index, read off the node table against the graph."""
        g = self.graph
        if len(g.nodes) != len(self.node_inputs) or len(g.inputs) != len(self.input_slots):
            raise ModelError(f"{self.pack_dir}: graph/ and src/ disagree on the number of nodes or inputs")
        pairs = [*zip(self.input_slots, g.inputs), *zip(self.output_slots, g.outputs)]
        for node, ins, outs in zip(g.nodes, self.node_inputs, self.node_outputs):
            pairs += [(s, t) for s, t in zip(ins, node.inputs) if t != NO_TENSOR]
            pairs += zip(outs, node.outputs)
        mapping = dict(pairs)
        for s, t in pairs:
            tensor = g.tensor(t)
            pruned = self.slots[s].dtype == "int8 pruned" and self.slots[s].nbytes <= tensor.nbytes
            if mapping[s] != t or self.slots[s].shape != tensor.shape or (self.slots[s].nbytes != tensor.nbytes
                                                                           and not pruned):
                raise ModelError(f"{self.pack_dir}: tensor table slot {s} does not match graph tensor {t}")
        return mapping

    def _read(self, slot: int) -> np.ndarray:
        info = self.slots[slot]
        data = self.ffi.buffer(self.lib.mcuq_tensor_data(self.arena, slot), info.nbytes)
        if info.dtype == "int4":
            raw = np.frombuffer(data, np.uint8)
            nibbles = np.stack([raw & 0xF, raw >> 4], 1).reshape(-1)[:int(np.prod(info.shape))]
            return ((nibbles ^ 8).astype(np.int8) - 8).reshape(info.shape)
        if info.dtype == "int8 paired":
            return unpaired_filter(np.frombuffer(data, np.int8), info.shape[0], info.nbytes // info.shape[0])
        if info.dtype == "int8 pruned":
            return unpruned_filter(np.frombuffer(data, np.int8), self.graph.tensor(self.tensor_of_slot[slot]).data)
        return np.frombuffer(data, info.dtype).reshape(info.shape).copy()

    def _write_inputs(self, inputs: Sequence[np.ndarray]) -> None:
        if len(inputs) != len(self.input_slots):
            raise CalibrationError(f"{self.pack_dir}: the model takes {len(self.input_slots)} input(s), "
                                   f"got {len(inputs)}")
        for k, (slot, a) in enumerate(zip(self.input_slots, inputs)):
            info, a = self.slots[slot], np.asarray(a)
            if a.shape != info.shape or a.dtype != info.dtype:
                raise CalibrationError(f"input {k} must be {np.dtype(info.dtype).name} {list(info.shape)}, "
                                       f"got {a.dtype} {list(a.shape)}")
            self.ffi.memmove(self.lib.mcuq_tensor_data(self.arena, slot), np.ascontiguousarray(a), info.nbytes)

    def _run(self, first: int, last: int, counts: Any) -> None:
        failed = self.ffi.new("int *", -1)
        status = self.lib.mcuq_run_nodes(self.arena, first, last, counts, failed)
        if self._guard[:] != GUARD:
            nodes = f"node {first} {self.graph.nodes[first].op}" if first == last else f"nodes {first}..{last}"
            size = self.lib.MCUQ_ARENA_BYTES
            raise KernelError(f"{self.pack_dir}: {nodes} wrote past the end of the {size}-byte arena")
        if status != self.lib.MCUQ_OK:
            what = f"{self.ffi.string(self.ffi.cast('mcuq_status_t', status))} ({status})"
            k = failed[0]
            if not 0 <= k < len(self.graph.nodes):
                raise KernelError(f"{self.pack_dir}: mcuq_run_nodes({first}, {last}) returned {what}")
            node = self.graph.nodes[k]
            out = self.graph.tensor(node.outputs[0]).name
            raise KernelError(f"{self.pack_dir}: node {k} {node.op} (output '{out}') returned {what}")

    def _last(self, last_node: int) -> int:
        n = len(self.graph.nodes)
        if not -1 <= last_node < n:
            raise CalibrationError(f"last_node {last_node} is out of range: the model has {n} nodes")
        return n - 1 if last_node == -1 else last_node

    def run(self, inputs: Sequence[np.ndarray], all_tensors: bool = False, last_node: int = -1,
            ) -> list[np.ndarray] | dict[int, np.ndarray]:
        """Write ``inputs`` into the arena and run nodes 0..last_node (-1: all).

        Returns the graph outputs after a full run, node ``last_node``'s outputs when it stops
        early, or with ``all_tensors`` every tensor by graph index: constants as the firmware
        holds them, the inputs, and each node's outputs read right after that node (the arena
        reuses bytes, so the nodes run one call each: still one pass over the graph).
        """
        last = self._last(last_node)
        self._write_inputs(inputs)
        if not all_tensors:
            self._run(0, last, self.ffi.NULL)
            return [self._read(s) for s in (self.output_slots if last_node == -1 else self.node_outputs[last])]
        fixed = [s for s, t in self.tensor_of_slot.items() if s in self.input_slots or self.graph.tensor(t).is_const]
        values = {self.tensor_of_slot[s]: self._read(s) for s in fixed}
        for k in range(last + 1):
            self._run(k, k, self.ffi.NULL)
            values.update((self.tensor_of_slot[s], self._read(s)) for s in self.node_outputs[k])
        return values

    def profile(self, inputs: Sequence[np.ndarray], last_node: int = -1) -> list[int]:
        """Host counter ticks (nanoseconds) per node of one run of nodes 0..last_node."""
        last = self._last(last_node)
        self._write_inputs(inputs)
        counts = self.ffi.new("uint32_t[]", last + 1)
        self._run(0, last, counts)
        return list(counts)


def run_host_c(pack_dir: str | Path, inputs: Sequence[np.ndarray], all_tensors: bool = False,
               last_node: int = -1) -> list[np.ndarray] | dict[int, np.ndarray]:
    """Run a pack output's firmware C on the host: ``HostModel(pack_dir).run(...)``."""
    return HostModel(pack_dir).run(inputs, all_tensors=all_tensors, last_node=last_node)
