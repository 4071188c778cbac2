"""Prove the target computes what the host simulator computes, bit for bit, and what it costs.

For each input: write it, run the whole graph, read the outputs, compare with the integer host
simulator element for element (integers by value, floats by their bits). On a mismatch, run again to node k = 0, 1, ... and read node k's
outputs to name the first layer that diverges. Per-layer counters (cycles on a chip,
instructions under QEMU -icount) are averaged over the full runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mcuq.errors import DeviceError, MismatchError, ModelError
from mcuq.build import BUILD_SUBDIR
from mcuq.flash import STATE_FILE, running_emulator, stop
from mcuq.graphfile import load_graph
from mcuq.ir import NO_TENSOR, Graph
from mcuq.link import Device, DeviceInfo, LinkError, LinkStats, find_stlink_port
from mcuq.simulate import as_inputs, prepare_graph, run_integer
from mcuq.summary import node_macs

DEFAULT_COUNT = 10
SHOWN_MISMATCHES = 5  # differing outputs format_table lists (to_dict has all)
RUN_RETRIES = 2  # a lost RUN response: write the inputs again and run again
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class OutputMismatch:
    """The first differing element of one graph output for one input."""

    sample: int
    output: int
    tensor: str
    flat_index: int
    got: float
    expected: float
    differing: int
    size: int


@dataclass(frozen=True)
class Divergence:
    """The first layer whose output differs from the host simulator's (re-run to that layer)."""

    sample: int
    layer: int
    op: str
    tensor: str
    flat_index: int
    got: float
    expected: float
    differing: int
    size: int

    def describe(self) -> str:
        return (f"layer {self.layer} ({self.op}) tensor '{self.tensor}' flat index {self.flat_index}: "
                f"got {self.got:g}, expected {self.expected:g} ({self.differing} of {self.size} differ; "
                f"input {self.sample})")


@dataclass(frozen=True)
class LayerCost:
    """One layer's counter (instructions or cycles per inference, averaged over the runs)."""

    index: int
    op: str
    macs: int
    count: float

    @property
    def per_mac(self) -> float | None:
        return self.count / self.macs if self.macs else None


@dataclass(frozen=True)
class VerifyResult:
    """What `mcuq verify` found; ``ok`` only when every output of every input is bit-exact."""

    pack_dir: str
    model: str
    model_sha256: str
    board: str
    firmware_version: str
    port: str
    counter: str  # "cycles" or "instructions"
    samples: int
    exact: int
    mismatches: tuple[OutputMismatch, ...]
    divergence: Divergence | None
    layers: tuple[LayerCost, ...]
    total: float  # counter per inference, whole graph
    link: LinkStats  # requests, retries and frames lost on the serial link

    @property
    def ok(self) -> bool:
        return self.exact == self.samples

    @property
    def verdict(self) -> str:
        if self.ok:
            return f"BIT-EXACT: {self.samples} of {self.samples} inputs equal the host simulator on every output"
        where = (f"first diverging {self.divergence.describe()}" if self.divergence else
                 "every layer matched when re-run layer by layer (nondeterministic firmware?)")
        return f"MISMATCH: {self.samples - self.exact} of {self.samples} inputs differ; {where}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(ok=self.ok, verdict=self.verdict)
        for layer, row in zip(self.layers, d["layers"]):
            row["per_mac"] = layer.per_mac
        return d

    def format_table(self) -> str:
        """Per-layer counter table, totals and the verdict, as printed by `mcuq verify`."""
        unit = self.counter
        lines = [f"{self.model} on {self.board} (firmware {self.firmware_version}, {self.port})",
                 f"{'#':>3}  {'op':<20} {'MACs':>11} {unit:>14} {unit[:5] + '/MAC':>10} {'share':>6}"]
        total = self.total or 1.0
        for c in self.layers:
            per = f"{c.per_mac:.2f}" if c.per_mac is not None else "-"
            lines.append(f"{c.index:>3}  {c.op:<20} {c.macs:>11,} {c.count:>14,.0f} {per:>10} "
                         f"{100 * c.count / total:>5.1f}%")
        macs = sum(c.macs for c in self.layers)
        per = f"{self.total / macs:.2f}" if macs else "-"
        lines.append(f"{'':>3}  {'total':<20} {macs:>11,} {self.total:>14,.0f} {per:>10}")
        for m in self.mismatches[:SHOWN_MISMATCHES]:
            lines.append(f"input {m.sample} output {m.output} '{m.tensor}' flat index {m.flat_index}: "
                         f"got {m.got:g}, expected {m.expected:g} ({m.differing} of {m.size} differ)")
        if len(self.mismatches) > SHOWN_MISMATCHES:
            lines.append(f"... and {len(self.mismatches) - SHOWN_MISMATCHES} more differing outputs")
        if self.link.lost or self.link.corrupt or self.link.stale:
            lines.append(f"link: {self.link.requests} requests, {self.link.lost} responses lost and recovered "
                         f"({self.link.corrupt} corrupt frames, {self.link.stale} late answers ignored)")
        lines.append(self.verdict)
        return "\n".join(lines)


