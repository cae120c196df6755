"""train: a stage run on the tiny fixture writes its checkpoint, curves and summary,
trains the same weights however it is split into calls (every model, at the full
data's steps per call), stops at its step budget and fails loudly on a diverging run.

Checkpoints across a kill and their stable bytes are in test_checkpoints.py;
the step arithmetic alone in test_protocol.py.
"""

import dataclasses
import json

import pytest

from conftest import ROOT, TINY_PARAMS, logged_steps, train_tiny
from pipeline.data import arrays
from pipeline import config
from pipeline.rnn import inputs
from pipeline.rnn import protocol
from pipeline.stages import train
from pipeline.runtime import StageError


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "bilstm"])
def test_the_production_steps_per_call_train_the_same_weights(split_dir, name):
    """Keras' steps_per_execution changes when Python runs, not the maths: with the
    full data's steps per call (params.yaml's checks of 55,000 images: 110), the
    weights after two such calls are bit-identical to one step per call. The tiny
    fixture's models and images (220 steps: 5-8 s per model here), the kernel
    train.kernel auto picks (the C++ op, bf16 products where the CPU has them, parts)."""
    import numpy as np

    params = config.load(TINY_PARAMS)
    production = protocol.plan(config.load_project(ROOT).train, 55_000)["steps_per_call"]
    assert production == protocol.STEPS_PER_CALL  # what the stage runs on full data
    steps = 2 * production  # two calls: the second starts from the first's state
    x, y = arrays.load(split_dir, "train")
    weights = []
    for per_call in (1, production):
        net = train.compiled(name, params, total_steps=steps, steps_per_call=per_call)
        assert net.steps_per_execution == per_call
        net.fit(inputs.training(x, y, params.train), epochs=1, steps_per_epoch=steps, verbose=0)
        assert int(net.optimizer.iterations) == steps
        weights.append(net.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*weights))


def test_training_writes_checkpoint_curves_and_summary(tmp_path, split_dir):
    params = config.load(TINY_PARAMS)
    summary = train_tiny(tmp_path, params, split_dir=split_dir)
    assert (tmp_path / "ckpt" / "gru.keras").exists()
    assert not (tmp_path / "work" / "gru").exists()  # scratch state cleaned up
    live = json.loads((tmp_path / "live" / "gru" / "metrics.json").read_text())
    for key in ("best_val_accuracy", "best_epoch", "wall_time_s", "params", "checks_run"):
        assert live[key] == summary[key]
    assert (tmp_path / "live" / "gru" / "plots" / "metrics" / "eval" / "accuracy.tsv").exists()
    assert summary["checks_run"] == protocol.plan(params.train, 500)["checks"]


@pytest.mark.parametrize("name, kernel", [("gru", "auto"), ("bilstm", "auto"),
                                          ("rnn", "keras"), ("lstm", "fused")])
def test_same_params_give_the_same_metrics(tmp_path, split_dir, name, kernel):
    """Two short runs, bit-identical metrics and checkpoints: the default (the C++
    op where it builds, with bf16 products where the CPU has them), stock Keras
    layers and the fused ones on TensorFlow ops alike."""
    params = config.load(TINY_PARAMS)
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, kernel=kernel))
    a = train_tiny(tmp_path / "a", params, name, split_dir=split_dir)
    b = train_tiny(tmp_path / "b", params, name, split_dir=split_dir)
    a_live = json.loads((tmp_path / "a" / "live" / name / "metrics.json").read_text())
    b_live = json.loads((tmp_path / "b" / "live" / name / "metrics.json").read_text())
    ckpt = [(tmp_path / d / "ckpt" / f"{name}.keras").read_bytes() for d in "ab"]
    assert ckpt[0] == ckpt[1]
    assert a["best_val_accuracy"] == b["best_val_accuracy"]
    assert a_live["train"] == b_live["train"] and a_live["eval"] == b_live["eval"]


