"""bench/op_vs_keras.py: the paired comparison, the table, and a clear stop without data."""

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


def _result():
    comparison = bench.compare([1, 2, 3, 4], [1, 2, 0, 0], [1, 2, 3, 0])
    return {"command": "python bench/op_vs_keras.py --steps 10", "date": "2030-01-01 00:00 UTC",
            "machine": {"cpu_model": "Some Xeon", "cpu_count": 2, "isa_flags": "avx2 avx512_bf16",
                        "kernels": "oneDNN (default for this CPU)", "tensorflow": "2.x"},
            "cxx": "g++", "note": "A note.", "steps": 10, "train_samples": 1000,
            "batch_size": 100, "seed": 42, "val_images": 4,
            "models": {"lstm": {"native": {"arithmetic": "native, bf16 products, 2 part(s)",
                                           "train_s": 3.2},
                                "keras": {"arithmetic": "keras, fp32 products, 2 part(s)",
                                          "train_s": 9.7},
                                "comparison": comparison}}}


def test_the_report_names_the_machine_the_command_and_one_row_per_model(tmp_path):
    bench.write(_result(), tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert "Some Xeon" in text and "avx2 avx512_bf16" in text and "TensorFlow 2.x" in text
    assert "`python bench/op_vs_keras.py --steps 10`" in text and "2030-01-01" in text
    assert "A note." in text and "10 steps of batch 100" in text
    row = next(line for line in text.splitlines() if line.startswith("| lstm |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["lstm", "native, bf16 products, 2 part(s)", "75.00%", "50.00%", "+1",
                     "1", "0", "1.00", "within noise", "3", "10"]
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["models"]["lstm"]["comparison"]["fixed"] == 1


def test_without_the_split_it_says_so_in_one_line_and_exits_1(tmp_path, capsys):
    assert bench.main(["--split-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.npz" in err and "dvc repro split" in err
