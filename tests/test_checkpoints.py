"""train's checkpoints: a killed run keeps the last good one and the next run resumes
where it stopped, with one row per epoch in its curves; state left by other params
is discarded; and the bytes kept do not depend on when Keras saved them, so the
same training gives the same DVC checksum.
"""

import dataclasses
import json
import shutil

import pytest

from conftest import TINY_PARAMS, logged_steps, train_tiny
from pipeline import config
from pipeline.rnn import protocol


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
        train_tiny(tmp_path, params, split_dir=split_dir)
    assert ckpt.read_bytes() == b"the previous good checkpoint"
    assert (tmp_path / "work" / "gru" / "backup").exists()

    seen.clear()
    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end",
                        lambda self, epoch, logs=None: (seen.append(epoch), original(self, epoch, logs)))
    summary = train_tiny(tmp_path, params, split_dir=split_dir)
    assert seen[0] == 2  # resumed after the two finished checks
    assert summary["checks_run"] == protocol.plan(params.train, 500)["checks"]
    assert ckpt.read_bytes() != b"the previous good checkpoint"
    keras.models.load_model(ckpt)


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
        train_tiny(tmp_path, params, split_dir=split_dir)
    shutil.rmtree(tmp_path / "live")
    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", original)
    summary = train_tiny(tmp_path, params, split_dir=split_dir)

    live = tmp_path / "live" / "gru"
    assert logged_steps(live, "eval") == [0, 1, 2] and logged_steps(live, "train") == [0, 1, 2]
    assert summary["checks_run"] == 3 and summary["epochs_run"] == 3.0
    assert summary["steps_run"] == 30
    saved = json.loads((live / "metrics.json").read_text())
    assert saved["step"] == 2 and saved["checks_run"] == 3


def test_state_from_other_params_is_discarded(tmp_path, split_dir):
    params = config.load(TINY_PARAMS)
    stale = tmp_path / "work" / "gru"
    (stale / "backup").mkdir(parents=True)
    (stale / "fingerprint").write_text("made with other params")
    summary = train_tiny(tmp_path, params, split_dir=split_dir)
    assert summary["checks_run"] == protocol.plan(params.train, 500)["checks"]


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
