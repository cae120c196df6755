"""report: intervals on every test accuracy; references only from the run's own dataset."""

import pytest

from conftest import ROOT, TINY_PARAMS
from pipeline import config
from pipeline.evaluation import report


def _metrics(acc=0.9885, n=10_000):
    per_class = {str(c): {"precision": 1.0, "recall": 1.0, "f1": 1.0} for c in range(10)}
    from pipeline.evaluation import stats
    lo, hi = stats.clopper_pearson(round(acc * n), n)
    model = {"val_accuracy": 0.9898, "test_accuracy": acc, "test_images": n,
             "test_accuracy_ci_low": lo, "test_accuracy_ci_high": hi, "params": 56110,
             "train_wall_time_s": 217.0, "best_epoch": 16.0, "throughput_img_s": 21449.0,
             "per_class": per_class}
    return {"champion": "rnn", "models": {"rnn": model}}


def _row(text, name="rnn"):
    return next(line for line in text.splitlines() if line.startswith(f"| {name} |"))


def test_every_test_accuracy_has_its_exact_interval():
    text = report.render(_metrics(), {})
    assert "| 98.85% | 98.62–99.05% |" in _row(text)  # Clopper-Pearson of 9,885 / 10,000
    assert "Clopper-Pearson" in text


def test_mnist_references_come_with_a_delta_and_a_verdict():
    refs = config.load(ROOT / "params.yaml").datasets["mnist"].references
    text = report.render(_metrics(), refs)
    row = _row(text)
    assert "| 98.41% | +0.44 pp | above (p < 0.001) |" in row
    assert "binomial test" in text
    within = _row(report.render(_metrics(acc=0.9845), refs))
    assert "within noise (p = 0.79)" in within   # 4 images above the tutorial's 98.41%
    below = _row(report.render(_metrics(acc=0.9800), refs))
    assert "below (p = 0.0018)" in below


@pytest.mark.parametrize("dataset", ["fashion_mnist", "tiny"])
def test_a_dataset_without_references_never_borrows_mnists(dataset):
    """Fashion-MNIST (and the MNIST subset of the tests) are not MNIST's tutorial."""
    params = config.load(ROOT / "params.yaml" if dataset != "tiny" else TINY_PARAMS)
    assert params.datasets[dataset].references == {}
    text = report.render(_metrics(acc=0.8603), params.datasets[dataset].references)
    assert "98.41%" not in text and "Δ test" not in text and "reference" not in _row(text)
    assert "| model | val acc | test acc | 95% CI (test) | train time |" in text
    assert "no published references" in text


def test_references_are_a_dataset_key_and_checked_like_the_rest():
    raw = {"test_accuracy": 0.9, "val_accuracy": 0.91}
    from pydantic import TypeAdapter
    data = TypeAdapter(config.Params).dump_python(config.load_project(ROOT), mode="json")
    data["datasets"]["fashion_mnist"]["references"] = {"gru": raw}
    assert config.parse(data).datasets["fashion_mnist"].references["gru"].wall_time_s is None
    data["datasets"]["fashion_mnist"]["references"] = {"gru": {"test_acc": 0.9}}
    with pytest.raises(config.ConfigError, match="references.gru"):
        config.parse(data)
    data["datasets"]["fashion_mnist"].pop("references")
    data["evaluate"]["reference"] = {"gru": raw}  # the old place is gone
    with pytest.raises(config.ConfigError, match="evaluate.reference: unknown key"):
        config.parse(data)


def test_predictions_csv_round_trips():
    import numpy as np
    path_text = None
    y = np.array([3, 1, 4])
    preds = {"rnn": np.array([3, 1, 1]), "gru": np.array([3, 7, 4])}
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.csv"
        report.write_predictions_csv(path, y, preds)
        path_text = path.read_text()
    assert path_text.splitlines()[:2] == ["image,actual,rnn,gru", "0,3,3,3"]
    labels, read = report.read_predictions_csv(path_text)
    assert labels == [3, 1, 4] and read == {"rnn": [3, 1, 1], "gru": [3, 7, 4]}
