"""The `mcuq` command: thin click commands over mcuq.pipeline.

Every McuqError becomes one line on stderr and exit code 2; anything unexpected becomes one
line too (set MCUQ_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import click
import numpy as np

from mcuq import __version__, pipeline
from mcuq.boards import DEFAULT_BOARD, all_boards
from mcuq.errors import McuqError
from mcuq.quant import DEFAULT_RANGE_METHOD, Budget, RangeMethod, Scheme

EXIT_ERROR = 2


def _warn(message: str) -> None:
    click.secho(f"WARNING: {message}", fg="yellow", err=True)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


class _Group(click.Group):
    def invoke(self, ctx):
        signal.signal(signal.SIGTERM, _interrupt)  # unwind like Ctrl-C: temp output removed, emulator stopped
        try:
            return super().invoke(ctx)
        except McuqError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            sys.unraisablehook = lambda _: None  # finalizers of the interrupted work (a half-written .npz) stay quiet
            click.echo("interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:  # the reader of stdout went away (`mcuq build DIR | head -1`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
            sys.exit(128 + signal.SIGPIPE)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as e:  # never a traceback for the user
            if os.environ.get("MCUQ_DEBUG"):
                raise
            click.secho(f"internal error: {type(e).__name__}: {e} (MCUQ_DEBUG=1 shows the traceback)",
                        fg="red", err=True)
            sys.exit(EXIT_ERROR)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="mcuq")
def main() -> None:
    """Integer-only neural networks on Cortex-M, proven bit-exact on the target."""


def _quant_options(command):
    """The quantization options `pack` and `sim` share (they apply to float models)."""
    options = [
        click.option("--calib", type=click.Path(dir_okay=False), default=None,
                     help="Calibration inputs (.npz with in0, in1, ... each [N, *shape])."),
        click.option("--scheme", type=click.Choice([s.value for s in Scheme]), default="tflite", show_default=True,
                     help="tflite: multiplier+shift requantization; pow2: power-of-two scales, shift-only."),
        click.option("--range-method", type=click.Choice([m.value for m in RangeMethod]),
                     default=str(DEFAULT_RANGE_METHOD), show_default=True,
                     help="How activation clipping ranges are chosen from calibration data."),
        click.option("--eval", "eval_data", type=click.Path(dir_okay=False), default=None,
                     help="Evaluation set (.npz with in0, ... and labels): accuracies in the report."),
        click.option("--max-drop", type=click.FloatRange(0, 100), default=None,
                     help="Search 8/4-bit weights per layer, losing at most this many points of top-1 "
                          "agreement with float."),
        click.option("--min-sqnr", type=float, default=None,
                     help="Search 8/4-bit weights per layer, keeping the first output's SQNR >= this (dB)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _quant(calib, scheme, range_method, eval_data, max_drop, min_sqnr) -> pipeline.QuantOptions:
    if max_drop is not None and min_sqnr is not None:
        raise click.UsageError("give --max-drop or --min-sqnr, not both")
    budget = None
    if max_drop is not None or min_sqnr is not None:
        budget = Budget(max_drop=max_drop, min_sqnr_db=min_sqnr)
    return pipeline.QuantOptions(Scheme(scheme), Path(calib) if calib else None, range_method,
                                 Path(eval_data) if eval_data else None, budget)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(model: str, as_json: bool) -> None:
    """Per-layer ops, shapes, MACs and bytes; quantization kind; arena; boards it fits."""
    info = pipeline.inspect(model)
    m, s, fits = info.model, info.model.summary, info.misfits
    if as_json:
        d = s.to_dict()
        d.update(file=str(m.path), sha256=m.sha256, arena_bytes=info.footprint.arena_bytes,
                 const_bytes=info.footprint.const_bytes, estimated=info.estimated,
                 fits=[b for b, why in fits.items() if why is None],
                 does_not_fit={b: why for b, why in fits.items() if why})
        click.echo(json.dumps(d, indent=1))
        return
    click.echo(f"model        {m.path.name}  (sha256 {m.sha256[:16]}…)")
    io = " with float I/O" if s.float_io and s.kind == pipeline.QuantKind.FULL_INTEGER else ""
    click.echo(f"quantization {s.kind}{io}")
    click.echo(f"{'#':>3}  {'op':<20} {'input':<18} {'output':<16} {'MACs':>11} {'weights B':>10} {'act. B':>9}")
    for layer in s.layers:
        ins = ",".join("x".join(map(str, sh)) for sh in layer.input_shapes)
        flag = "" if layer.supported else "  (unsupported)"
        click.echo(f"{layer.index:>3}  {layer.op:<20} {ins:<18} {'x'.join(map(str, layer.output_shape)):<16} "
                   f"{layer.macs:>11,} {layer.weight_bytes:>10,} {layer.activation_bytes:>9,}{flag}")
    click.echo(f"{'':>3}  {'total':<20} {'':<18} {'':<16} {s.macs:>11,} {s.weight_bytes:>10,} "
               f"{s.activation_bytes:>9,}")
    click.echo(f"unsupported  {', '.join(s.unsupported_ops) or 'none'}")
    note = " (int8 estimate after quantization)" if info.estimated else ""
    click.echo(f"arena        {info.footprint.arena_bytes:,} bytes planned{note}")
    ok = [b for b, why in fits.items() if why is None]
    click.echo(f"fits         {', '.join(ok) or 'no board'}")
    for b, why in fits.items():
        if why:
            click.echo(f"  not {b}: {why}")


@main.command()
@click.argument("model", type=click.Path())
@click.option("--inputs", "inputs_path", required=True, type=click.Path(dir_okay=False),
              help=".npz with in0, in1, ...: one sample of the input shape, or [N, *shape].")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output .npz.")
@click.option("--all-tensors", is_flag=True, help="Also write every tensor as t<index>.")
@_quant_options
def sim(model: str, inputs_path: str, out_path: str, all_tensors: bool, **quant) -> None:
    """Run the integer host simulator on a .tflite or a pack output directory."""
    graph = pipeline.load_for_sim(model, _quant(**quant), _warn)
    samples = pipeline.load_arrays(inputs_path, graph, "inputs")
    results = pipeline.simulate(graph, samples.arrays, all_tensors)
    if not samples.stacked:
        results = {k: v[0] for k, v in results.items()}
    out = Path(out_path)
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez(tmp, **results)
    tmp.replace(out)
    click.echo(f"wrote {out}: {', '.join(f'{k} {list(v.shape)}' for k, v in results.items() if k.startswith('out'))}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--board", default=DEFAULT_BOARD, show_default=True, help="Board name (see `mcuq boards`).")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@_quant_options
def pack(model: str, board: str, out_dir: str, **quant) -> None:
    """Quantize to integer-only, plan memory, emit C arrays into DIR."""
    packed = pipeline.pack(model, board, out_dir, _quant(**quant), _warn)
    man = packed.manifest
    click.echo(f"packed {man['model']} for {man['board']} ({man['scheme']} scheme) into {packed.out_dir}")
    click.echo(f"  arena {man['arena_bytes']:,} bytes, weights and params {man['weight_bytes']:,} bytes")
    if packed.integer.report is not None:
        click.echo(packed.integer.report.format())


@main.command()
def boards() -> None:
    """List the boards mcuq knows."""
    for b in all_boards():
        kind = f"QEMU {b.qemu_machine}" if b.qemu_machine else "real board"
        click.echo(f"{b.name:<16} {b.core:<11} {b.flash_bytes // 1024:>5} KB flash {b.ram_bytes // 1024:>4} KB RAM  "
                   f"{kind:<22} {b.title}")


class _Bar:
    """A click progress bar on stderr driven by (done, total) callbacks; silent when not a tty."""

    def __init__(self, label: str):
        self.label = label
        self.bar = None
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def __enter__(self) -> "_Bar":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


@main.command()
@click.argument("pack_dir", type=click.Path(file_okay=False))
@click.option("--board", default=None, help="Board to build for (default: the one DIR was packed for).")
@click.option("--optimize", type=click.Choice(["speed", "size"]), default="size", show_default=True,
              help="size: everything at -Os; speed: the DSP kernels at -O2 (about 1 %% fewer "
                   "instructions, 2.5 KB more code).")
def build(pack_dir: str, board: str | None, optimize: str) -> None:
    """Cross-compile the firmware for a pack output DIR and report flash and RAM use."""
    from mcuq.build import build as build_firmware

    with _Bar("compiling") as bar:
        result = build_firmware(pack_dir, board, progress=bar, optimize=optimize)
    click.echo(result.summary())
    click.echo(f"  {result.elf}")


@main.command()
@click.argument("pack_dir", type=click.Path(file_okay=False))
@click.option("--port", default=None, help="Real board: its serial port (default: the one plugged in). "
                                           "Emulated board: the TCP port QEMU listens on (default: a free one).")
def flash(pack_dir: str, port: str | None) -> None:
    """Load DIR's firmware onto its board, or start it in QEMU in the background; prints its port."""
    from mcuq.flash import flash as flash_firmware
    from mcuq.flash import stop as stop_emulator

    try:
        click.echo(flash_firmware(pack_dir, port))
        click.echo(f"now `mcuq verify {pack_dir}` talks to it (`mcuq stop {pack_dir}` ends an emulator)", err=True)
    except KeyboardInterrupt:  # interrupted even after the emulator came up: leave none behind
        stop_emulator(pack_dir)
        raise


