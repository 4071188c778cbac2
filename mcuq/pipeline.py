"""The whole flow, top to bottom: model -> IR -> integer graph -> params -> plan -> pack.

Each step returns a typed value the next one takes; the CLI is a thin layer over these.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mcuq import __version__
from mcuq.boards import Board, all_boards, load_board
from mcuq.errors import BoardFitError, CalibrationError, ModelError, UnsupportedOpError
from mcuq.graphfile import load_graph
from mcuq.ir import Graph, Op
from mcuq.pack import plain_fallbacks, prune_filters, render_sources, write_pack_dir
from mcuq.plan import ArenaPlan, check_plan, plan_arena
from mcuq.quant import (DEFAULT_RANGE_METHOD, Budget, QuantReport, RangeMethod, Scheme, check_accumulators,
                        load_eval_data, plot_sqnr, quantize)
from mcuq.reader import read_model
from mcuq.simulate import as_inputs, prepare_graph, run_integer
from mcuq.summary import ModelSummary, QuantKind, summarize

# Bytes the firmware itself needs beside the model, for the fit check before a build (`mcuq build`
# then checks the real figures): measured with `mcuq build` on all six boards, the firmware takes
# about 24 KB of flash (runtime, kernels, protocol, port) and 9.5 KB of RAM (8 KB of it stack).
FIRMWARE_RAM_RESERVE = 12 * 1024
FIRMWARE_FLASH_RESERVE = 32 * 1024

Warn = Callable[[str], None]


@dataclass(frozen=True)
class QuantOptions:
    """How `pack` and `sim` quantize a float model (ignored for integer models, but ``scheme``)."""

    scheme: Scheme = Scheme.TFLITE
    calib: Path | None = None  # .npz with in0, ... ([N, *shape]); None: seeded random, with a warning
    range_method: RangeMethod | str = DEFAULT_RANGE_METHOD
    eval_data: Path | None = None  # .npz with in0, ... and labels: accuracy in the report
    budget: Budget | None = None  # per-layer 8/4-bit weight search under this budget


@dataclass(frozen=True)
class Model:
    """A model as read from disk: where from, its hash, its graph, its summary."""

    path: Path
    sha256: str
    graph: Graph
    summary: ModelSummary


@dataclass(frozen=True)
class IntegerModel:
    """The integer-only graph the target runs, with the quantization report if we quantized."""

    source: Model
    graph: Graph
    scheme: Scheme
    report: QuantReport | None


@dataclass(frozen=True)
class Footprint:
    """What a packed model needs of a board."""

    arena_bytes: int
    const_bytes: int

    @property
    def ram_bytes(self) -> int:
        return self.arena_bytes + FIRMWARE_RAM_RESERVE

    @property
    def flash_bytes(self) -> int:
        return self.const_bytes + FIRMWARE_FLASH_RESERVE

    def misfit(self, board: Board) -> str | None:
        """One line saying why the model does not fit ``board``, or None when it fits."""
        for what, need, have in (("RAM", self.ram_bytes, board.ram_bytes),
                                 ("flash", self.flash_bytes, board.flash_bytes)):
            if need > have:
                return (f"model needs {need:,} bytes of {what}, board {board.name} has {have:,} "
                        f"(over by {need - have:,})")
        return None


@dataclass(frozen=True)
class Packed:
    out_dir: Path
    manifest: dict
    plan: ArenaPlan
    integer: IntegerModel


def load(path: str | Path) -> Model:
    """Read a .tflite file."""
    path = Path(path)
    graph = read_model(path)
    return Model(path, hashlib.sha256(path.read_bytes()).hexdigest(), graph, summarize(graph))


def require_runnable(model: Model) -> None:
    """Refuse hybrid models and ops mcuq cannot run, naming the first offender."""
    if model.summary.kind == QuantKind.HYBRID:
        raise ModelError(f"{model.path}: dynamic-range hybrid model (float activations with int8 "
                         "weights); mcuq needs a full-integer or a float model")
    for node in model.graph.nodes:
        if not node.supported:
            raise UnsupportedOpError(f"{model.path}: unsupported op {node.op} (node {node.index}); "
                                     f"mcuq runs {', '.join(op.value for op in Op)}")


@dataclass(frozen=True)
class Samples:
    """Arrays per graph input, each [N, *input shape]; ``stacked`` is False when the file held
    one sample without a sample axis (so results are written back without one)."""

    arrays: list[np.ndarray]
    stacked: bool


def load_arrays(path: str | Path, graph: Graph, what: str) -> Samples:
    """Arrays in0, in1, ... of an .npz, one per graph input, checked against the input shapes.

    Each is [N, *shape] (N samples), [N, *shape[1:]] where the batch is 1, or a single sample
    of the input's own shape.
    """
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise CalibrationError(f"{path}: no such file") from None
    except Exception as e:  # np.load raises many types on a bad file
        raise CalibrationError(f"{path}: not a readable .npz ({type(e).__name__})") from None
    out, stacked = [], True
    for i, t in enumerate(graph.input_tensors()):
        key = f"in{i}"
        if key not in arrays:
            raise CalibrationError(f"{path}: {what} need array '{key}' for input '{t.name}' "
                                   f"(found {', '.join(sorted(arrays)) or 'none'})")
        a = arrays[key]
        sample = tuple(t.shape)
        if a.shape == sample:
            a, stacked = a[None], False
        elif sample and sample[0] == 1 and a.ndim == len(sample) and a.shape[1:] == sample[1:]:
            a = a[:, None]  # N samples stacked along a batch axis of 1
        elif not (a.ndim == len(sample) + 1 and a.shape[1:] == sample):
            raise CalibrationError(f"{path}: '{key}' has shape {list(a.shape)}, input '{t.name}' needs "
                                   f"[{', '.join(map(str, sample))}] or [N, {', '.join(map(str, sample))}]")
        if a.shape[0] == 0:
            raise CalibrationError(f"{path}: '{key}' holds no samples")
        out.append(a)
    return Samples(out, stacked)


def to_integer(model: Model, options: QuantOptions, warn: Warn) -> IntegerModel:
    """The integer-only graph: an int8 model as is, a float model quantized as ``options`` say."""
    require_runnable(model)
    if model.summary.kind == QuantKind.FLOAT:
        graph = model.graph
        calib = load_arrays(options.calib, graph, "calibration data").arrays if options.calib else None
        eval_data = load_eval_data(options.eval_data, graph) if options.eval_data else None
        result = quantize(graph, calib, scheme=options.scheme, warn=warn, range_method=options.range_method,
                          eval_data=eval_data, budget=options.budget)
        return IntegerModel(model, result.graph, options.scheme, result.report)
    if options.scheme != Scheme.TFLITE or options.eval_data or options.budget:
        raise ModelError(f"{model.path}: already quantized; --scheme {options.scheme}, --eval and the "
                         "bitwidth search need a float model")
    check_accumulators(model.graph)
    return IntegerModel(model, model.graph, options.scheme, None)


def footprint(graph: Graph, plan: ArenaPlan, params: Sequence[Any] | None = None) -> Footprint:
    """Arena and constant bytes; with the nodes' ``params``, filters as flash holds them (without
    their constant channels' rows: mcuq.pack.prune_filters)."""
    pruned = prune_filters(graph, params) if params is not None else {}
    const = sum(pruned[t.index].nbytes if t.index in pruned else t.nbytes for t in graph.tensors if t.is_const)
    return Footprint(plan.size, const)


