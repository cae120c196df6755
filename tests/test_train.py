"""train: the protocol's arithmetic, determinism, and checkpoints that survive a kill."""

import dataclasses
import json
import math
import shutil

import pytest

from conftest import FIXTURE_DIR, TINY_PARAMS
from pipeline.data import arrays
from pipeline import config
from pipeline.rnn import inputs
from pipeline.rnn import protocol
from pipeline.stages import split
from pipeline.stages import train
from pipeline.runtime import StageError


def test_plan_turns_the_tutorial_protocol_into_checks():
    cfg = config.load().train  # real params: 55,000 images, batch 100
    p = protocol.plan(cfg, 55_000)
    assert p["steps_per_epoch"] == 550
    assert p["steps_per_check"] == 550 and p["checks"] == cfg.epochs
    # 2,000 steps without improvement = 4 checks of 550 steps (2,200 >= 2,000)
    assert p["patience"] == 4
    every_10 = protocol.plan(dataclasses.replace(cfg, validate_every_steps=10), 55_000)
    assert every_10["patience"] == 200 and every_10["checks"] == 55 * cfg.epochs
    assert p["steps_per_call"] == 110 and every_10["steps_per_call"] == 10


@pytest.mark.parametrize("samples, batch, epochs, every, total, checks, last, epoch_of_last", [
    # the case: 20,000 images, 4 epochs of 200 steps, a check every 550 steps
    (20_000, 100, 4, 550, 800, 2, 250, 4.0),
    (55_000, 100, 20, 550, 11_000, 20, 550, 20.0),   # the default: one check per epoch
    (55_000, 100, 2, 10, 1_100, 110, 10, 2.0),       # the tutorial's every-10-steps
    (120, 50, 3, 4, 9, 3, 1, 3.0),                   # 3 steps/epoch: checks at 4, 8 and 9
    (120, 50, 3, 100, 9, 1, 9, 3.0),                 # a check rarer than the whole run
    (101, 100, 1, 1, 2, 2, 1, 1.0),                  # a partial last batch is one more step
])
def test_plan_runs_exactly_the_steps_the_params_imply(samples, batch, epochs, every, total,
                                                      checks, last, epoch_of_last):
    cfg = dataclasses.replace(config.load().train, batch_size=batch, epochs=epochs,
                              validate_every_steps=every, max_train_samples=samples)
    p = protocol.plan(cfg, samples)
    assert p["total_steps"] == total == epochs * -(-samples // batch)
    assert (p["checks"], p["last_check_steps"]) == (checks, last)
    # whole calls into TensorFlow fill every check exactly
    assert every_check_is_whole_calls(p)
    assert (p["checks"] - 1) * p["steps_per_check"] + p["last_check_steps"] == total
    assert protocol.step_of_check(p["checks"], p) == total
    assert protocol.epoch_of_check(p["checks"], p) == epoch_of_last == epochs


def every_check_is_whole_calls(p: dict) -> bool:
    return p["steps_per_check"] % p["steps_per_call"] == 0 == p["last_check_steps"] % p["steps_per_call"]


@pytest.mark.parametrize("check, last, per_call", [
    (550, 550, 110),  # the default: an epoch in 5 calls
    (10, 10, 10),     # the tutorial's check every 10 steps
    (500, 250, 50), (4, 1, 1), (97, 97, 97), (550, 275, 55),
])
def test_a_call_runs_the_most_steps_that_fit_every_check(check, last, per_call):
    assert protocol.steps_per_call(math.gcd(check, last)) == per_call <= protocol.STEPS_PER_CALL


def test_several_steps_per_call_train_the_same_weights(split_dir):
    """Keras' steps_per_execution changes when Python runs, not the maths: the
    weights after 10 steps are bit-identical to one step per call."""
    import numpy as np

    params = config.load(TINY_PARAMS)
    x, y = arrays.load(split_dir, "train")
    weights = []
    for per_call in (1, 5):
        net = train.compiled("lstm", params, total_steps=10, steps_per_call=per_call)
        assert net.steps_per_execution == per_call
        net.fit(inputs.training(x, y, params.train), epochs=1, steps_per_epoch=10, verbose=0)
        assert int(net.optimizer.iterations) == 10
        weights.append(net.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*weights))


def test_best_epoch_is_a_real_epoch():
    cfg = dataclasses.replace(config.load().train, epochs=4, validate_every_steps=550)
    p = protocol.plan(cfg, 20_000)
    assert [protocol.epoch_of_check(c, p) for c in (1, 2)] == [2.75, 4.0]  # never 5.5


