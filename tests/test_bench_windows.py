"""bench/train_speed.py's windows: every path of a model times the same steps, each
model's window holds the same arithmetic, and two runs are compared only when they
are one command on one machine."""

import sys

import pytest

from conftest import ROOT, bench_module
from pipeline import config


_bench = bench_module


checkout, speed_table, timing = _bench("checkout"), _bench("speed_table"), _bench("timing")
_bench("lockstep"), _bench("keras_paths")  # its other siblings, in import order
bench = _bench("train_speed")


@pytest.mark.parametrize("name, steps", [("rnn", 3520), ("lstm", 880), ("gru", 1210),
                                         ("bilstm", 770)])
def test_each_models_window_holds_the_same_arithmetic_in_whole_calls(name, steps):
    """3,000 GFLOP of training per window, rounded up to the stage's 110 steps per call."""
    mflop = bench.train_flops(config.load().models[name]) / 1e6
    got = bench.steps_for(mflop, 3000)
    assert got == steps and got % 110 == 0
    assert got * 100 * mflop / 1e3 >= 3000 > (got - 110) * 100 * mflop / 1e3


def _run(**changes) -> dict:
    run = {"machine": {"cpu_model": "x", "cpu_count": 2, "isa_flags": "avx2"},
           "command": "python bench/train_speed.py --out reports/a", "steps": {"gru": 1210},
           "gflop": 3000, "warmup": 110, "repeats": 3, "peak_gflops": {"tensorflow": 100.0},
           "models": {"gru": {"train_mflop_per_image": 26.6,
                              "reference": {"images_per_s": 1000.0},
                              "project": {"images_per_s": 3000.0}}}}
    return {**run, **changes}


@pytest.mark.parametrize("changes, what", [
    ({"command": "python bench/train_speed.py --no-torch --out reports/b"}, "command"),
    ({"steps": {"gru": 660}}, "timed steps"),
    ({"command": "ONEDNN_MAX_CPU_ISA=AVX2 python bench/train_speed.py --out reports/a"},
     "command"),  # the AVX2 path emulated is another measurement
    ({"warmup": 220}, "warm-up"),
    ({"repeats": 5}, "rounds"),
    ({"machine": {"cpu_model": "y", "cpu_count": 2, "isa_flags": "avx2"}}, "machine")])
def test_two_runs_of_different_measurements_are_not_compared(tmp_path, changes, what):
    with pytest.raises(SystemExit, match=f"differ in {what}"):
        speed_table.agreement(_run(), _run(**changes), tmp_path / "a")


def test_two_runs_of_one_command_are_compared_whatever_their_out(tmp_path):
    assert speed_table.agreement(
        _run(), _run(command="python bench/train_speed.py --out /tmp/second"), tmp_path / "a")
    text = (tmp_path / "a.md").read_text()
    assert "3,000 GFLOP" in text and "every result within 3%" in text


def test_the_table_gives_each_models_timed_steps(tmp_path):
    rate = lambda r: {"images_per_s": r, "all": [r], "rounds": [r]}  # noqa: E731
    result = {**_run(), "kernel": "auto", "batch": 100, "repeats": 1,
              "machine": {"cpu_model": "Some CPU", "cpu_count": 2, "isa_flags": "avx2",
                          "tensorflow": "2.x", "python": "3.11"},
              "peak_gflops": {"tensorflow": 100.0, "numpy": 90.0},
              "models": {"gru": {"train_mflop_per_image": 26.6, "reference": rate(1000.0),
                                 "project": rate(3000.0)}}}
    bench.write(result, tmp_path / "out")
    text = (tmp_path / "out.md").read_text()
    assert "| gru | 26.6 | 1,210 | 1,000 (1,000-1,000) | 3,000 (3,000-3,000) | 3.00x |" in text
    assert "3,000 GFLOP of training" in text