@dataclass(frozen=True)
class Inspection:
    """What `mcuq inspect` reports: the summary, the planned arena, and the fit per board."""

    model: Model
    footprint: Footprint
    estimated: bool  # figures are for the int8 version of a float or hybrid model
    misfits: dict[str, str | None]  # board name -> why it does not fit, None when it fits


def int8_estimate(graph: Graph) -> Graph:
    """The graph as quantization would type it: float activations and weights int8, biases int32."""
    biases = {n.inputs[2] for n in graph.nodes
              if n.op in (Op.CONV_2D, Op.DEPTHWISE_CONV_2D, Op.FULLY_CONNECTED) and len(n.inputs) > 2}
    return dataclasses.replace(graph, tensors=tuple(
        dataclasses.replace(t, dtype="int32" if t.index in biases else "int8") if t.dtype == "float32" else t
        for t in graph.tensors))


def inspect(path: str | Path) -> Inspection:
    """Read a model and plan its integer version against every board."""
    model = load(path)
    estimated = model.summary.kind != QuantKind.FULL_INTEGER
    graph = int8_estimate(model.graph) if estimated else model.graph
    fp = footprint(graph, plan_arena(graph))
    return Inspection(model, fp, estimated, {b.name: fp.misfit(b) for b in all_boards()})


