"""bench/: honest FLOP counts, tables that say what they measured, and each
script measuring the checkout it was asked to."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, bench_module, sh
from pipeline import config


_bench = bench_module


checkout, _, timing = _bench("checkout"), _bench("speed_table"), _bench("timing")  # siblings
_bench("lockstep"), _bench("keras_paths")  # its other siblings, in import order
bench = _bench("train_speed")


@pytest.mark.parametrize("name, mflop", [("rnn", 8.73), ("lstm", 34.86), ("gru", 26.15),
                                         ("bilstm", 42.83)])
def test_training_flops_per_image_are_three_forward_passes(name, mflop):
    # forward multiply-adds x 2 x 3 (forward, and two products per product backward),
    # less the data's gradient (the first layers' input kernels once)
    assert bench.train_flops(config.load().models[name]) / 1e6 == pytest.approx(mflop, abs=0.005)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "bilstm"])
def test_training_flops_count_every_weight_of_the_built_model(name):
    """Independent of the formula: every weight matrix of the stock Keras model is one
    multiply-add per image and use (28 steps for a recurrent layer's, once for the
    classifier's), x 2 FLOPs, x 3 for the backward pass; less once the first layers'
    input kernels (28 rows: the pixels of a row), as nothing needs the data's gradient."""
    from pipeline.rnn import model

    net = model.build(config.load().models[name], kernel="keras")
    kernels = [w for w in net.weights if len(w.shape) == 2 and not w.path.endswith("bias")]
    uses = sum(w.numpy().size * (1 if w.path.startswith("logits") or "dense" in w.path else 28)
               for w in kernels)
    data = sum(w.numpy().size * 28 for w in kernels if w.shape[0] == 28)
    assert data and bench.train_flops(config.load().models[name]) == pytest.approx(
        2 * (3 * uses - data))


def test_the_clock_times_the_same_steps_at_any_steps_per_call():
    """Both points fall at the end of a call; a window a call cannot end on is refused."""
    import keras
    import numpy as np

    x, y = np.zeros((60, 3), "float32"), np.zeros(60, "int64")
    for per_call in (1, 5):
        net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        net.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    steps_per_execution=per_call)
        clock = timing.Clock(5, 10)
        net.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[clock.callback])
        assert sorted(clock.marks) == [5, 15] and clock.seconds() > 0
    clock = timing.Clock(3, 10)
    net.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[clock.callback])
    with pytest.raises(SystemExit, match="multiples of the steps per call"):
        clock.seconds()


def test_a_bf16_project_is_set_against_the_bf16_peak(tmp_path):
    """% of peak is of the precision the project's products use, named in the header."""
    rate = lambda r: {"images_per_s": r, "all": [r], "rounds": [r]}  # noqa: E731
    result = {"machine": {"cpu_model": "Some CPU", "cpu_count": 2, "isa_flags": "avx512_bf16",
                          "tensorflow": "2.x", "python": "3.11"},
              "kernel": "auto", "steps": 10, "warmup": 2, "batch": 100, "repeats": 1,
              "project_precision": "bf16", "timing": "lockstep", "block": 110,
              "peak_gflops": {"tensorflow": 100.0, "numpy": 90.0, "bf16": 300.0},
              "models": {"lstm": {"train_mflop_per_image": 40.0, "reference": rate(500.0),
                                  "project": rate(2000.0), "peak_rounds": [
                                      {"tensorflow": 100.0, "numpy": 90.0, "bf16": 400.0}]}}}
    bench.write(result, tmp_path / "out")
    text = (tmp_path / "out.md").read_text()
    assert "% of TF bf16 peak" in text and "bf16 matmul peak (TensorFlow) 300 GFLOP/s" in text
    row = next(line for line in text.splitlines() if line.startswith("| lstm | 40.0"))
    assert "| 20% |" in row  # 80 GFLOP/s of the round's 400, not 80% of the fp32 peak


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


