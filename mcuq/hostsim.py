"""The second host simulator: the firmware's own C (kernels, runtime, a pack output's model)
compiled for the host through cffi, so the code that runs on the chip can be checked against the
numpy simulator without a board.

The firmware sources are compiled with the target's strictness (gcc -O2 -std=c99 -Wall -Wextra
-Werror) into objects that a small cffi module links; the module is cached in DIR/build/host under
a hash of every source, header and flag, and rebuilt atomically when any of them changes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from mcuq.errors import CalibrationError, McuqError, ModelError
from mcuq.graphfile import load_graph
from mcuq.ir import NO_TENSOR, Graph

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
CFLAGS = ("-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-fPIC")
ALIGN = 16
_DTYPES = {0: np.int8, 1: np.int16, 2: np.int32, 3: np.int64, 4: np.float32, 5: np.uint8}

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


def firmware_sources(firmware: Path = FIRMWARE) -> list[Path]:
    """The firmware C files the host build compiles: every kernel and the runtime."""
    return sorted((firmware / "kernels").glob("*.c")) + [firmware / "runtime" / "mcuq_runtime.c"]


def _compiler() -> str:
    cc = shutil.which(os.environ.get("CC", "gcc"))
    if cc is None:
        raise HostBuildError(f"no C compiler: the host C simulator needs {os.environ.get('CC', 'gcc')} on PATH "
                             "(install gcc or set $CC)")
    return cc


def _source_key(cc: str, files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for part in (cc, " ".join(CFLAGS), _CDEF, _HOST_PORT, sys.version):
        h.update(part.encode() + b"\0")
    for f in files:
        h.update(str(f).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _compile(cc: str, sources: Sequence[Path], includes: Sequence[Path], out_dir: Path) -> list[Path]:
    """Object files of ``sources``, compiled with the firmware's warnings-as-errors flags."""
    objects = []
    for k, src in enumerate(sources):
        obj = out_dir / f"{k:03d}_{src.stem}.o"
        cmd = [cc, *CFLAGS, *(f"-I{d}" for d in includes), "-c", str(src), "-o", str(obj)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            first = next((line for line in done.stderr.splitlines() if "error" in line), done.stderr.strip())
            raise HostBuildError(f"{src}: does not compile for the host: {first}")
        objects.append(obj)
    return objects


def build_module(pack_dir: str | Path, firmware: Path = FIRMWARE) -> ModuleType:
    """Compile (or reuse from DIR/build/host) the cffi module of a pack output and import it."""
    import cffi

    pack_dir = Path(pack_dir)
    model_c = pack_dir / "src" / "mcuq_model.c"
    if not model_c.is_file():
        raise ModelError(f"{pack_dir}: not an mcuq pack output (no src/mcuq_model.c)")
    cc = _compiler()
    includes = [pack_dir / "src", firmware / "include", firmware / "runtime"]
    sources = [*firmware_sources(firmware), model_c]
    missing = next((s for s in sources if not s.is_file()), None)
    if missing is not None:
        raise HostBuildError(f"{missing}: firmware source missing")
    headers = sorted(h for d in includes for h in d.glob("*.h"))
    name = f"_mcuq_host_{_source_key(cc, [*sources, *headers])}"
    if name in sys.modules:
        return sys.modules[name]
    cache = pack_dir / "build" / "host"
    built = next(cache.glob(f"{name}.*"), None) if cache.is_dir() else None
    if built is None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build.", dir=cache))
        try:
            ffi = cffi.FFI()
            ffi.cdef(_CDEF)
            ffi.set_source(name, _HOST_PORT, include_dirs=[str(d) for d in includes],
                           extra_objects=[str(o) for o in _compile(cc, sources, includes, tmp)])
            try:
                so = Path(ffi.compile(tmpdir=str(tmp)))
            except Exception as e:  # cffi raises distutils/setuptools errors of several types
                raise HostBuildError(f"{pack_dir}: building the cffi host module failed: {e}") from None
            built = cache / so.name
            os.replace(so, built)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    spec = importlib.util.spec_from_file_location(name, built)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


@dataclass(frozen=True)
class _Slot:
    dtype: type
    shape: tuple[int, ...]
    nbytes: int


class HostModel:
    """A pack output's firmware, compiled for the host, with one 16-byte aligned arena.

    ``ffi`` and ``lib`` are the cffi module (the runtime API of mcuq_runtime.h and the packed
    tables), ``arena`` the arena pointer, for callers that drive the runtime themselves.
    """

    def __init__(self, pack_dir: str | Path):
        self.pack_dir = Path(pack_dir)
        self.graph: Graph = load_graph(self.pack_dir / "graph")
        module = build_module(self.pack_dir)
        self.ffi, self.lib = ffi, lib = module.ffi, module.lib
        self.slots = [_slot(lib.mcuq_tensors[s]) for s in range(lib.MCUQ_NUM_TENSORS)]
        nodes = [lib.mcuq_nodes[k] for k in range(lib.MCUQ_NUM_NODES)]
        self.node_inputs = [[int(n.inputs[i]) for i in range(n.num_inputs)] for n in nodes]
        self.node_outputs = [[int(n.outputs[i]) for i in range(n.num_outputs)] for n in nodes]
        self.input_slots = [int(lib.mcuq_inputs[k].tensor) for k in range(lib.MCUQ_NUM_INPUTS)]
        self.output_slots = [int(lib.mcuq_outputs[k].tensor) for k in range(lib.MCUQ_NUM_OUTPUTS)]
        self.tensor_of_slot = self._slot_map()
        self._raw = ffi.new("uint8_t[]", lib.MCUQ_ARENA_BYTES + ALIGN)
        self.arena = self._raw + (-int(ffi.cast("uintptr_t", self._raw)) % ALIGN)
        self._status = {getattr(lib, n): n for n in ("MCUQ_OK", "MCUQ_ERR_PARAMS", "MCUQ_ERR_RANGE",
                                                     "MCUQ_ERR_UNSUPPORTED")}

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
            if mapping[s] != t or self.slots[s].shape != tensor.shape or self.slots[s].nbytes != tensor.nbytes:
                raise ModelError(f"{self.pack_dir}: tensor table slot {s} does not match graph tensor {t}")
        return mapping

    def _read(self, slot: int) -> np.ndarray:
        info = self.slots[slot]
        data = self.ffi.buffer(self.lib.mcuq_tensor_data(self.arena, slot), info.nbytes)
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
        if status != self.lib.MCUQ_OK:
            what = f"{self._status.get(status, 'status')} ({status})"
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


def _slot(entry: Any) -> _Slot:
    return _Slot(_DTYPES[entry.dtype], tuple(entry.shape[i] for i in range(entry.rank)), entry.bytes)


def run_host_c(pack_dir: str | Path, inputs: Sequence[np.ndarray], all_tensors: bool = False,
               last_node: int = -1) -> list[np.ndarray] | dict[int, np.ndarray]:
    """Run a pack output's firmware C on the host: ``HostModel(pack_dir).run(...)``."""
    return HostModel(pack_dir).run(inputs, all_tensors=all_tensors, last_node=last_node)