def test_training_stops_at_the_exact_step_budget_with_a_last_check(tmp_path, split_dir):
    params = config.load(TINY_PARAMS)
    params = dataclasses.replace(params, train=dataclasses.replace(
        params.train, max_train_samples=120, epochs=3, validate_every_steps=4))
    summary = train_tiny(tmp_path, params, split_dir=split_dir)
    # 120 images / batch 50 = 3 steps per epoch; 3 epochs = 9 steps; checks at 4, 8, 9
    assert summary["steps_run"] == 9 and summary["checks_run"] == 3
    assert summary["epochs_run"] == 3.0 and 0 < summary["best_epoch"] <= 3.0
    assert summary["best_step"] in (4, 8, 9)
    assert logged_steps(tmp_path / "live" / "gru", "eval") == [0, 1, 2]


def test_unknown_model_name(tmp_path, split_dir):
    with pytest.raises(StageError, match="models.transformer: no such model"):
        train_tiny(tmp_path, config.load(TINY_PARAMS), name="transformer", split_dir=split_dir)


def test_a_diverging_run_stops_at_its_first_nan_call(tmp_path, split_dir, monkeypatch):
    """Keras' TerminateOnNaN ends the run after the call into TensorFlow whose steps
    reached the first NaN loss (here the third step's, from NaN pixels), not at the
    next check, and the stage fails without touching the checkpoint."""
    import keras
    import tensorflow as tf

    steps = {}
    real_fit, real_dataset = keras.Model.fit, inputs.training

    def fit(self, *args, **kwargs):
        history = real_fit(self, *args, **kwargs)
        steps["run"] = int(self.optimizer.iterations)
        return history

    def nan_from_third_batch(x, y, cfg):
        return real_dataset(x, y, cfg).enumerate().map(
            lambda i, xy: (tf.where(i >= 2, float("nan"), xy[0]), xy[1]))

    monkeypatch.setattr(keras.Model, "fit", fit)
    monkeypatch.setattr(inputs, "training", nan_from_third_batch)
    params = config.load(TINY_PARAMS)
    params = dataclasses.replace(params, train=dataclasses.replace(params.train,
                                                                   validate_every_steps=8))
    ckpt = tmp_path / "ckpt" / "rnn.keras"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"good")
    with pytest.raises(StageError, match="diverged"):
        train_tiny(tmp_path, params, name="rnn", split_dir=split_dir)
    assert ckpt.read_bytes() == b"good"
    n_train = len(arrays.load(split_dir, "train")[0])
    per_call = protocol.plan(params.train, min(n_train, params.train.max_train_samples or n_train))
    assert steps["run"] == per_call["steps_per_call"] == 4  # not 8, the end of the first check


def test_fit_reads_its_data_without_tf_datas_autotune_thread(tmp_path, split_dir, monkeypatch):
    """tf.data's autotune thread holds the end of every ``fit`` until its next wake-up
    (up to a minute); the training and validation data must not start one."""
    import keras

    seen = {}
    real_fit = keras.Model.fit

    def fit(self, x=None, *args, validation_data=None, **kwargs):
        seen["train"] = x.options().autotune.enabled
        seen["val"] = validation_data.options().autotune.enabled
        return real_fit(self, x, *args, validation_data=validation_data, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", fit)
    train_tiny(tmp_path, config.load(TINY_PARAMS), split_dir=split_dir)
    assert seen == {"train": False, "val": False}


def test_the_stage_trains_in_parts_and_writes_the_plain_model(tmp_path, split_dir):
    import zipfile

    from pipeline.rnn import model
    from pipeline.rnn import side_by_side

    params = config.load(TINY_PARAMS)
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, batch_parts=2))
    net = train.compiled("rnn", params, total_steps=10)
    assert isinstance(net, side_by_side.SideBySide) and net.n_parts == 2
    train.run("rnn", params, split_dir=split_dir, checkpoint=tmp_path / "rnn.keras",
              log_dir=tmp_path / "live", work_dir=tmp_path / "work")
    saved = json.loads(zipfile.ZipFile(tmp_path / "rnn.keras").read("config.json"))
    assert saved["class_name"] == "Functional"
    layers = {layer["class_name"] for layer in saved["config"]["layers"]}
    assert "SimpleRNN" in layers and "FusedRNN" not in layers  # trained fused, saved stock
    assert model.load(tmp_path / "rnn.keras").count_params() == net.count_params()