def test_each_rounds_share_and_ratio_are_against_its_own_blocks(tmp_path):
    """The VM's speed drifts: a round's throughput is set against the peak measured
    among the same blocks (lock-step), and its ratio against the baseline's blocks of
    the same round; the table gives the medians of the rounds and their range."""
    rounds = [2000.0, 1000.0, 1500.0]  # images/s, in round order
    rate = lambda rs, **k: {"images_per_s": sorted(rs)[1], "all": sorted(rs), "rounds": rs,  # noqa: E731
                            **k}
    result = {"machine": {"cpu_model": "Some CPU", "cpu_count": 2, "isa_flags": "avx2",
                          "tensorflow": "2.x", "python": "3.11"},
              "kernel": "auto", "steps": 10, "warmup": 2, "batch": 100, "repeats": 3,
              "timing": "lockstep", "block": 110,
              "peak_gflops": {"tensorflow": 100.0, "numpy": 90.0}, "before": "abc1234",
              "models": {"lstm": {
                  "train_mflop_per_image": 40.0, "project": rate(rounds),
                  "reference": rate([1000.0, 400.0, 600.0], ratio_rounds=[2.0, 2.5, 2.5]),
                  "before": rate([400.0] * 3),
                  "peak_rounds": [{"tensorflow": 100.0, "numpy": 120.0},
                                  {"tensorflow": 50.0, "numpy": 40.0},
                                  {"tensorflow": 100.0, "numpy": 90.0}]}}}
    bench.write(result, tmp_path / "out")
    text = (tmp_path / "out.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| lstm | 40.0"))
    # 80, 40 and 60 GFLOP/s against the larger of each round's fp32 peaks, 120, 50
    # and 100 (NumPy's, TensorFlow's, TensorFlow's): 67%, 80%, 60%
    assert "| 67% (60-80%) |" in row and "larger of TF's and NumPy's" in text
    assert "| 2.50x (2.00-2.50x) |" in row  # the rounds' ratios, not 1500 / 600
    assert "lstm 100 / 120, 50 / 40, 100 / 90." in text
    assert "before = the project's path at abc1234" in text and "400 (400-400), 0.67x" in text


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


def test_the_kernel_path_table_counts_differing_predictions(tmp_path):
    """bench/kernel_path.py: both runs' accuracies, the tutorial's, and how many test
    images the two kernel paths predict differently; two machines are refused."""
    import shutil

    cpu = {"cpu_model": "Some CPU", "cpu_count": 2, "isa_flags": "avx2 avx512f",
           "tensorflow": "2.x"}

    def make(run, kernels, preds, test):
        (run / "metrics" / "runtime").mkdir(parents=True)
        shutil.copy(ROOT / "params.yaml", run / "params.yaml")
        (run / "metrics" / "runtime" / "train-lstm.json").write_text(
            json.dumps({"machine": {**cpu, "kernels": kernels}}))
        (run / "metrics" / "train" / "lstm").mkdir(parents=True)  # fit 125.4 s; 99.22% at 80 s
        (run / "metrics" / "train" / "lstm" / "metrics.json").write_text(json.dumps({
            "wall_time_s": 125.4, "seconds_per_epoch": 15.7, "seconds_to_reference_val": 80.0}))
        (run / "metrics" / "evaluate.json").write_text(json.dumps({"models": {"lstm": {
            "best_epoch": 7.0, "val_accuracy": 0.99, "test_accuracy": test}}}))
        (run / "reports").mkdir()
        (run / "reports" / "predictions.csv").write_text(
            "image,actual,lstm\n" + "".join(f"{i},1,{p}\n" for i, p in enumerate(preds)))
        return run

    base = make(tmp_path / "a", "oneDNN (default for this CPU)", [1, 1, 2, 1], 0.9895)
    other = make(tmp_path / "b", "Eigen (TF_ENABLE_ONEDNN_OPTS, ONEDNN_MAX_CPU_ISA=AVX2)",
                 [1, 3, 1, 1], 0.9902)
    kp = _bench("kernel_path")
    text = kp.table(base, other)
    assert "Eigen (TF_ENABLE_ONEDNN_OPTS, ONEDNN_MAX_CPU_ISA=AVX2)" in text
    assert "| lstm | 7 | 99.00% | 98.95% | 7 | 99.00% | 99.02% | 98.81% | 2 |" in text
    assert "| lstm | 99.22% | 2 min 05 s | 15.7 s | 1 min 20 s | 2 min 05 s |" in text
    elsewhere = json.loads((other / "metrics" / "runtime" / "train-lstm.json").read_text())
    elsewhere["machine"]["cpu_model"] = "Other CPU"
    (other / "metrics" / "runtime" / "train-lstm.json").write_text(json.dumps(elsewhere))
    with pytest.raises(SystemExit, match="different machines"):
        kp.table(base, other)


@pytest.mark.parametrize("seconds, text", [(299.6, "5 min 00 s"), (68.1, "1 min 08 s"),
                                           (59.4, "0 min 59 s"), (59.8, "1 min 00 s")])
def test_run_times_round_to_whole_seconds_without_a_sixtieth(seconds, text):
    assert _bench("checkout").mmss(seconds) == text