@main.command()
@click.argument("pack_dir", type=click.Path(file_okay=False))
def stop(pack_dir: str) -> None:
    """End the emulator `mcuq flash DIR` started."""
    from mcuq.flash import stop as stop_emulator

    ended = stop_emulator(pack_dir)
    click.echo(f"stopped the emulator of {pack_dir}" if ended else f"no emulator was running for {pack_dir}")


@main.command()
@click.argument("pack_dir", type=click.Path(file_okay=False), required=False, default=".")
@click.option("--port", default=None, help="Serial port or URL (default: the running emulator, "
                                           "else an ST-LINK virtual COM port).")
@click.option("--inputs", "inputs_path", type=click.Path(dir_okay=False), default=None,
              help=".npz with in0, in1, ... (one sample or [N, *shape]).")
@click.option("--count", default=None, type=click.IntRange(1), help="Seeded random inputs to run (default 10).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def verify(pack_dir: str, port: str | None, inputs_path: str | None, count: int | None, seed: int,
           as_json: bool) -> None:
    """Run inputs on the target and compare every output bit for bit with the host simulator."""
    from mcuq.graphfile import load_graph
    from mcuq.verify import DEFAULT_COUNT, verify as verify_target

    if inputs_path and count:
        raise click.UsageError("give --inputs or --count, not both")
    inputs = None
    if inputs_path:
        inputs = pipeline.load_arrays(inputs_path, load_graph(Path(pack_dir) / "graph"), "inputs").arrays
    with _Bar("verifying") as bar:
        result = verify_target(pack_dir, port=port, inputs=inputs, count=count or DEFAULT_COUNT, seed=seed,
                               progress=None if as_json else bar)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
    else:
        click.echo(result.format_table())
    if not result.ok:
        sys.exit(1)
