"""bench/op_vs_keras.py: the paired comparison, each arithmetic against its own
process's Keras run, one table, and a clear stop without data."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("op_vs_keras", ROOT / "bench" / "op_vs_keras.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_the_comparison_counts_each_models_right_images_and_pairs_them():
    y = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    keras_pred = [0, 1, 2, 3, 4, 5, 6, 7, 0, 0]  # 8 right
    op_pred = [0, 1, 2, 3, 4, 5, 6, 0, 8, 9]     # 9 right: 2 fixed, 1 broken
    c = bench.compare(y, keras_pred, op_pred)
    assert (c["keras_correct"], c["native_correct"], c["images"]) == (8, 9, 10)
    assert (c["fixed"], c["broken"], c["difference_images"]) == (2, 1, 1)
    assert c["native_val_accuracy"] == pytest.approx(0.9)
    assert c["p_value"] == pytest.approx(1.0) and c["within_noise"]  # 2 vs 1: a coin
    lopsided = bench.compare([1] * 20, [0] * 20, [1] * 20)  # 20 fixed, none broken
    assert lopsided["p_value"] < 1e-5 and not lopsided["within_noise"]


def _children():
    """Two builds' processes' outputs, as bench.child writes them (4 images)."""
    def runs(keras, op, arith):
        return {"keras": {"how": "keras, fp32 products, 2 part(s)", "train_s": 9.7, "pred": keras},
                arith: {"how": f"native, {arith[:4]} products, 2 part(s)", "train_s": 3.2,
                        "pred": op}}
    native = {"lstm": runs([1, 2, 0, 0], [1, 2, 3, 0], "bf16")}
    native["lstm"]["fp32"] = {"how": "native, fp32 products, 2 part(s)", "train_s": 3.0,
                              "pred": [1, 2, 0, 0]}
    machine = {"cpu_model": "Some EPYC", "cpu_count": 2, "isa_flags": "avx2 avx512_bf16",
               "kernels": "oneDNN (default for this CPU)", "tensorflow": "2.x"}
    return {"native": {"machine": machine, "op_library": "fused_rnn-1.so", "models": native},
            "avx2": {"machine": {**machine, "kernels": "Eigen (PIPELINE_NATIVE_MARCH=x86-64-v3)"},
                     "op_library": "fused_rnn-2.so",
                     "models": {"lstm": runs([0, 0, 0, 0], [1, 2, 3, 4], "fp32-avx2")}}}


def test_each_arithmetic_is_paired_with_the_keras_run_of_its_own_process():
    y = [1, 2, 3, 4]
    got = bench.rows(y, _children(), ["bf16", "fp32", "fp32-avx2"], ["lstm"])
    assert [(r["arithmetic"], r["model"]) for r in got] == [
        ("bf16", "lstm"), ("fp32", "lstm"), ("fp32-avx2", "lstm")]
    bf16, fp32, avx2 = (r["comparison"] for r in got)
    assert (bf16["keras_correct"], bf16["native_correct"], bf16["fixed"]) == (2, 3, 1)
    assert (fp32["difference_images"], fp32["fixed"], fp32["broken"]) == (0, 0, 0)
    assert (avx2["keras_correct"], avx2["native_correct"]) == (0, 4)  # the AVX2 process's Keras
    assert got[2]["native"] == {"how": "native, fp32 products, 2 part(s)", "train_s": 3.2}


def _result():
    children = _children()
    return {"command": "python bench/op_vs_keras.py --steps 10", "date": "2030-01-01 00:00 UTC",
            "machine": children["native"]["machine"], "cxx": "g++", "note": "A note.",
            "builds": {b: {"kernels": c["machine"]["kernels"], "op_library": c["op_library"]}
                       for b, c in children.items()},
            "steps": 10, "train_samples": 1000, "batch_size": 100, "seed": 42, "val_images": 4,
            "rows": bench.rows([1, 2, 3, 4], children, ["bf16", "fp32", "fp32-avx2"], ["lstm"])}


def test_the_report_names_the_machine_the_builds_the_command_and_has_one_table(tmp_path):
    bench.write(_result(), tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert "Some EPYC" in text and "avx2 avx512_bf16" in text and "TensorFlow 2.x" in text
    assert "`python bench/op_vs_keras.py --steps 10`" in text and "2030-01-01" in text
    assert "A note." in text and "10 steps of batch 100" in text
    assert "**avx2**: TensorFlow kernels Eigen (PIPELINE_NATIVE_MARCH=x86-64-v3)" in text
    assert "`fused_rnn-2.so`" in text
    assert sum(line.startswith("|---|") for line in text.splitlines()) == 1  # one table
    row = next(line for line in text.splitlines() if line.startswith("| bf16 | lstm |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["bf16", "lstm", "native, bf16 products, 2 part(s)", "75.00%", "50.00%",
                     "+1", "1", "0", "1.00", "within noise", "3", "10"]
    assert "| fp32-avx2 | lstm |" in text
    # each build's Keras run, from the same weights: how far the kernels alone move it
    assert "in each build's process (native / avx2): lstm 50.00% / 0.00%." in text
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["rows"][0]["comparison"]["fixed"] == 1


def test_rnn_tanh_is_the_rnn_with_tanh():
    from pipeline import config

    params = config.load_project(ROOT)
    extra = bench.with_models(params, ["rnn", "rnn_tanh"]).models["rnn_tanh"]
    assert extra == dataclasses.replace(params.models["rnn"], activation="tanh")


def test_without_the_split_it_says_so_in_one_line_and_exits_1(tmp_path, capsys):
    assert bench.main(["--split-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.npz" in err and "dvc repro split" in err
