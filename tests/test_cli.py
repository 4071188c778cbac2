"""The `mcuq` command end to end: inspect, sim, pack, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_MODELS as SHARED
from conftest import TflmOracle, model_path, random_inputs
from mcuq.ir import Graph, Node, Op, Quant, Tensor
from mcuq.reader import read_model
from mcuq.writer import write_model

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared models not found at {SHARED}")


def mcuq(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MCUQ_DEBUG"}
    return subprocess.run([sys.executable, "-m", "mcuq", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def fc_model(depth: int, units: int, dtype: str = "int8") -> Graph:
    """One int8 FULLY_CONNECTED layer of the given size (weights all ones)."""
    q = Quant((0.05,), (0,))
    tensors = (
        Tensor(0, "x", (1, depth), dtype, q),
        Tensor(1, "w", (units, depth), "int8", Quant((0.01,), (0,)), np.ones((units, depth), np.int8)),
        Tensor(2, "y", (1, units), dtype, Quant((0.1,), (3,))),
    )
    return Graph(tensors, (Node(0, Op.FULLY_CONNECTED, (0, 1, -1), (2,),
                                {"activation": "NONE", "keep_num_dims": False, "weights_format": "DEFAULT"}),),
                 (0,), (2,), "fc")


@pytest.fixture
def fc_file(tmp_path) -> Path:
    path = tmp_path / "fc.tflite"
    path.write_bytes(write_model(fc_model(64, 16)))
    return path


def test_inspect_json_reports_macs_arena_and_boards(fc_file):
    r = mcuq("inspect", fc_file, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["macs"] == 64 * 16
    assert d["kind"] == "full-integer"
    assert d["arena_bytes"] >= 64 + 16
    assert "qemu-m7" in d["fits"]


@needs_shared
def test_inspect_names_unsupported_ops_and_hybrid_kind():
    lstm = json.loads(mcuq("inspect", SHARED / "tflite-micro/trained_lstm_int8.tflite", "--json").stdout)
    assert lstm["unsupported_ops"] == ["UNIDIRECTIONAL_SEQUENCE_LSTM"]
    hybrid = json.loads(mcuq("inspect", SHARED / "mlperf-tiny/model_ToyCar_quant.tflite", "--json").stdout)
    assert hybrid["kind"] == "dynamic-range hybrid"
    kws = mcuq("inspect", SHARED / "mlperf-tiny/kws_ref_model.tflite")
    assert kws.returncode == 0 and "2,656,768" in kws.stdout


@pytest.mark.parametrize("name", ["mlperf-tiny/kws_ref_model.tflite", "tflite-micro/simple_add_model.tflite",
                                  "mlperf-tiny/model_ToyCar_quant_fullint.tflite"])
def test_sim_command_equals_tflite_micro_on_every_tensor(name, tmp_path):
    path = model_path(name)
    graph = read_model(path)
    samples = [random_inputs(graph, seed) for seed in range(20)]
    np.savez(tmp_path / "in.npz", **{f"in{k}": np.stack([s[k] for s in samples])
                                     for k in range(len(graph.inputs))})
    r = mcuq("sim", path, "--inputs", tmp_path / "in.npz", "--out", tmp_path / "out.npz", "--all-tensors")
    assert r.returncode == 0, r.stderr
    out = np.load(tmp_path / "out.npz")
    oracle = TflmOracle(path, graph)
    for s, xs in enumerate(samples):
        want = oracle.run(xs)
        for k, t in enumerate(graph.outputs):
            assert np.array_equal(out[f"out{k}"][s], want[t])
        for t in graph.activation_tensors():
            assert np.array_equal(out[f"t{t.index}"][s], want[t.index]), (s, t.name)


def test_sim_writes_outputs_equal_to_the_python_simulator(fc_file, tmp_path):
    from mcuq.simulate import run_integer

    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (3, 1, 64), dtype=np.int8)
    np.savez(tmp_path / "in.npz", in0=x)
    r = mcuq("sim", fc_file, "--inputs", tmp_path / "in.npz", "--out", tmp_path / "out.npz", "--all-tensors")
    assert r.returncode == 0, r.stderr
    out = np.load(tmp_path / "out.npz")
    g = read_model(fc_file)
    for s in range(3):
        assert np.array_equal(out["out0"][s], run_integer(g, [x[s]])[0])
    assert np.array_equal(out["t0"], x)


def test_pack_writes_manifest_sources_and_sim_runs_the_directory(fc_file, tmp_path):
    out = tmp_path / "pack"
    r = mcuq("pack", fc_file, "--board", "qemu-m7", "-o", out)
    assert r.returncode == 0, r.stderr
    man = json.loads((out / "manifest.json").read_text())
    assert man["board"] == "qemu-m7" and man["scheme"] == "tflite" and len(man["model_sha256"]) == 64
    assert (out / "src" / "mcuq_model.c").exists() and (out / "src" / "mcuq_model.h").exists()
    x = np.arange(-32, 32, dtype=np.int8).reshape(1, 64)
    np.savez(tmp_path / "in.npz", in0=x)
    a = mcuq("sim", out, "--inputs", tmp_path / "in.npz", "--out", tmp_path / "a.npz")
    b = mcuq("sim", fc_file, "--inputs", tmp_path / "in.npz", "--out", tmp_path / "b.npz")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert np.array_equal(np.load(tmp_path / "a.npz")["out0"], np.load(tmp_path / "b.npz")["out0"])


def test_a_closed_stdout_stops_quietly(fc_file):
    """`mcuq inspect M | head -0`: the reader is gone before mcuq writes; it exits 141 (SIGPIPE's
    code, as shell tools do) with nothing on stderr, no 'internal error'."""
    env = {k: v for k, v in os.environ.items() if k != "MCUQ_DEBUG"}
    proc = subprocess.Popen([sys.executable, "-m", "mcuq", "inspect", str(fc_file)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # before the interpreter has even started: mcuq's first write finds no reader
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141 and err == b"", (proc.returncode, err)


def test_not_a_tflite(tmp_path):
    bad = tmp_path / "notes.tflite"
    bad.write_text("hello, this is not a model")
    out = tmp_path / "o"
    assert_one_line_error(mcuq("pack", bad, "-o", out), str(bad), "not a .tflite")
    assert not out.exists()


def test_truncated_file(fc_file, tmp_path):
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(fc_file.read_bytes()[: len(fc_file.read_bytes()) // 2])
    for cmd in (("inspect", cut), ("pack", cut, "-o", tmp_path / "o")):
        assert_one_line_error(mcuq(*cmd), str(cut))
    assert not (tmp_path / "o").exists()


def test_missing_file(tmp_path):
    assert_one_line_error(mcuq("inspect", tmp_path / "nope.tflite"), "nope.tflite")


def test_unknown_board(fc_file, tmp_path):
    assert_one_line_error(mcuq("pack", fc_file, "--board", "esp32", "-o", tmp_path / "o"), "esp32", "qemu-m7")
    assert not (tmp_path / "o").exists()


def test_model_too_big_for_the_board_says_by_how_much(tmp_path):
    big = tmp_path / "big.tflite"
    big.write_bytes(write_model(fc_model(1024, 1100)))  # 1.1 MB of int8 weights
    r = mcuq("pack", big, "--board", "stm32f746-disco", "-o", tmp_path / "o")
    assert_one_line_error(r, "flash", "stm32f746-disco", "over by")
    assert not (tmp_path / "o").exists()
    assert mcuq("pack", big, "--board", "stm32f7", "-o", tmp_path / "o").returncode == 0


@needs_shared
def test_hybrid_model_is_refused():
    assert_one_line_error(mcuq("pack", SHARED / "mlperf-tiny/model_ToyCar_quant.tflite", "-o", "/tmp/never"),
                          "hybrid")
    assert not Path("/tmp/never").exists()


@needs_shared
def test_unsupported_op_is_named(tmp_path):
    r = mcuq("pack", SHARED / "tflite-micro/keyword_scrambled.tflite", "-o", tmp_path / "o")
    assert_one_line_error(r, "SVDF", "keyword_scrambled.tflite")


def test_inputs_of_the_wrong_shape(fc_file, tmp_path):
    np.savez(tmp_path / "in.npz", in0=np.zeros((1, 63), np.int8))
    r = mcuq("sim", fc_file, "--inputs", tmp_path / "in.npz", "--out", tmp_path / "out.npz")
    assert_one_line_error(r, "in0", "[1, 63]", "x")
    assert not (tmp_path / "out.npz").exists()


def test_calibration_of_the_wrong_shape(tmp_path):
    tensors = (Tensor(0, "x", (1, 4), "float32"),
               Tensor(1, "w", (2, 4), "float32", data=np.ones((2, 4), np.float32)),
               Tensor(2, "y", (1, 2), "float32"))
    g = Graph(tensors, (Node(0, Op.FULLY_CONNECTED, (0, 1, -1), (2,),
                             {"activation": "NONE", "keep_num_dims": False, "weights_format": "DEFAULT"}),),
              (0,), (2,))
    model = tmp_path / "f.tflite"
    model.write_bytes(write_model(g))
    np.savez(tmp_path / "calib.npz", in0=np.zeros((8, 1, 5), np.float32))
    r = mcuq("pack", model, "--calib", tmp_path / "calib.npz", "-o", tmp_path / "o")
    assert_one_line_error(r, "calib.npz", "in0")
    assert not (tmp_path / "o").exists()


def test_existing_foreign_directory_is_not_overwritten(fc_file, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "mine.txt").write_text("keep me")
    assert_one_line_error(mcuq("pack", fc_file, "-o", tmp_path / "o"), "not an mcuq pack output")
    assert (tmp_path / "o" / "mine.txt").read_text() == "keep me"


@pytest.fixture
def float_classifier(tmp_path) -> tuple[Path, Path, Path]:
    """A float FC+SOFTMAX classifier with calibration and labelled evaluation sets."""
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.5, (5, 16)).astype(np.float32)
    tensors = (Tensor(0, "x", (1, 16), "float32"),
               Tensor(1, "w", (5, 16), "float32", data=w),
               Tensor(2, "b", (5,), "float32", data=np.zeros(5, np.float32)),
               Tensor(3, "logits", (1, 5), "float32"),
               Tensor(4, "probs", (1, 5), "float32"))
    g = Graph(tensors, (Node(0, Op.FULLY_CONNECTED, (0, 1, 2), (3,),
                             {"activation": "NONE", "keep_num_dims": False, "weights_format": "DEFAULT"}),
                        Node(1, Op.SOFTMAX, (3,), (4,), {"beta": 1.0})), (0,), (4,), "clf")
    model = tmp_path / "clf.tflite"
    model.write_bytes(write_model(g))
    x = rng.normal(0, 1, (64, 1, 16)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", in0=x[:32])
    np.savez(tmp_path / "eval.npz", in0=x[32:], labels=(x[32:, 0] @ w.T).argmax(1))
    return model, tmp_path / "calib.npz", tmp_path / "eval.npz"


def test_pack_pow2_with_eval_reports_accuracy_and_plots(float_classifier, tmp_path):
    model, calib, ev = float_classifier
    out = tmp_path / "p"
    r = mcuq("pack", model, "--scheme", "pow2", "--calib", calib, "--eval", ev, "-o", out)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())["quantization"]
    assert report["scheme"] == "pow2" and report["accuracy"]["samples"] == 32
    assert report["accuracy"]["float_pct"] == 100.0
    assert (out / "sqnr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "accuracy on 32 labelled samples" in r.stdout


def test_eval_without_labels_is_one_line(float_classifier, tmp_path):
    model, calib, _ = float_classifier
    np.savez(tmp_path / "nolabels.npz", in0=np.zeros((4, 1, 16), np.float32))
    r = mcuq("pack", model, "--calib", calib, "--eval", tmp_path / "nolabels.npz", "-o", tmp_path / "o")
    assert_one_line_error(r, "labels")
    assert not (tmp_path / "o").exists()


def test_pow2_scheme_needs_a_float_model(fc_file, tmp_path):
    assert_one_line_error(mcuq("pack", fc_file, "--scheme", "pow2", "-o", tmp_path / "o"), "float model")
