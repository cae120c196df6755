"""evaluate's arithmetic: confusion, per-class scores, loss, champion choice."""

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
