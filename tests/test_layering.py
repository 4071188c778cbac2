"""Data flows one way: each stage imports only mcuq.ir and stages before it (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mcuq"

# Stages in flow order; a module may import only from stages listed before its own.
ORDER = ["__init__", "errors", "interrupts", "ir", "fixedpoint", "reader", "writer", "graphfile", "summary", "boards",
         "simulate", "quant", "plan", "pack", "hostsim", "build", "flash", "link", "verify", "pipeline", "cli",
         "__main__"]


def stage_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def mcuq_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "mcuq" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] == "mcuq":  # from mcuq import __version__, pipeline
                found.update(a.name if a.name in ORDER else "__init__" for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "mcuq":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def test_every_module_has_a_stage():
    for path in PACKAGE.rglob("*.py"):
        assert stage_of(path) in ORDER, f"{path}: add its stage to ORDER"


def test_imports_point_upstream_only():
    for path in PACKAGE.rglob("*.py"):
        stage = stage_of(path)
        for imported in mcuq_imports(path) - {stage}:
            assert imported in ORDER, f"{path}: imports unknown mcuq.{imported}"
            assert ORDER.index(imported) < ORDER.index(stage), (
                f"{path.relative_to(PACKAGE.parent)} (stage {stage}) imports mcuq.{imported}, a later stage")
