"""Emit a packed model as C sources: const tensors, one const params struct per node, the node
table over the planned arena, I/O descriptors; plus a manifest and the graph for `mcuq sim`.

Each node's parameters are the simulator's Params dataclass, written field for field as a
designated initializer of the matching hand-written struct in firmware/include/mcuq_kernels.h
(ConvParams -> mcuq_conv_params_t), so the firmware kernels read exactly the integers the host
simulator used: ints become int32_t, tuples and arrays pointers to const arrays, floats (I/O
conversion only) float. Host-only fields (the simulator's exact output shapes) are left out.
The output directory is written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import shutil
from pathlib import Path
from string import Template
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np

from mcuq import __version__, interrupts
from mcuq.errors import McuqError, ModelError
from mcuq.graphfile import save_graph
from mcuq.ir import NO_TENSOR, Graph, Node, Op
from mcuq.plan import ArenaPlan
from mcuq.simulate.conv import constant_channels, prepare_fully_connected

TEMPLATES = Path(__file__).parent / "templates"
MAX_RANK = 4
_C_DTYPES = {"int8": ("int8_t", 0), "int16": ("int16_t", 1), "int32": ("int32_t", 2),
             "int64": ("int64_t", 3), "float32": ("float", 4), "uint8": ("uint8_t", 5),
             "int4": ("uint8_t", 6)}  # int4: packed two per byte, low nibble first (as in a .tflite)


# The runtime's kernel choice (firmware/runtime/mcuq_runtime.c run_node) as data: per op, the
# kernel's base name and the dtypes of input 0 it takes (suffix s8, s16, s32, f32). Exceptions,
# as in run_node: int8 convolutions / FC with an int4 filter take <base>_s8_s4, int8 FC with a
# row-paired filter (pairable(), dtype MCUQ_INT8_PAIRED) fully_connected_s8_paired, SOFTMAX is keyed
# by its output (int8 -> softmax_s8, int16 -> softmax_s8_s16), RESHAPE has one untyped kernel.
# pack defines MCUQ_USE_<kernel> 1 for the kernels a model's nodes take, 0 for the others, and
# the runtime calls a kernel only under its macro, so the linker drops the rest.
_SUFFIX = {"int8": "s8", "int16": "s16", "int32": "s32", "float32": "f32"}
_DISPATCH: dict[Op, tuple[str, tuple[str, ...]]] = {
    Op.CONV_2D: ("conv2d", ("int8", "int16")),
    Op.DEPTHWISE_CONV_2D: ("depthwise_conv2d", ("int8", "int16")),
    Op.FULLY_CONNECTED: ("fully_connected", ("int8", "int16")),
    Op.AVERAGE_POOL_2D: ("avg_pool", ("int8", "int16")),
    Op.MAX_POOL_2D: ("max_pool", ("int8", "int16")),
    Op.ADD: ("add", ("int8", "int16")),
    Op.MUL: ("mul", ("int8", "int16")),
    Op.QUANTIZE: ("quantize", ("float32", "int8", "int16", "int32")),
    Op.DEQUANTIZE: ("dequantize", ("int8", "int16")),
    Op.PAD: ("pad", ("int8", "int16", "int32")),
    Op.CONCATENATION: ("concatenation", ("int8", "int16", "int32")),
    Op.MEAN: ("mean", ("int8", "int16")),
    Op.LOGISTIC: ("logistic", ("int8",)),
    Op.TANH: ("tanh", ("int8",)),
}
_INT4_FILTER = (Op.CONV_2D, Op.DEPTHWISE_CONV_2D, Op.FULLY_CONNECTED)
KERNELS = tuple(sorted({f"mcuq_{base}_{_SUFFIX[t]}" for base, types in _DISPATCH.values() for t in types}
                       | {f"mcuq_{_DISPATCH[op][0]}_s8_s4" for op in _INT4_FILTER}
                       | {"mcuq_softmax_s8", "mcuq_softmax_s8_s16", "mcuq_reshape", "mcuq_fully_connected_s8_paired"}))


def node_kernel(graph: Graph, node: Node) -> str | None:
    """The kernel the runtime runs ``node`` with, or None (the runtime answers MCUQ_ERR_UNSUPPORTED)."""
    def dtype(k: int, io: tuple[int, ...]) -> str | None:
        return graph.tensor(io[k]).dtype if k < len(io) and io[k] != NO_TENSOR else None

    x = dtype(0, node.inputs)
    if node.op == Op.RESHAPE:
        return "mcuq_reshape"
    if node.op == Op.SOFTMAX:
        out = dtype(0, node.outputs)
        return {"int8": "mcuq_softmax_s8", "int16": "mcuq_softmax_s8_s16"}.get(out) if x == "int8" else None
    if node.op in _INT4_FILTER and x == "int8" and dtype(1, node.inputs) == "int4":
        return f"mcuq_{_DISPATCH[node.op][0]}_s8_s4"
    if pairable(graph, node):
        return "mcuq_fully_connected_s8_paired"
    base, types = _DISPATCH.get(node.op, ("", ()))
    return f"mcuq_{base}_{_SUFFIX[x]}" if x in types else None


def kernel_macros(graph: Graph) -> str:
    """#define MCUQ_USE_<kernel> 1 or 0 for every kernel: 1 for those the graph's nodes take."""
    used = {node_kernel(graph, n) for n in graph.nodes}
    return "\n".join(f"#define MCUQ_USE_{k} {int(k in used)}" for k in KERNELS)