def tensor_slots(graph: Graph) -> dict[int, int]:
    """Tensor index -> slot in the packed tensor table (every tensor a node or the graph uses,
    in index order: the rule mcuq.pack follows)."""
    used = {t for n in graph.nodes for t in (*n.inputs, *n.outputs) if t != NO_TENSOR}
    used |= set(graph.inputs) | set(graph.outputs)
    return {t: i for i, t in enumerate(sorted(used))}


def resolve_port(pack_dir: Path, port: str | None) -> str:
    """The port to use: ``port``; else the emulator `mcuq flash DIR` started; else an ST-LINK."""
    if port:
        return port
    url = running_emulator(pack_dir)
    if url:
        return url
    if (pack_dir / BUILD_SUBDIR / STATE_FILE).exists():
        raise DeviceError(f"the emulator `mcuq flash {pack_dir}` started has stopped or runs an older build: "
                          f"run mcuq flash {pack_dir} again")
    return find_stlink_port()


def random_samples(graph: Graph, count: int, seed: int) -> list[np.ndarray]:
    """``count`` seeded inputs per graph input ([count, *shape]) over each input's range: the
    whole integer range, or for a float input the range its quantizing consumer can represent."""
    rng = np.random.default_rng(seed)
    out = []
    for t in graph.input_tensors():
        shape = (count, *t.shape)
        if np.dtype(t.dtype).kind in "iu":
            info = np.iinfo(t.dtype)
            out.append(rng.integers(info.min, info.max, shape, endpoint=True).astype(t.dtype))
            continue
        consumer = next((graph.tensor(n.outputs[0]) for n in graph.nodes if t.index in n.inputs), None)
        q = consumer.quant if consumer is not None else None
        if q is None or np.dtype(consumer.dtype).kind not in "iu":
            lo, hi = -1.0, 1.0
        else:
            info = np.iinfo(consumer.dtype)
            lo, hi = (q.scale[0] * (v - q.zero_point[0]) for v in (info.min, info.max))
        out.append(rng.uniform(lo, hi, shape).astype(t.dtype))
    return out


def _check_firmware(info: DeviceInfo, graph: Graph, manifest: dict, pack_dir: Path) -> None:
    """The firmware must run the model DIR packs, with the same tensor table and I/O."""
    want = manifest["model_sha256"]
    if info.model_sha256 != want:
        raise MismatchError(f"firmware runs model {info.model_sha256[:16]}, {pack_dir} packs "
                            f"{want[:16]}: flash {pack_dir} first")
    slots = tensor_slots(graph)
    for what, ios, tensors in (("input", info.inputs, graph.input_tensors()),
                               ("output", info.outputs, graph.output_tensors())):
        mine = [(slots[t.index], t.dtype, tuple(t.shape)) for t in tensors]
        theirs = [(io.slot, io.dtype, io.shape) for io in ios]
        if mine != theirs:
            raise MismatchError(f"firmware {what}s {theirs} differ from {pack_dir}'s {mine}: "
                                f"rebuild and flash {pack_dir}")
    if info.num_nodes != len(graph.nodes):
        raise MismatchError(f"firmware runs {info.num_nodes} nodes, {pack_dir} packs {len(graph.nodes)}: "
                            f"rebuild and flash {pack_dir}")


def first_difference(got: np.ndarray, want: np.ndarray) -> tuple[int, float, float, int] | None:
    """(flat index, got, expected, how many differ) of the first differing element, or None.
    Float tensors are compared bit for bit (-0.0 is not 0.0, a NaN equals the same NaN)."""
    got, want = got.reshape(-1), want.reshape(-1)
    if got.dtype.kind == "f":
        bits = f"u{got.dtype.itemsize}"
        diff = np.flatnonzero(got.view(bits) != want.view(bits))
    else:
        diff = np.flatnonzero(got != want)
    if diff.size == 0:
        return None
    i = int(diff[0])
    return i, got[i].item(), want[i].item(), int(diff.size)


