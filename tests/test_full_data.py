"""Opt-in (`make test-slow`): the data stages and one short training on full MNIST.

Needs the real files: DATA_MIRROR_DIR, or ../shared/data/mnist beside the
repository; skipped otherwise.
"""

import dataclasses
import json
import os
from pathlib import Path

import pytest

from conftest import ROOT
from pipeline.data import arrays
from pipeline import config
from pipeline.stages import fetch
from pipeline.stages import split
from pipeline.stages import train
from pipeline.stages import validate

pytestmark = pytest.mark.slow

MIRROR = Path(os.environ.get(config.MIRROR_ENV) or ROOT.parent / "shared" / "data" / "mnist")


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    if not (MIRROR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"full MNIST not found in {MIRROR}")
    base = tmp_path_factory.mktemp("full")
    params = config.load(ROOT / "params.yaml")
    params = dataclasses.replace(params, fetch=dataclasses.replace(params.fetch, mirror_dir=str(MIRROR)))
    fetch.run(params, base / "raw")
    summary = validate.run(params, base / "raw", base / "docs", base / "validate.json")
    split.run(params, base / "raw", base / "split", base / "validate.json")
    return params, base, summary


def test_full_mnist_validates_and_splits_like_the_tutorial(full):
    params, base, summary = full
    assert summary["success"] and summary["images"] == {"train": 60000, "test": 10000}
    sizes = {part: len(arrays.load(base / "split", part)[1]) for part in ("train", "val", "test")}
    assert sizes == {"train": 55000, "val": 5000, "test": 10000}
    assert json.loads((base / "validate.json").read_text())["expectations_failed"] == 0


def test_one_epoch_of_the_tutorial_rnn_learns(full, tmp_path):
    params, base, _ = full
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, epochs=1))
    summary = train.run("rnn", params, base / "split", checkpoint=tmp_path / "rnn.keras",
                        log_dir=tmp_path / "live", work_dir=tmp_path / "work")
    assert summary["params"] == 56_110
    assert summary["best_val_accuracy"] > 0.9