def test_the_op_comparison_says_which_is_faster_and_whether_numerics_moved(tmp_path):
    """bench/op_speed.py's table: the ratio per round and the bit-identity check."""
    op_speed = _bench("op_speed")
    result = {"machine": {"cpu_model": "Some CPU", "cpu_count": 2, "isa_flags": "avx2",
                          "tensorflow": "2.x"}, "against": "abc1234", "bf16": False,
              "command": "python bench/op_speed.py --against abc1234",
              "cells": {"lstm": {"us": {"before": [100.0, 110.0, 90.0], "now": [90.0, 88.0, 81.0]},
                                 "ratios": [0.9, 0.8, 0.9], "bit_identical": False},
                        "relu": {"us": {"before": [10.0] * 3, "now": [10.0] * 3},
                                 "ratios": [1.0] * 3, "bit_identical": True}}}
    op_speed.write(result, tmp_path / "op")
    text = (tmp_path / "op.md").read_text()
    assert "Some CPU" in text and "fp32" in text and "before (abc1234)" in text
    assert "| lstm | 100 | 88 | 0.900 (0.80-0.90) | no |" in text
    assert "| relu | 10 | 10 | 1.000 (1.00-1.00) | yes |" in text


def test_the_op_comparison_finds_an_older_commits_op_in_either_layout(tmp_path):
    """pipeline/rnn/native/ since the packages by job, pipeline/native/ before them;
    every source beside fused_rnn.cc comes along, its ops renamed."""
    op_speed = _bench("op_speed")
    repo = tmp_path / "repo"
    flat = repo / "pipeline" / "native"
    flat.mkdir(parents=True)
    (flat / "fused_rnn.cc").write_text('#include "product.h"\nREGISTER_OP("FusedRnnForward")\n')
    (flat / "product.h").write_text("// products\n")
    sh("git", "init", "-q", cwd=repo)
    sh("git", "add", ".", cwd=repo)
    sh("git", "commit", "-qm", "flat", cwd=repo)
    (repo / "pipeline" / "rnn").mkdir()
    sh("git", "mv", "pipeline/native", "pipeline/rnn/native", cwd=repo)
    (repo / "pipeline" / "rnn" / "native" / "cells.h").write_text("// cells\n")
    sh("git", "add", ".", cwd=repo)
    sh("git", "commit", "-qm", "packages", cwd=repo)
    old = op_speed.before_sources("HEAD~1", root=repo)
    assert sorted(old) == ["fused_rnn.cc", "product.h"]
    assert 'REGISTER_OP("FusedRnnForwardBefore")' in old["fused_rnn.cc"]
    assert sorted(op_speed.before_sources("HEAD", root=repo)) == ["cells.h", "fused_rnn.cc",
                                                                 "product.h"]
    sh("git", "rm", "-rq", "pipeline", cwd=repo)
    sh("git", "commit", "-qm", "no op", cwd=repo)
    with pytest.raises(SystemExit, match="no fused_rnn.cc"):
        op_speed.before_sources("HEAD", root=repo)


def test_a_child_measures_the_checkout_it_is_given(tmp_path):
    """--against DIR: the child imports DIR's pipeline, not the editable install's."""
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "__init__.py").write_text("")
    script = tmp_path / "where.py"
    script.write_text("import json, os, pipeline\n"
                      "print(json.dumps({'file': pipeline.__file__, 'cwd': os.getcwd()}))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         check=True, **bench.in_checkout(tmp_path)).stdout
    got = json.loads(out)
    assert got == {"file": str(tmp_path / "pipeline" / "__init__.py"), "cwd": str(tmp_path)}


def test_a_script_refuses_to_measure_another_checkouts_pipeline(tmp_path):
    checkout.own_pipeline(ROOT)  # the installed package is this checkout's
    with pytest.raises(SystemExit, match="PYTHONPATH="):
        checkout.own_pipeline(tmp_path)


def test_the_probes_are_one_script_with_a_subcommand_each():
    probe = _bench("probe")
    calls = probe.parser().parse_args(["steps-per-call", "bilstm", "--calls", "1", "25"])
    assert calls.run is probe.steps_per_call and calls.calls == [1, 25]
    assert probe.parser().parse_args(["fit-phases"]).model == "lstm"
    feed = probe.parser().parse_args(["input-pipeline", "--batches", "10"])
    assert feed.run is probe.input_pipeline and feed.batches == 10
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "probe.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "steps-per-call" in out and "fit-phases" in out


def test_bench_readme_lists_every_script_and_only_those():
    """bench/README.md: one row per script a user runs; the helpers named below it."""
    text = (ROOT / "bench" / "README.md").read_text()
    rows = {line.split("`")[1] for line in text.splitlines() if line.startswith("| `")}
    scripts = {p.name for p in (ROOT / "bench").iterdir() if p.suffix in (".py", ".sh")}
    helpers = {"speed_table.py", "torch_rnns.py", "checkout.py", "timing.py", "lockstep.py",
               "keras_paths.py"}
    assert rows == scripts - helpers
    assert all(f"`{h}`" in text for h in helpers)
    for line in text.splitlines():
        for word in line.split("`"):
            if word.startswith("reports/") and "{" not in word:
                assert (ROOT / word).exists(), f"bench/README.md names {word}, which is missing"