DSP_MAX_DEPTH = 640  # MCUQ_DSP_MAX_DEPTH (firmware/kernels/mcuq_support.h)
DW_MAX_TAPS = 25  # MAX_TAPS of the depthwise DSP path (firmware/kernels/mcuq_depthwise_conv2d_s8.c)


def takes_dsp_path(kernel: str, p: Any) -> bool:
    """Whether ``kernel`` runs a node with params ``p`` on its DSP path on a core with the DSP
    extension: the conditions at the end of the kernel's C file, which falls back to plain C."""
    if kernel == "mcuq_conv2d_s8":
        return p.groups == 1 and p.filter_h * p.filter_w * p.input_c <= DSP_MAX_DEPTH and p.bias_folded
    if kernel == "mcuq_depthwise_conv2d_s8":
        return (p.depth_multiplier == 1 and p.filter_h * p.filter_w <= DW_MAX_TAPS and p.input_c <= DSP_MAX_DEPTH
                and p.bias_folded)
    return p.depth <= 2 * DSP_MAX_DEPTH and p.bias_folded  # mcuq_fully_connected_s8


PLAIN_FALLBACKS = ("mcuq_conv2d_s8", "mcuq_depthwise_conv2d_s8", "mcuq_fully_connected_s8")


def plain_fallbacks(graph: Graph, params: Sequence[Any]) -> dict[str, bool]:
    """Per kernel with a DSP path and a plain-C fallback: whether a node of the graph needs the
    fallback on a DSP core. `mcuq build` passes -DMCUQ_PLAIN_<KERNEL>=0 for those that do not,
    so the fallback is not linked (about 1 KB on kws and vww)."""
    need = dict.fromkeys(PLAIN_FALLBACKS, False)
    for node, p in zip(graph.nodes, params):
        kernel = node_kernel(graph, node)
        if kernel in need and not takes_dsp_path(kernel, p):
            need[kernel] = True
    return need


@dataclasses.dataclass(frozen=True)
class PackedSources:
    """The generated C text."""

    header: str
    source: str


def _c_name(params_type: type) -> str:
    """ConvParams -> mcuq_conv_params_t: the struct name in mcuq_kernels.h."""
    base = params_type.__name__.removesuffix("Params")
    return "mcuq_" + re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower() + "_params_t"


def c_fields(params: Any) -> list[dataclasses.Field]:
    """The Params fields the C struct holds, in order (host-only ones left out)."""
    return [f for f in dataclasses.fields(params) if not f.metadata.get("host_only")]


def _check_shifts(node: Node, params: Any) -> None:
    """Every requantize shift is within [-31, 30], the range mcuq_requantize() is defined for."""
    for f in c_fields(params):
        if f.name == "shift" or (f.name.endswith("_shift") and not f.name.endswith("left_shift")):
            values = np.atleast_1d(np.asarray(getattr(params, f.name), np.int64))
            bad = values[(values < -31) | (values > 30)]
            if bad.size:
                raise ModelError(f"node {node.index} {node.op}: {f.name} {int(bad[0])} is outside [-31, 30] "
                                 "(a requantization the firmware cannot apply)")