def test_cosine_schedule_decays_to_the_final_ratio():
    cfg = config.load().train
    lr = protocol.schedule(cfg, 1000)
    assert float(lr(0)) == pytest.approx(cfg.learning_rate)
    assert float(lr(1000)) == pytest.approx(cfg.learning_rate * cfg.lr_final_ratio)
    assert protocol.schedule(dataclasses.replace(cfg, lr_schedule="constant"), 1000) == cfg.learning_rate


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("split")
    (base / "validate.json").write_text(json.dumps({"success": True}))
    split.run(config.load(TINY_PARAMS), FIXTURE_DIR, base / "split", base / "validate.json")
    return base / "split"


def _run(tmp_path, params, name="gru", **kw):
    return train.run(name, params, split_dir=kw.pop("split_dir"),
                     checkpoint=tmp_path / "ckpt" / f"{name}.keras",
                     log_dir=tmp_path / "live" / name, work_dir=tmp_path / "work" / name)


def test_training_writes_checkpoint_curves_and_summary(tmp_path, split_dir):
    params = config.load(TINY_PARAMS)
    summary = _run(tmp_path, params, split_dir=split_dir)
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
    a = _run(tmp_path / "a", params, name, split_dir=split_dir)
    b = _run(tmp_path / "b", params, name, split_dir=split_dir)
    a_live = json.loads((tmp_path / "a" / "live" / name / "metrics.json").read_text())
    b_live = json.loads((tmp_path / "b" / "live" / name / "metrics.json").read_text())
    ckpt = [(tmp_path / d / "ckpt" / f"{name}.keras").read_bytes() for d in "ab"]
    assert ckpt[0] == ckpt[1]
    assert a["best_val_accuracy"] == b["best_val_accuracy"]
    assert a_live["train"] == b_live["train"] and a_live["eval"] == b_live["eval"]


def test_killed_run_keeps_the_old_checkpoint_and_the_next_run_resumes(
        tmp_path, split_dir, monkeypatch):
    import keras

    params = config.load(TINY_PARAMS)
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, epochs=3))
    ckpt = tmp_path / "ckpt" / "gru.keras"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"the previous good checkpoint")

    original = keras.callbacks.BackupAndRestore.on_epoch_end
    seen = []

    def killed_after_second_check(self, epoch, logs=None):
        original(self, epoch, logs)
        seen.append(epoch)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", killed_after_second_check)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, params, split_dir=split_dir)
    assert ckpt.read_bytes() == b"the previous good checkpoint"
    assert (tmp_path / "work" / "gru" / "backup").exists()

    seen.clear()
    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end",
                        lambda self, epoch, logs=None: (seen.append(epoch), original(self, epoch, logs)))
    summary = _run(tmp_path, params, split_dir=split_dir)
    assert seen[0] == 2  # resumed after the two finished checks
    assert summary["checks_run"] == protocol.plan(params.train, 500)["checks"]
    assert ckpt.read_bytes() != b"the previous good checkpoint"
    keras.models.load_model(ckpt)


def test_training_stops_at_the_exact_step_budget_with_a_last_check(tmp_path, split_dir):
    params = config.load(TINY_PARAMS)
    params = dataclasses.replace(params, train=dataclasses.replace(
        params.train, max_train_samples=120, epochs=3, validate_every_steps=4))
    summary = _run(tmp_path, params, split_dir=split_dir)
    # 120 images / batch 50 = 3 steps per epoch; 3 epochs = 9 steps; checks at 4, 8, 9
    assert summary["steps_run"] == 9 and summary["checks_run"] == 3
    assert summary["epochs_run"] == 3.0 and 0 < summary["best_epoch"] <= 3.0
    assert summary["best_step"] in (4, 8, 9)
    assert _steps(tmp_path / "live" / "gru", "eval") == [0, 1, 2]


def _steps(live_dir, part):
    rows = (live_dir / "plots" / "metrics" / part / "accuracy.tsv").read_text().splitlines()
    return [int(dict(zip(rows[0].split("\t"), r.split("\t")))["step"]) for r in rows[1:]]