def test_a_runs_command_carries_the_caps_that_chose_its_path(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train_speed.py", "--out", "x"])
    for cap in checkout.CAPS:
        monkeypatch.delenv(cap, raising=False)
    assert checkout.command("train_speed.py") == "python bench/train_speed.py --out x"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("PIPELINE_NATIVE_MARCH", "x86-64-v3")
    assert checkout.command("train_speed.py") == (
        "ONEDNN_MAX_CPU_ISA=AVX2 PIPELINE_NATIVE_MARCH=x86-64-v3 python bench/train_speed.py --out x")


def test_a_run_on_another_cpus_path_says_so_and_how(tmp_path):
    """An emulated run's report names TensorFlow's kernels and says its ISA was capped."""
    rate = lambda r: {"images_per_s": r, "all": [r], "rounds": [r]}  # noqa: E731
    result = {**_run(command="ONEDNN_MAX_CPU_ISA=AVX2 python bench/train_speed.py"),
              "kernel": "auto", "batch": 100, "repeats": 1,
              "machine": {"cpu_model": "Some CPU", "cpu_count": 2, "isa_flags": "avx2 avx512f",
                          "tensorflow": "2.x", "python": "3.11", "kernels": "Eigen (...)"},
              "peak_gflops": {"tensorflow": 100.0, "numpy": 90.0},
              "models": {"gru": {"train_mflop_per_image": 26.6, "reference": rate(1000.0),
                                 "project": rate(3000.0)}}}
    bench.write(result, tmp_path / "out")
    text = (tmp_path / "out.md").read_text()
    assert "TensorFlow 2.x (Eigen (...))" in text and "emulated on this one" in text
    bench.write({**result, "command": "python bench/train_speed.py"}, tmp_path / "plain")
    assert "emulated" not in (tmp_path / "plain.md").read_text()


def test_pytorch_trains_on_the_images_the_keras_paths_train_on():
    text = (ROOT / "bench" / "train_speed.py").read_text()
    assert '"--data", str(SPLIT)' in text  # the torch child gets data/split's images
    torch_text = (ROOT / "bench" / "torch_rnns.py").read_text()
    assert 'z["x"]' in torch_text and "i %= batches" in torch_text


def test_two_runs_agree_only_when_every_result_is_within_the_limit(tmp_path):
    """Judged: what a run concludes (the ratios, the shares of the peak), each against
    paths timed in the same blocks. An hour when the machine is 10% slower (every
    path and the peak alike) agrees; a ratio 5% off does not."""
    def run(reference: float, project: float, torch: float, peak: float) -> dict:
        r = lambda x: {"images_per_s": x, "rounds": [x]}  # noqa: E731
        return {"machine": {"cpu_model": "x", "cpu_count": 2, "isa_flags": "avx2"},
                "command": "c", "steps": 660, "warmup": 110, "repeats": 1,
                "timing": "lockstep", "peak_gflops": {"tensorflow": 100.0},
                "models": {"gru": {"train_mflop_per_image": 20.0, "project": r(project),
                                   "reference": {**r(reference), "ratio_rounds": [project / reference]},
                                   "torch": {**r(torch), "ratio_rounds": [project / torch]},
                                   "peak_rounds": [{"tensorflow": peak, "numpy": peak}]}}}

    assert speed_table.agreement(run(1000, 3000, 1500, 100), run(900, 2700, 1350, 90),
                                 tmp_path / "a")
    text = (tmp_path / "a.md").read_text()
    assert "| gru | project / plain Keras | 3.00x | 3.00x | +0.0% |" in text
    assert ("| gru | % of fp32 peak (the larger of TF's and NumPy's) | 60.00% | 60.00% | +0.0% |"
            in text)
    assert "| gru | reference | 1,000 | 900 | -10.0% |" in text  # shown, not judged
    # each path moves 2.5%, the ratio 5%: the runs disagree on the ratio
    assert not speed_table.agreement(run(1000, 3000, 1500, 100), run(1025, 2925, 1500, 100),
                                     tmp_path / "b")
    assert "**above 3%**" in (tmp_path / "b.md").read_text()
