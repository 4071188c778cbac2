"""Run single-op kernel cases on an emulated board: the firmware's kernels as the board's core
compiles them (DSP-extension paths on Cortex-M4/M7), fed the simulator's Params and inputs,
outputs compared on the target with the simulator's, and instructions counted per call.

A case becomes C data (params struct, constant and fed inputs, expected output); a small main
runs every case once, compares with memcmp and prints one line per case over the UART:
"case <i> <status> <first differing byte or -1> <instructions>", then "END". QEMU runs the image
with -icount shift=0, so the counts are exact instruction counts (SysTick, 40 per tick on the
mps2 machines: the harness reports ticks * 40).
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

from kernels_ffi import INCLUDE, KERNELS
from mcuq.boards import load_board
from mcuq.build import CFLAGS, FIRMWARE_DIR, LDFLAGS, board_defines, linker_script
from mcuq.ir import Graph, Op
from mcuq.pack import _c_name, _fmt_array, c_fields

_CTYPE = {"int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t", "float32": "float"}
_SUFFIX = {"int8": "s8", "int16": "s16", "int32": "s32", "float32": "f32"}
_NAMES = {Op.CONV_2D: "conv2d", Op.DEPTHWISE_CONV_2D: "depthwise_conv2d", Op.FULLY_CONNECTED: "fully_connected",
          Op.AVERAGE_POOL_2D: "avg_pool", Op.MAX_POOL_2D: "max_pool", Op.ADD: "add", Op.MUL: "mul"}

_MAIN = r"""
#include <stdint.h>
#include <string.h>
#include "mcuq_kernels.h"
#include "mcuq_port.h"

typedef int (*run_fn)(void *out);
typedef struct { run_fn run; const void *expected; int32_t bytes; } kcase_t;
extern const kcase_t cases[];
extern const int32_t num_cases;

static uint8_t out_buf[OUT_BYTES] __attribute__((aligned(8)));

static void put(const char *s) { mcuq_port_write((const uint8_t *)s, (uint32_t)strlen(s)); }

static void put_int(int32_t v)
{
    char buf[12];
    int i = 11;
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + u % 10u);
        u /= 10u;
    } while (u);
    if (v < 0) {
        buf[--i] = '-';
    }
    put(buf + i);
}