@pytest.mark.parametrize("backed_up", [True, False], ids=["after-backup", "before-backup"])
def test_resumed_run_keeps_the_history_of_every_epoch(tmp_path, split_dir, monkeypatch, backed_up):
    """Killed after epoch 2 of 3 and resumed: the curves show epochs 1, 2 and 3 once each.

    Killed before the backup recorded epoch 2, the resumed run replays it; its
    first logged row must not appear twice."""
    import keras

    params = config.load(TINY_PARAMS)
    params = dataclasses.replace(params, train=dataclasses.replace(
        params.train, epochs=3, validate_every_steps=10))  # 500 images / 50 = 1 check per epoch
    original = keras.callbacks.BackupAndRestore.on_epoch_end

    def killed_after_epoch_2(self, epoch, logs=None):
        if epoch == 1 and not backed_up:
            raise KeyboardInterrupt
        original(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", killed_after_epoch_2)
    # DVC deletes a stage's metrics before rerunning it: the old folder must not matter
    (tmp_path / "live" / "gru").mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, params, split_dir=split_dir)
    shutil.rmtree(tmp_path / "live")
    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", original)
    summary = _run(tmp_path, params, split_dir=split_dir)

    live = tmp_path / "live" / "gru"
    assert _steps(live, "eval") == [0, 1, 2] and _steps(live, "train") == [0, 1, 2]
    assert summary["checks_run"] == 3 and summary["epochs_run"] == 3.0
    assert summary["steps_run"] == 30
    saved = json.loads((live / "metrics.json").read_text())
    assert saved["step"] == 2 and saved["checks_run"] == 3


def test_state_from_other_params_is_discarded(tmp_path, split_dir):
    params = config.load(TINY_PARAMS)
    stale = tmp_path / "work" / "gru"
    (stale / "backup").mkdir(parents=True)
    (stale / "fingerprint").write_text("made with other params")
    summary = _run(tmp_path, params, split_dir=split_dir)
    assert summary["checks_run"] == protocol.plan(params.train, 500)["checks"]


def test_unknown_model_name(tmp_path, split_dir):
    with pytest.raises(StageError, match="models.transformer: no such model"):
        _run(tmp_path, config.load(TINY_PARAMS), name="transformer", split_dir=split_dir)


def test_a_checkpoint_s_bytes_do_not_depend_on_when_it_was_saved(tmp_path, monkeypatch):
    """Keras stamps the save time into a .keras file; the stage's copy has none, so
    the same training gives the same checksum and DVC sees no change."""
    import time

    import keras
    import numpy as np

    from pipeline import runtime

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    raw, stable = [], []
    for i, when in enumerate((1_700_000_000, 1_800_000_000)):
        monkeypatch.setattr(time, "time", lambda when=when: when)
        monkeypatch.setattr(time, "localtime", lambda secs=None, when=when: time.gmtime(when))
        model.save(tmp_path / f"raw{i}.keras")
        runtime.stable_keras_copy(tmp_path / f"raw{i}.keras", tmp_path / f"stable{i}.keras")
        raw.append((tmp_path / f"raw{i}.keras").read_bytes())
        stable.append((tmp_path / f"stable{i}.keras").read_bytes())
    assert raw[0] != raw[1]          # what Keras writes differs ...
    assert stable[0] == stable[1]    # ... what the stage keeps does not
    x = np.ones((1, 3), "float32")
    assert np.array_equal(keras.models.load_model(tmp_path / "stable0.keras").predict(x, verbose=0),
                          model.predict(x, verbose=0))


def test_shared_objects_are_numbered_in_order_not_by_address(tmp_path):
    """config.json names shared objects by memory address; the stable copy by order."""
    import json
    import zipfile

    import keras

    from pipeline import runtime

    inputs = keras.Input((4,))
    shared = keras.layers.Dense(3)
    model = keras.Model(inputs, shared(shared(keras.layers.Dense(3)(inputs))))
    model.save(tmp_path / "raw.keras")
    runtime.stable_keras_copy(tmp_path / "raw.keras", tmp_path / "stable.keras")
    config = zipfile.ZipFile(tmp_path / "stable.keras").read("config.json").decode()
    ids = sorted({int(x.split(":")[1].strip(" }")) for x in config.split('"shared_object_id"')[1:]
                  for x in [x.split(",")[0]]})
    assert ids and ids == list(range(len(ids)))
    again = keras.models.load_model(tmp_path / "stable.keras")
    assert json.dumps(again.get_config(), sort_keys=True) == \
        json.dumps(keras.models.load_model(tmp_path / "raw.keras").get_config(), sort_keys=True)


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
        _run(tmp_path, params, name="rnn", split_dir=split_dir)
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
    _run(tmp_path, config.load(TINY_PARAMS), split_dir=split_dir)
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
