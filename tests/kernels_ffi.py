"""Build firmware/kernels for the host with cffi and call them with the simulator's Params.

The kernel files are compiled with the firmware's strict flags into objects; a small cffi module
links them and adds array wrappers around the static inline fixed-point functions of
mcuq_requantize.h, so tests can compare them with mcuq.fixedpoint element for element.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from typing import Any

import cffi
import numpy as np

from mcuq.pack import _c_name, c_fields

REPO = Path(__file__).resolve().parents[1]
INCLUDE = REPO / "firmware" / "include"
KERNELS = REPO / "firmware" / "kernels"
STRICT = ["-O2", "-std=c99", "-Wall", "-Wextra", "-Werror"]
UBSAN = ["-fsanitize=undefined", "-fno-omit-frame-pointer"]  # reports "runtime error: ..." on stderr

# Array wrappers: out[i] = f(args[i]...) for the inline functions under test.
_WRAPPERS = {
    "requantize": ("int32_t", ["int32_t", "int32_t", "int32_t"], "mcuq_requantize"),
    "requantize64": ("int32_t", ["int64_t", "int32_t", "int32_t"], "mcuq_requantize64"),
    "requantize_pow2": ("int32_t", ["int32_t", "int32_t"], "mcuq_requantize_pow2"),
    "requantize_channel": ("int32_t", ["int32_t"] * 5, "requantize_channel_row"),
    "exp_on_negative_values": ("int32_t", ["int32_t", "int32_t"], "mcuq_exp_on_negative_values"),
    "one_over_one_plus_x": ("int32_t", ["int32_t"], "mcuq_one_over_one_plus_x"),
    "newton_one_over_one_plus_x": ("int32_t", ["int32_t"], "mcuq_newton_one_over_one_plus_x"),
}


# mcuq_requantize_channel() on a channel_data row {0, M, r, h}, clamped to the int32 range.
_HELPERS = """
static int32_t requantize_channel_row(int32_t acc, int32_t m, int32_t r, int32_t h, int32_t zp)
{
    const int32_t cd[4] = {0, m, r, h};
    return mcuq_requantize_channel(acc, cd, zp, INT32_MIN, INT32_MAX);
}
"""


def _wrapper(name: str, ret: str, args: list[str], fn: str) -> tuple[str, str]:
    params = ", ".join(f"const {t} *a{i}" for i, t in enumerate(args))
    decl = f"void t_{name}({params}, {ret} *out, int32_t n)"
    call = ", ".join(f"a{i}[i]" for i in range(len(args)))
    return decl + ";", f"{decl} {{ int32_t i; for (i = 0; i < n; i++) out[i] = {fn}({call}); }}"


def _cdef() -> str:
    """mcuq_kernels.h as cffi declarations: no comments, C++ guard or preprocessor lines."""
    text = (INCLUDE / "mcuq_kernels.h").read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"#ifdef __cplusplus.*?#endif", "", text, flags=re.S)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return f"#define MCUQ_MAX_DIMS ...\n{text}"


def build(tmp: Path, sanitize: bool = False, dsp: bool = False, defines: tuple[str, ...] = ()) -> tuple[cffi.FFI, Any]:
    """Compile every kernel (strict flags; with UBSan if ``sanitize``; with the DSP-extension
    paths over the portable intrinsic twins if ``dsp``; with the -D flags ``defines``) and the
    wrapper module in ``tmp``; return (ffi, lib)."""
    extra = (UBSAN if sanitize else []) + (["-DMCUQ_DSP_EMULATED"] if dsp else []) + list(defines)
    objects = tmp / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    sources = sorted(KERNELS.glob("*.c"))
    subprocess.run(["gcc", *STRICT, *extra, "-fPIC", "-I", str(INCLUDE), "-c", *map(str, sources)],
                   cwd=objects, check=True)
    wrappers = [_wrapper(name, *spec) for name, spec in _WRAPPERS.items()]
    ffi = cffi.FFI()
    ffi.cdef(_cdef() + "\n" + "\n".join(d for d, _ in wrappers))
    name = ("_mcuq_kernels" + ("_ubsan" if sanitize else "") + ("_dsp" if dsp else "") + ("_d" if defines else "")
            + "_host")
    ffi.set_source(
        name,
        '#include "mcuq_kernels.h"\n#include "mcuq_requantize.h"\n#include "mcuq_support.h"\n' + _HELPERS
        + "\n".join(s for _, s in wrappers),
        include_dirs=[str(INCLUDE), str(KERNELS)],
        extra_objects=[str(objects / (s.stem + ".o")) for s in sources],
        extra_compile_args=extra,
        extra_link_args=extra,
    )
    so = ffi.compile(tmpdir=str(tmp))
    spec = importlib.util.spec_from_file_location(name, so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ffi, module.lib


class CParams:
    """A C param struct filled from a Params dataclass (arrays kept alive alongside)."""

    def __init__(self, ffi: cffi.FFI, params: Any):
        self.struct = ffi.new(f"{_c_name(type(params))} *")
        self._keep = []
        for f in c_fields(params):
            value = getattr(params, f.name)
            if isinstance(value, (tuple, np.ndarray)):
                arr = ffi.new("int32_t[]", [int(v) for v in np.asarray(value).reshape(-1)] or [0])
                self._keep.append(arr)
                setattr(self.struct, f.name, arr)
            elif isinstance(value, float):
                setattr(self.struct, f.name, value)
            else:
                setattr(self.struct, f.name, int(value))


def ptr(ffi: cffi.FFI, array: np.ndarray | None, ctype: str | None = None):
    """A C pointer to a contiguous numpy array (NULL for None)."""
    if array is None:
        return ffi.NULL
    if not array.flags.c_contiguous:
        raise ValueError("array must be C-contiguous")
    ctype = ctype or {"float32": "float"}.get(array.dtype.name, f"{array.dtype.name}_t")
    return ffi.from_buffer(f"{ctype}[]", array, require_writable=False)