int main(void)
{
    int32_t i, j;
    mcuq_port_init();
    for (i = 0; i < num_cases; i++) {
        uint32_t t0, t1;
        int status;
        int32_t bad = -1;
        memset(out_buf, 0x5A, (size_t)cases[i].bytes);
        mcuq_port_counter_sync();
        t0 = mcuq_port_counter();
        status = cases[i].run(out_buf);
        t1 = mcuq_port_counter();
        for (j = 0; j < cases[i].bytes; j++) {
            if (out_buf[j] != ((const uint8_t *)cases[i].expected)[j]) {
                bad = j;
                break;
            }
        }
        put("case ");
        put_int(i);
        put(" ");
        put_int(status);
        put(" ");
        put_int(bad);
        put(" ");
        put_int((int32_t)(t1 - t0));
        put("\n");
    }
    put("END\n");
    mcuq_port_flush();
    for (;;) {
    }
}
"""


@dataclass
class TargetCase:
    """One kernel call: the node's Params, its input arrays (None when absent) and the simulator's
    expected output."""

    graph: Graph
    params: Any
    args: list[np.ndarray | None]
    expected: np.ndarray
    kernel: str | None = None  # the C function, when not the op's kernel for args[0]'s type


@dataclass
class TargetResult:
    status: int
    first_bad: int  # first differing output byte, -1 when equal
    instructions: int


def _array(name: str, a: np.ndarray, const: bool = True) -> str:
    a = np.ascontiguousarray(a)
    ctype = _CTYPE[a.dtype.name]
    return (f"static {'const ' if const else ''}{ctype} {name}[{max(1, a.size)}] __attribute__((aligned(8))) = "
            f"{{\n{_fmt_array(a)}\n}};")


def _params(name: str, p: Any) -> list[str]:
    lines, inits = [], []
    for f in c_fields(p):
        value = getattr(p, f.name)
        if isinstance(value, (tuple, np.ndarray)):
            arr = np.asarray(value, np.int32) if isinstance(value, tuple) else value
            lines.append(_array(f"{name}_{f.name}", arr))
            inits.append(f".{f.name} = {name}_{f.name}")
        elif isinstance(value, (float, np.floating)):
            inits.append(f".{f.name} = {float(np.float32(value))!r}f")
        else:
            v = int(value)
            inits.append(f".{f.name} = {v if v > -(1 << 31) else '(-2147483647 - 1)'}")
    lines.append(f"static const {_c_name(type(p))} {name} = {{ {', '.join(inits)} }};")
    return lines


def cases_source(cases: Sequence[TargetCase]) -> tuple[str, int]:
    """The C file holding every case and the case table; (source, largest output in bytes)."""
    out = ['#include <stdint.h>', '#include "mcuq_kernels.h"',
           "typedef int (*run_fn)(void *out);",
           "typedef struct { run_fn run; const void *expected; int32_t bytes; } kcase_t;"]
    table, largest = [], 1
    for i, case in enumerate(cases):
        node = case.graph.nodes[0]
        out += _params(f"p{i}", case.params)
        names = []
        for j, a in enumerate(case.args):
            if a is None:
                names.append("0")
            else:
                out.append(_array(f"in{i}_{j}", a))
                names.append(f"in{i}_{j}")
        out.append(_array(f"want{i}", case.expected))
        fn = case.kernel or f"mcuq_{_NAMES[node.op]}_{_SUFFIX[case.args[0].dtype.name]}"
        arity = 3 if node.op in (Op.CONV_2D, Op.DEPTHWISE_CONV_2D, Op.FULLY_CONNECTED) else \
            2 if node.op in (Op.ADD, Op.MUL) else 1
        call_args = (names + ["0"] * 3)[:arity]
        out.append(f"static int run{i}(void *o) {{ return {fn}(&p{i}, {', '.join(call_args)}, o); }}")
        table.append(f"    {{ run{i}, want{i}, {case.expected.nbytes} }},")
        largest = max(largest, case.expected.nbytes)
    out.append("const kcase_t cases[] = {\n" + "\n".join(table) + "\n};")
    out.append(f"const int32_t num_cases = {len(cases)};")
    return "\n".join(out) + "\n", largest


def build_image(cases: Sequence[TargetCase], board_name: str, work: Path) -> Path:
    """Compile kernels, core startup, the board's UART port, the cases and the harness main."""
    board = load_board(board_name)
    src, largest = cases_source(cases)
    work.mkdir(parents=True, exist_ok=True)
    (work / "cases.c").write_text(src)
    (work / "main.c").write_text(f"#define OUT_BYTES {largest}\n" + _MAIN)
    (work / "image.ld").write_text(linker_script(board))
    ports = FIRMWARE_DIR / "ports"
    port_file = {"cmsdk": "port_cmsdk.c"}[board.uart.driver]
    sources = [*sorted(KERNELS.glob("*.c")), ports / "mcuq_cortexm.c", ports / port_file,
               work / "cases.c", work / "main.c"]
    elf = work / "image.elf"
    cmd = ["arm-none-eabi-gcc", *board.cflags, *CFLAGS, *board_defines(board), "-I", str(INCLUDE), "-I", str(ports),
           *map(str, sources), *LDFLAGS, "-T", str(work / "image.ld"), "-o", str(elf)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return elf


def run_image(elf: Path, board_name: str, count: int, timeout: float = 120.0) -> list[TargetResult]:
    """Run the image under QEMU (-icount shift=0) until END; one result per case."""
    board = load_board(board_name)
    cmd = ["qemu-system-arm", "-M", board.qemu_machine, "-kernel", str(elf), "-display", "none",
           "-monitor", "none", "-serial", "stdio", "-icount", "shift=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None
        while b"\nEND\n" not in b"\n" + out:  # a case that never returns prints nothing: time out anyway
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([proc.stdout], [], [], remaining)[0]:
                raise TimeoutError(f"{elf}: no END within {timeout} s")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            out += chunk
    finally:
        proc.kill()
        proc.wait()
    lines = [ln.strip() for ln in out.decode(errors="replace").splitlines()]
    lines = lines[:lines.index("END")] if "END" in lines else lines
    results = []
    for line in lines:
        parts = line.split()
        if len(parts) == 5 and parts[0] == "case":
            results.append(TargetResult(int(parts[2]), int(parts[3]), int(parts[4]) * 40))
    if len(results) != count:
        raise AssertionError(f"{elf}: {len(results)} of {count} cases reported; last lines {lines[-3:]}")
    return results


def assert_bit_exact_on(board_name: str, named: Sequence[tuple[str, TargetCase]], work: Path) -> None:
    """Run the (name, case) pairs in one image on the board: each must return 0 with every output
    byte equal, or the assertion names the first that does not; skipped without the tools."""
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None:
        pytest.skip("arm-none-eabi-gcc and qemu-system-arm are needed")
    results = run_image(build_image([c for _, c in named], board_name, work), board_name, len(named))
    for (name, _), res in zip(named, results):
        assert res.status == 0 and res.first_bad < 0, f"{board_name} {name}: status {res.status}, byte {res.first_bad}"
