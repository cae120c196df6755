"""bench/train_speed.py: honest FLOP counts and a table that says what it measured."""

import importlib.util
import json

import pytest

from conftest import ROOT
from pipeline import config

spec = importlib.util.spec_from_file_location("train_speed", ROOT / "bench" / "train_speed.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("name, mflop", [("rnn", 8.9), ("lstm", 35.5), ("gru", 26.6),
                                         ("bilstm", 44.1)])
def test_training_flops_per_image_are_three_forward_passes(name, mflop):
    # forward multiply-adds x 2 x 3 (forward, and two products per product backward)
    assert bench.train_flops(config.load().models[name]) / 1e6 == pytest.approx(mflop, abs=0.05)


def test_the_table_names_the_machine_the_ratio_and_the_spread(tmp_path):
    rate = lambda r: {"images_per_s": r, "all": [r * 0.9, r, r * 1.1]}  # noqa: E731
    result = {"machine": {"cpu_model": "Some CPU", "cpu_count": 2, "isa_flags": "avx2 fma",
                          "tensorflow": "2.x", "python": "3.11"},
              "kernel": "auto", "steps": 10, "warmup": 2, "batch": 100, "repeats": 3,
              "peak_gflops": {"tensorflow": 200.0, "numpy": 190.0},
              "models": {"lstm": {"train_mflop_per_image": 35.5, "reference": rate(1000.0),
                                  "project": rate(2000.0), "torch": rate(1600.0),
                                  "fused": rate(800.0)}}}
    bench.write(result, tmp_path / "out")
    text = (tmp_path / "out.md").read_text()
    assert "Some CPU" in text and "avx2 fma" in text and "TensorFlow 200 GFLOP/s" in text
    row = next(line for line in text.splitlines() if line.startswith("| lstm | 35.5"))
    assert "2.00x" in row and "71.0" in row and "36%" in row and "1.25x" in row
    assert "1,000 (900-1,100)" in row
    assert "800 (720-880), 0.80x" in text  # a variant that did not help is still reported
    assert json.loads((tmp_path / "out.json").read_text())["models"]["lstm"]["project"]


def _run(root, machine, minutes):
    runtime, evaluate = root / "metrics" / "runtime", {}
    runtime.mkdir(parents=True)
    for m in ("rnn", "lstm", "gru", "bilstm"):
        record = {"wall_time_s": 60.0 * minutes, **({"machine": machine} if machine else {})}
        (runtime / f"train-{m}.json").write_text(json.dumps(record))
        live = root / "metrics" / "train" / m
        live.mkdir(parents=True)
        (live / "metrics.json").write_text(json.dumps({"best_epoch": 7.0, "epochs_run": 8.0}))
        evaluate[m] = {"val_accuracy": 0.99, "test_accuracy": 0.9895}
    (root / "metrics" / "evaluate.json").write_text(json.dumps({"models": evaluate}))
    return root


def test_recipe_comparison_names_the_machine_and_refuses_two(tmp_path):
    """bench/compare_runs.py: times from two machines never share a table."""
    import subprocess
    import sys

    cpu = {"cpu_model": "Some CPU", "cpu_count": 2, "isa_flags": "avx2", "tensorflow": "2.x"}
    old = _run(tmp_path / "old", None, 4)  # a commit older than the machine records
    new = _run(tmp_path / "new", cpu, 2)
    script = [sys.executable, str(ROOT / "bench" / "compare_runs.py")]
    out = subprocess.run([*script, str(old), str(new)], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.startswith("Machine: Some CPU, 2 cores (avx2), TensorFlow 2.x.")
    assert "| **all four** | **16 min 00 s** | | | **8 min 00 s** | | | | **0.50** |" in out
    other = _run(tmp_path / "other", {**cpu, "cpu_model": "Other CPU"}, 2)
    proc = subprocess.run([*script, str(other), str(new)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode != 0 and "different machines" in proc.stderr
