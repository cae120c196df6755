"""evaluate: confusion, per-class scores, loss, champion choice, one arithmetic for val and test."""

import numpy as np
import pytest

from pipeline.stages import evaluate


def test_confusion_and_per_class_scores():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    cm = evaluate.confusion(y, pred, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    scores = evaluate.per_class_scores(cm)
    assert scores["0"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert scores["1"]["precision"] == pytest.approx(0.6667, abs=1e-4)
    assert scores["1"]["recall"] == 1.0
    assert scores["2"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(0.6667, abs=1e-4)}


def test_class_never_predicted_scores_zero_not_nan():
    cm = evaluate.confusion(np.array([0, 1]), np.array([0, 0]), 2)
    assert evaluate.per_class_scores(cm)["1"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_cross_entropy_matches_keras():
    import keras

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10)).astype("float32") * 5
    y = rng.integers(0, 10, 50)
    expected = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits))
    assert evaluate.cross_entropy(logits, y) == pytest.approx(expected, rel=1e-5)


def test_champion_is_chosen_on_validation_accuracy_only():
    assert evaluate.choose_champion({"rnn": 0.98, "lstm": 0.992, "gru": 0.991}) == "lstm"
    # a tie goes to the model listed first in params.yaml
    assert evaluate.choose_champion({"gru": 0.99, "lstm": 0.99}) == "gru"


def test_champion_val_and_test_accuracy_come_from_one_model_in_one_arithmetic(tiny_repro):
    """Both accuracies are recomputed from the saved (stock-layer, fp32) checkpoint,
    the model that is exported and served; the champion is picked on those."""
    import json

    from pipeline.data import arrays
    from pipeline.rnn import model as model_lib

    metrics = json.loads((tiny_repro / "metrics" / "evaluate.json").read_text())
    assert metrics["arithmetic"] == evaluate.ARITHMETIC
    x_val, y_val = arrays.load(tiny_repro / "data" / "split", "val")
    x_test, y_test = arrays.load(tiny_repro / "data" / "split", "test")
    for name, m in metrics["models"].items():
        net = model_lib.load(tiny_repro / "models" / "checkpoints" / f"{name}.keras")
        assert not any("Fused" in type(layer).__name__ for layer in net._flatten_layers())
        for x, y, key in ((x_val, y_val, "val_accuracy"), (x_test, y_test, "test_accuracy")):
            pred = np.asarray(net.predict(x.astype("float32"), verbose=0)).argmax(axis=1)
            assert m[key] == pytest.approx(float((pred == y).mean()), abs=1e-6), (name, key)
        assert "val_accuracy_training" in m and m["training_arithmetic"].startswith("recurrent layers on")
    assert metrics["champion"] == evaluate.choose_champion(
        {n: m["val_accuracy"] for n, m in metrics["models"].items()})
    assert f"the same arithmetic: {evaluate.ARITHMETIC}" in (tiny_repro / "reports" / "report.md").read_text()
