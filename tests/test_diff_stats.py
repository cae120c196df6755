"""diff_stats: the paired test and the machine check behind `make diff`, on constructed runs."""

from pipeline.review import comparison
from pipeline.review import markdown
from pipeline.review import evidence
from pipeline.evaluation import stats

LABELS = [i % 10 for i in range(100)]


def _preds(wrong: set[int]) -> list[int]:
    """Right on every image except those in ``wrong``."""
    return [(y + 1) % 10 if i in wrong else y for i, y in enumerate(LABELS)]


def _comparison(old_acc, new_acc, paired, machines=(None, None)):
    pairs = {"models.rnn.test_accuracy": (old_acc, new_acc),
             "models.gru.test_accuracy": (0.9, 0.9), "champion": ("rnn", "rnn")}
    return comparison.Comparison(
        rev="main", rev_desc="`main`", new_desc="the workspace", params=[],
        pairs={"metrics/evaluate.json": pairs},
        stages={"reran": [], "removed": [], "unchanged": []}, stale={},
        order=["rnn", "gru"], paired=paired, machines=machines)


def test_a_few_images_either_way_is_within_noise():
    old = (LABELS, {"rnn": _preds({0, 1, 2, 3, 4, 50})})
    new = (LABELS, {"rnn": _preds({50, 60, 61})})           # 5 fixed, 2 broken
    tests = evidence.paired_tests(old, new, ["rnn"])
    assert evidence.words(tests["rnn"]) == "+3 images (5 fixed, 2 broken), p = 0.45: within noise"
    assert evidence.significant(tests) == []

    text = markdown.render(_comparison(0.94, 0.97, tests), "main")
    assert ("**Summary:** No model's results changed significantly; within noise: "
            "rnn (+3 images (5 fixed, 2 broken), p = 0.45); gru unchanged") in text
    assert "| rnn | 94.00% | 97.00% |" in text          # still in the table, not bold
    assert "- **rnn**: +3 images (5 fixed, 2 broken), p = 0.45: within noise" in text


def test_many_fixed_images_are_significant_and_headlined():
    old = (LABELS, {"rnn": _preds(set(range(12)))})
    new = (LABELS, {"rnn": _preds({99})})                  # 12 fixed, 1 broken
    tests = evidence.paired_tests(old, new, ["rnn"])
    assert tests["rnn"] == stats.Paired(12, 1, stats.mcnemar_exact(12, 1))
    assert evidence.words(tests["rnn"]).endswith(f"p = {stats.fmt_p(28 / 8192)}: significant")
    text = markdown.render(_comparison(0.88, 0.99, tests), "main")
    assert "**Summary:** Results changed for **rnn**; gru unchanged" in text
    assert "| **rnn** | 88.00% | 99.00% |" in text


def test_a_change_that_cannot_be_tested_is_not_called_noise():
    new = (LABELS, {"rnn": _preds(set())})
    tests = evidence.paired_tests(None, new, ["rnn"])
    assert tests["rnn"] == "no per-image predictions at the base revision"
    assert evidence.significant(tests) == ["rnn"]
    other = ([0] * 100, {"rnn": [0] * 100})
    assert evidence.paired_tests(other, new, ["rnn"])["rnn"] == \
        "the two runs tested different images"
    text = markdown.render(_comparison(0.9, 0.95, tests), "main")
    assert "Results changed for **rnn**" in text
    assert "no paired test: no per-image predictions at the base revision" in text


def test_predictions_come_from_predictions_csv_or_older_confusion_csvs():
    files = {"reports/predictions.csv": "image,actual,rnn,gru\n0,3,3,1\n1,5,5,5\n"}
    assert evidence.load_predictions(files.get, ["rnn", "gru"]) == (
        [3, 5], {"rnn": [3, 5], "gru": [1, 5]})
    older = {"reports/confusion/rnn.csv": "actual,predicted\n3,3\n5,4\n"}
    assert evidence.load_predictions(older.get, ["rnn", "gru"]) == ([3, 5], {"rnn": [3, 4]})
    assert evidence.load_predictions({}.get, ["rnn"]) is None


def test_different_kinds_of_machine_are_said_plainly():
    intel = {"cpu_model": "Intel Xeon", "arch": "x86_64", "isa_flags": "avx2 avx512f amx_tile",
             "tensorflow": "2.21.0", "cpu_count": 2}
    amd = {**intel, "cpu_model": "AMD EPYC", "isa_flags": "avx2"}
    assert evidence.machine_note(intel, {**intel, "cpu_count": 16}) is None
    note = evidence.machine_note(intel, amd)
    assert note.startswith("**Base and head ran on different kinds of machine** (Intel Xeon")
    assert "AMD EPYC, avx2" in note
    assert "records no machine" in evidence.machine_note(None, amd)
    text = markdown.render(_comparison(0.9, 0.9, {}, machines=(intel, amd)), "main")
    assert "**base and head ran on different kinds of machine**" in text.split("\n\n")[2]
    assert evidence.machine_note(None, None) is None


def test_a_rerun_with_identical_data_outputs_says_so():
    """Another machine reruns fetch; only its timing record differs, not its data."""
    def lock(runtime_md5, data_md5="d1"):
        return {"stages": {"fetch": {"cmd": "python -m pipeline.stages.fetch", "deps": [], "outs": [
            {"path": "data/raw", "md5": data_md5},
            {"path": "metrics/runtime/fetch.json", "md5": runtime_md5}]}}}
    same_data = comparison.stage_changes(lock("a"), lock("b"))["reran"][0]["why"]
    assert same_data == ["inputs unchanged; data outputs identical (only its timing record differs)"]
    other_data = comparison.stage_changes(lock("a"), lock("b", "d2"))["reran"][0]["why"]
    assert other_data[0].startswith("outputs only")


def test_the_record_names_the_kernels_tensorflow_runs():
    """oneDNN by default only where the CPU has VNNI/BF16/AMX (an AVX2-only CPU runs
    Eigen); an override makes another kind of machine, the default does not."""
    import os
    import subprocess
    import sys

    from pipeline import runtime

    assert runtime.kernels({"avx2"}, env={}).startswith("Eigen (default")
    assert runtime.kernels({"avx2", "avx512_vnni"}, env={}).startswith("oneDNN (default")
    emulated = runtime.kernels({"avx512_vnni"}, env={"TF_ENABLE_ONEDNN_OPTS": "0",
                                                     "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert emulated == "Eigen (TF_ENABLE_ONEDNN_OPTS, ONEDNN_MAX_CPU_ISA=AVX2)"
    here = runtime.machine()
    assert runtime.machine_kind(here) == runtime.machine_kind(
        {k: v for k, v in here.items() if k != "kernels"})  # records from before the field
    assert runtime.machine_kind({**here, "kernels": emulated}) != runtime.machine_kind(here)
    assert "Eigen (TF_ENABLE_ONEDNN_OPTS" in evidence.describe({**here, "kernels": emulated})
    avx2_op = runtime.kernels({"avx512_vnni"}, env={"PIPELINE_NATIVE_MARCH": "x86-64-v3"})
    assert avx2_op == "oneDNN (default for this CPU, PIPELINE_NATIVE_MARCH=x86-64-v3)"
    assert runtime.machine_kind({**here, "kernels": avx2_op}) != runtime.machine_kind(here)
    # What TensorFlow itself says on this machine agrees with the record.
    probe = ("from tensorflow.python.util import _pywrap_util_port as p; "
             "print(p.IsMklEnabled())")
    tf_says = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                             check=True).stdout.split()[-1]
    assert tf_says == str(here["kernels"].startswith("oneDNN"))