class _Session:
    """One device, one graph: write inputs, run, read tensors back as arrays."""

    def __init__(self, dev: Device, graph: Graph, info: DeviceInfo):
        self.dev, self.graph, self.info = dev, graph, info
        self.slots = tensor_slots(graph)

    def run(self, xs: Sequence[np.ndarray], last_node: int = -1) -> int:
        """Write the inputs and run; a lost RUN response is retried from the inputs (the run may
        have overwritten them). Counter ticks of the run."""
        lost: LinkError | None = None
        for _ in range(RUN_RETRIES + 1):
            try:
                for io, x in zip(self.info.inputs, xs):
                    self.dev.write_tensor(io.slot, np.ascontiguousarray(x).tobytes())
            except LinkError:
                if lost is None:
                    raise
                raise lost from None  # the board stopped answering at the RUN
            try:
                return self.dev.run(last_node).total
            except LinkError as e:
                lost = lost or e
        raise lost

    def read(self, tensor: int) -> np.ndarray:
        t = self.graph.tensor(tensor)
        raw = self.dev.read_tensor(self.slots[tensor], t.nbytes)
        return np.frombuffer(raw, t.dtype).reshape(t.shape)


def _localize(session: _Session, sample: int, xs: Sequence[np.ndarray],
              want: dict[int, np.ndarray]) -> Divergence | None:
    """Re-run to node k = 0, 1, ... and compare node k's outputs: the first layer that differs."""
    graph = session.graph
    for node in graph.nodes:
        session.run(xs, last_node=node.index)
        for t in node.outputs:
            found = first_difference(session.read(t), want[t])
            if found:
                i, got, expected, n = found
                return Divergence(sample, node.index, str(node.op), graph.tensor(t).name, i, got, expected,
                                  n, graph.tensor(t).size)
    return None


def verify(pack_dir: str | Path, port: str | None = None, inputs: Sequence[np.ndarray] | None = None,
           count: int = DEFAULT_COUNT, seed: int = 0, progress: Progress | None = None,
           timeout: float = 2.0, run_timeout: float = 60.0) -> VerifyResult:
    """Run ``inputs`` (one [N, *shape] array per graph input; else ``count`` seeded random ones)
    on the board or emulator at ``port`` and compare every output with the host simulator.
    Ctrl-C (SIGTERM too, through the CLI) stops the emulator `mcuq flash DIR` started when
    verify runs on it: its firmware may be left mid-frame."""
    pack_dir = Path(pack_dir)
    try:
        return _verify(pack_dir, port, inputs, count, seed, progress, timeout, run_timeout)
    except KeyboardInterrupt:
        emulator = running_emulator(pack_dir)
        if emulator is not None and port in (None, emulator):
            stop(pack_dir)
        raise


def _verify(pack_dir: Path, port: str | None, inputs: Sequence[np.ndarray] | None, count: int, seed: int,
            progress: Progress | None, timeout: float, run_timeout: float) -> VerifyResult:
    try:
        manifest = json.loads((pack_dir / "manifest.json").read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise ModelError(f"{pack_dir}: not an mcuq pack output (no manifest.json)") from None
    graph = load_graph(pack_dir / "graph")
    params = prepare_graph(graph)
    xs_all = as_inputs(graph, inputs) if inputs is not None else random_samples(graph, count, seed)
    n = xs_all[0].shape[0]
    url = resolve_port(pack_dir, port)
    with Device.open(url, timeout=timeout, run_timeout=run_timeout) as dev:
        info = dev.hello()
        _check_firmware(info, graph, manifest, pack_dir)
        session = _Session(dev, graph, info)
        profile = np.zeros(len(graph.nodes), np.float64)
        total = 0.0
        mismatches: list[OutputMismatch] = []
        divergence, localized = None, False
        exact = 0
        for s in range(n):
            xs = [a[s] for a in xs_all]
            want = run_integer(graph, xs, all_tensors=True, params=params)
            total += session.run(xs)
            profile += dev.read_profile(len(graph.nodes))
            found = []
            for k, t in enumerate(graph.outputs):
                diff = first_difference(session.read(t), want[t])
                if diff:
                    found.append(OutputMismatch(s, k, graph.tensor(t).name, *diff, graph.tensor(t).size))
            mismatches.extend(found)
            if not found:
                exact += 1
            elif not localized:
                divergence, localized = _localize(session, s, xs, want), True
            if progress:
                progress(s + 1, n)
    scale = info.counter_scale / n
    layers = tuple(LayerCost(node.index, str(node.op), node_macs(graph, node), float(c * scale))
                   for node, c in zip(graph.nodes, profile))
    return VerifyResult(str(pack_dir), manifest.get("model", ""), info.model_sha256, info.board_name,
                        info.firmware_version, url, info.counter_kind.label, n, exact, tuple(mismatches),
                        divergence, layers, total * scale, replace(dev.stats))