def _fmt_array(values: np.ndarray, per_line: int = 16) -> str:
    flat = np.asarray(values).reshape(-1)
    if flat.dtype.kind == "f":
        items = [repr(float(np.float32(v))) + "f" for v in flat]
    elif flat.dtype == np.int64:
        items = [f"{int(v)}LL" for v in flat]
    else:
        items = [str(int(v)) for v in flat]
    if flat.dtype == np.int32:
        items = [f"(int32_t){v}" if v == str(-(1 << 31)) else v for v in items]
    if not items:
        items = ["0"]
    return ",\n".join("    " + ", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))


def _array_decl(name: str, values: np.ndarray) -> str:
    ctype = _C_DTYPES[np.asarray(values).dtype.name][0]
    n = max(1, int(np.asarray(values).size))
    return f"static MCUQ_CONST {ctype} {name}[{n}] = {{\n{_fmt_array(values)}\n}};"


def packed_int4(values: np.ndarray) -> np.ndarray:
    """int4 values (held unpacked in the IR) packed two per byte, low nibble first: the flash bytes."""
    nib = (np.asarray(values).reshape(-1) & 0xF).astype(np.uint8)
    nib = np.append(nib, np.zeros(nib.size % 2, np.uint8))
    return nib[0::2] | (nib[1::2] << 4)


# FULLY_CONNECTED filters the int8 kernel reads row-paired (firmware/kernels/
# mcuq_fully_connected_s8_paired.c): per pair of rows (a, b) and group of 4 inputs i0..i3, two
# words (inputs i0, i2 then i1, i3) whose int16 lanes hold 256 * b[i] + (a[i] + 128), so one SMLAD
# with a block word of inputs sums both rows at once. b's sum is read back from the upper 24 bits
# of a 32-bit accumulator: pack pairs a layer only when 128 * sum |b| < 2^23 for every second row
# (PAIR_ROW_BOUND). Rows go in fours, both pairs' words of a group together (one LDM).
PAIRED_DTYPE = 7  # the tensor table's dtype code of a row-paired int8 filter
PAIR_ROW_BOUND = (1 << 23) // 128 - 1
PAIR_MAX_DEPTH = 1280  # one DSP column block (firmware/kernels/mcuq_support.h)


def paired_filter_order(units: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, low) of a row-paired [units, depth] filter (units % 4 == 0, depth % 4 == 0): byte
    j of the paired array is filter.flat[order[j]], offset by 128 (XOR 0x80) where low[j]."""
    idx = np.arange(units * depth).reshape(units // 4, 2, 2, depth // 4, 2, 2)  # set, pair, row, group, lane, odd
    order = idx.transpose(0, 3, 1, 5, 4, 2)  # set, group, pair, odd input, lane, row in the pair
    low = np.broadcast_to(np.array([True, False]), order.shape)
    return order.reshape(-1), low.reshape(-1)


def paired_filter(w: np.ndarray) -> np.ndarray:
    """An int8 [units, depth] filter in the row-paired order (the flash bytes)."""
    order, low = paired_filter_order(*w.shape)
    return (w.reshape(-1)[order].view(np.uint8) ^ np.where(low, 0x80, 0).astype(np.uint8)).view(np.int8)


def unpaired_filter(raw: np.ndarray, units: int, depth: int) -> np.ndarray:
    """The [units, depth] filter back from its row-paired bytes."""
    order, low = paired_filter_order(units, depth)
    out = np.empty(units * depth, np.uint8)
    out[order] = np.asarray(raw).reshape(-1).view(np.uint8) ^ np.where(low, 0x80, 0).astype(np.uint8)
    return out.view(np.int8).reshape(units, depth)


def pairable(graph: Graph, node: Node) -> bool:
    """Whether ``node``'s filter is stored row-paired (and the node run by the paired kernel): an
    int8 FULLY_CONNECTED of int8 inputs with a symmetric [units, depth] constant filter that no
    other node reads, units a multiple of 4 and depth of 8 up to PAIR_MAX_DEPTH, a constant or no
    bias, the int8 clamp, every channel's requantization one 64-bit multiply-add (shifts_fast),
    and every second row within PAIR_ROW_BOUND."""
    if node.op != Op.FULLY_CONNECTED or len(node.inputs) < 2 or NO_TENSOR in node.inputs[:2]:
        return False
    x, w = graph.tensor(node.inputs[0]), graph.tensor(node.inputs[1])
    bias = graph.tensor(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] != NO_TENSOR else None
    if (x.dtype != "int8" or w.dtype != "int8" or not w.is_const or len(w.shape) != 2 or w.quant is None
            or any(w.quant.zero_point) or (bias is not None and not bias.is_const)):
        return False
    units, depth = w.shape
    if units % 4 or depth % 8 or depth > PAIR_MAX_DEPTH or graph.reads(w.index) != 1:
        return False
    p = prepare_fully_connected(graph, node)
    if (p.act_min, p.act_max) != (-128, 127) or not p.shifts_fast:
        return False
    second = np.abs(w.data.astype(np.int64)).sum(axis=1)[1::2]
    return int(second.max()) <= PAIR_ROW_BOUND


def pair_filters(graph: Graph) -> dict[int, np.ndarray]:
    """The row-paired bytes of every pairable node's filter, by tensor index."""
    return {node.inputs[1]: paired_filter(graph.tensor(node.inputs[1]).data)
            for node in graph.nodes if pairable(graph, node)}


PRUNED_DTYPE = 8  # the tensor table's dtype code of a CONV_2D filter without its constant channels' rows


def prune_filters(graph: Graph, params: Sequence[Any]) -> dict[int, np.ndarray]:
    """By tensor index, the filter rows flash holds for every node with constant channels: the
    others' rows, in channel order (the firmware stores a constant channel's output without
    reading any weight)."""
    return {node.inputs[1]: graph.tensor(node.inputs[1]).data[~constant]
            for node, p in zip(graph.nodes, params) if (constant := constant_channels(p)).any()}


def unpruned_filter(rows: np.ndarray, full: np.ndarray) -> np.ndarray:
    """A filter back from its stored rows, given the model's filter ``full`` (zero rows where the
    channels are constant): ModelError when the stored rows do not fit those zero rows."""
    zero = ~full.reshape(full.shape[0], -1).any(1)
    out = np.zeros_like(full)
    if rows.size != out[~zero].size:
        raise ModelError(f"a pruned filter holds {rows.size} values; its {int((~zero).sum())} nonzero rows take "
                         f"{out[~zero].size}")
    out[~zero] = rows.reshape(out[~zero].shape)
    return out


def render_sources(graph: Graph, params: Sequence[Any], plan: ArenaPlan, model: str, sha256: str,
                   scheme: str) -> PackedSources:
    """Render mcuq_model.h / mcuq_model.c for a prepared, planned integer graph."""
    paired = pair_filters(graph)
    pruned = prune_filters(graph, params)
    for t in graph.tensors:
        if len(t.shape) > MAX_RANK and (t.index in plan.offsets or t.is_const):
            raise ModelError(f"tensor '{t.name}' has rank {len(t.shape)}; the firmware supports up to {MAX_RANK}")
    used = sorted({t for n in graph.nodes for t in (*n.inputs, *n.outputs) if t != NO_TENSOR}
                  | set(graph.inputs) | set(graph.outputs))
    slot = {t: i for i, t in enumerate(used)}
    const_data, tensor_rows = [], []
    for t in used:
        tensor = graph.tensor(t)
        if tensor.dtype not in _C_DTYPES:
            raise ModelError(f"tensor '{tensor.name}' has type {tensor.dtype}, which the firmware cannot hold")
        shape = list(tensor.shape) + [1] * (MAX_RANK - len(tensor.shape))
        dtype = PAIRED_DTYPE if t in paired else PRUNED_DTYPE if t in pruned else _C_DTYPES[tensor.dtype][1]
        nbytes = pruned[t].nbytes if t in pruned else tensor.nbytes
        if tensor.is_const:
            values = paired.get(t, pruned.get(t, packed_int4(tensor.data) if tensor.dtype == "int4" else tensor.data))
            const_data.append(_array_decl(f"mcuq_t{t}", values))
            data, offset = f"mcuq_t{t}", -1
        else:
            data, offset = "0", plan.offsets[t]
        tensor_rows.append(
            f"    {{ {data}, {offset}, {nbytes}, {dtype}, {len(tensor.shape)}, "
            f"{{ {', '.join(str(d) for d in shape)} }} }}, /* {slot[t]}: {tensor.name} */")

    param_data, node_io, node_rows = [], [], []
    for node, p in zip(graph.nodes, params):
        _check_shifts(node, p)
        inits = []
        for f in c_fields(p):
            value = getattr(p, f.name)
            if isinstance(value, (tuple, np.ndarray)):
                arr = np.asarray(value, np.int32) if isinstance(value, tuple) else value
                param_data.append(_array_decl(f"mcuq_p{node.index}_{f.name}", arr))
                inits.append(f".{f.name} = mcuq_p{node.index}_{f.name}")
            elif isinstance(value, (float, np.floating)):
                inits.append(f".{f.name} = {float(np.float32(value))!r}f")
            elif isinstance(value, (bool, int, np.integer)) and -(1 << 31) <= int(value) < (1 << 31):
                inits.append(f".{f.name} = {int(value) if int(value) > -(1 << 31) else '(-2147483647 - 1)'}")
            else:
                raise McuqError(f"internal: cannot pack {type(p).__name__}.{f.name} = {value!r} as C")
        param_data.append(f"static const {_c_name(type(p))} mcuq_p{node.index} = {{ {', '.join(inits)} }};")
        ins = [slot[t] if t != NO_TENSOR else -1 for t in node.inputs]
        outs = [slot[t] for t in node.outputs]
        node_io.append(f"static const int16_t mcuq_n{node.index}_in[] = {{ {', '.join(map(str, ins)) or '-1'} }};")
        node_io.append(f"static const int16_t mcuq_n{node.index}_out[] = {{ {', '.join(map(str, outs))} }};")
        node_rows.append(f"    {{ MCUQ_OP_{node.op}, {len(ins)}, {len(outs)}, mcuq_n{node.index}_in, "
                         f"mcuq_n{node.index}_out, &mcuq_p{node.index} }},")

    def io_rows(indices):
        rows = []
        for t in indices:
            q = graph.tensor(t).quant
            scale, zp = (q.scale[0], q.zero_point[0]) if q else (0.0, 0)
            rows.append(f"    {{ {slot[t]}, {float(np.float32(scale))!r}f, {zp} }}, /* {graph.tensor(t).name} */")
        return "\n".join(rows)

    values = dict(
        version=__version__, model=model, sha256=sha256, scheme=scheme, arena_bytes=plan.size,
        num_tensors=len(used), num_nodes=len(graph.nodes), num_inputs=len(graph.inputs),
        num_outputs=len(graph.outputs),
        op_enum=",\n".join(f"    MCUQ_OP_{op.name} = {i}" for i, op in enumerate(Op)),
        const_data="\n\n".join(const_data), param_data="\n".join(param_data),
        tensor_table="\n".join(tensor_rows), node_io="\n".join(node_io), node_table="\n".join(node_rows),
        inputs=io_rows(graph.inputs), outputs=io_rows(graph.outputs), kernel_macros=kernel_macros(graph),
    )
    header = Template((TEMPLATES / "mcuq_model.h.in").read_text()).substitute(values)
    source = Template((TEMPLATES / "mcuq_model.c.in").read_text()).substitute(values)
    return PackedSources(header, source)


def write_pack_dir(out_dir: Path, graph: Graph, sources: PackedSources, manifest: dict,
                   report: dict, extra: Mapping[str, bytes] = MappingProxyType({})) -> None:
    """Write the pack output atomically: build in a temporary sibling, then swap it into place.
    ``extra`` maps further file names (e.g. a report plot) to their bytes."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or
                             (any(out_dir.iterdir()) and not (out_dir / "manifest.json").exists())):
        raise McuqError(f"{out_dir}: exists and is not an mcuq pack output; choose another -o")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.{secrets.token_hex(4)}")  # named first: cleaned up if interrupted
    old = None
    try:
        tmp.mkdir()
        (tmp / "src").mkdir()
        (tmp / "src" / "mcuq_model.h").write_text(sources.header)
        (tmp / "src" / "mcuq_model.c").write_text(sources.source)
        save_graph(graph, tmp / "graph")
        (tmp / "report.json").write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
        for name, data in extra.items():
            (tmp / name).write_bytes(data)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        with interrupts.deferred():  # the swap is never cut in half
            if out_dir.exists():
                old = out_dir.with_name(f".{out_dir.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                out_dir.rename(old)
            tmp.rename(out_dir)
    finally:
        with interrupts.deferred():  # nor the clean-up (a second Ctrl-C left .DIR.old behind)
            if old is not None and not out_dir.exists():  # failed between the renames
                old.rename(out_dir)
            for leftover in (old, tmp):
                if leftover is not None:
                    shutil.rmtree(leftover, ignore_errors=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