def pack(model_path: str | Path, board_name: str, out_dir: str | Path, options: QuantOptions,
         warn: Warn) -> Packed:
    """Quantize if needed, prepare kernel params, plan the arena, check the fit, write DIR."""
    board = load_board(board_name)
    model = load(model_path)
    integer = to_integer(model, options, warn)
    params = prepare_graph(integer.graph)
    plan = plan_arena(integer.graph)
    check_plan(integer.graph, plan)
    fp = footprint(integer.graph, plan, params)
    misfit = fp.misfit(board)
    if misfit:
        raise BoardFitError(f"{model.path}: {misfit}")
    sources = render_sources(integer.graph, params, plan, model.path.name, model.sha256, str(integer.scheme))
    manifest = {
        "mcuq_version": __version__,
        "model": model.path.name,
        "model_sha256": model.sha256,
        "board": board.name,
        "scheme": str(integer.scheme),
        "arena_bytes": plan.size,
        "weight_bytes": fp.const_bytes,
        "plain_fallbacks": plain_fallbacks(integer.graph, params),
        "inputs": [_io(t) for t in integer.graph.input_tensors()],
        "outputs": [_io(t) for t in integer.graph.output_tensors()],
    }
    report = {"summary": summarize(integer.graph).to_dict(),
              "quantization": integer.report.to_dict() if integer.report else None}
    extra = {"sqnr.png": _sqnr_png(integer.report)} if integer.report else {}
    write_pack_dir(Path(out_dir), integer.graph, sources, manifest, report, extra)
    return Packed(Path(out_dir), manifest, plan, integer)


def _io(t) -> dict:
    q = t.quant
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype,
            "scale": q.scale[0] if q else None, "zero_point": q.zero_point[0] if q else None}


def load_for_sim(model_path: str | Path, options: QuantOptions, warn: Warn) -> Graph:
    """The integer graph `mcuq sim` runs: a pack output directory, or a .tflite like `pack` does."""
    path = Path(model_path)
    if path.is_dir():
        if not (path / "manifest.json").exists():
            raise ModelError(f"{path}: not an mcuq pack output (no manifest.json)")
        return load_graph(path / "graph")
    return to_integer(load(path), options, warn).graph


def _sqnr_png(report: QuantReport) -> bytes:
    """The per-layer SQNR plot as PNG bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        return plot_sqnr(report, Path(tmp) / "sqnr.png").read_bytes()


def simulate(graph: Graph, inputs: Sequence[np.ndarray], all_tensors: bool) -> dict[str, np.ndarray]:
    """Run every sample through the integer simulator; arrays out0.. (and t<index> per tensor).

    Float inputs of an integer graph are quantized with the input's scale and zero point first.
    """
    samples = as_inputs(graph, inputs)
    per_sample: list[dict[str, np.ndarray]] = []
    for s in range(samples[0].shape[0]):
        values = run_integer(graph, [a[s] for a in samples], all_tensors=True)
        d = {f"out{k}": values[t] for k, t in enumerate(graph.outputs)}
        if all_tensors:
            d.update({f"t{t}": v for t, v in values.items()})
        per_sample.append(d)
    return {k: np.stack([d[k] for d in per_sample]) for k in per_sample[0]}
