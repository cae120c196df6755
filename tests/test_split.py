"""split: the tutorial's head split, a stratified option, and refusal of bad data."""

import gzip
import json
import shutil

import numpy as np
import pytest

from conftest import FIXTURE_DIR, TINY_PARAMS
from pipeline.data import arrays
from pipeline import config
from pipeline.data import idx
from pipeline.stages import split
from pipeline.runtime import StageError


def test_head_split_is_the_tutorials():
    train, val = split.head_split(60000, 5000)
    assert val.tolist() == list(range(5000))
    assert train[0] == 5000 and len(train) == 55000


def test_stratified_split_keeps_class_shares_and_is_seeded():
    labels = np.repeat(np.arange(10), [100, 200, 50, 150, 100, 100, 100, 100, 50, 50])
    train, val = split.stratified_split(labels, 100, seed=1)
    assert len(val) == 100 and len(train) == len(labels) - 100
    assert not set(train) & set(val)
    np.testing.assert_array_equal(np.bincount(labels[val], minlength=10),
                                  [10, 20, 5, 15, 10, 10, 10, 10, 5, 5])
    again, _ = split.stratified_split(labels, 100, seed=1)
    other, _ = split.stratified_split(labels, 100, seed=2)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)


@pytest.fixture
def workspace(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(FIXTURE_DIR, raw)
    summary = tmp_path / "validate.json"
    summary.write_text(json.dumps({"success": True}))
    return raw, summary, tmp_path / "split"


def test_split_writes_three_compressed_parts(workspace):
    raw, summary, out = workspace
    params = config.load(TINY_PARAMS)
    assert split.run(params, raw, out, summary) == {"train": 500, "val": 100, "test": 200}
    x_val, y_val = arrays.load(out, "val")
    x_train, _ = arrays.load(out, "train")
    full = idx.read(raw / "train-images-idx3-ubyte.gz").data
    np.testing.assert_array_equal(x_val, full[:100])  # the first images validate
    np.testing.assert_array_equal(x_train[0], full[100])
    assert x_val.dtype == np.uint8 and x_val.shape == (100, 28, 28) and y_val.shape == (100,)


def test_refuses_data_that_failed_validation(workspace):
    raw, summary, out = workspace
    summary.write_text(json.dumps({"success": False}))
    with pytest.raises(StageError, match="failed validation"):
        split.run(config.load(TINY_PARAMS), raw, out, summary)
    assert not out.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated gzip stream"),
    (lambda p: p.write_bytes(b"not gzip at all"), "corrupted gzip data"),
    (lambda p: p.unlink(), "file is missing"),
    (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 4)), "file ends early"),
    (lambda p: p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-28])),
     "header says 600x28x28 = 470400 bytes of data, file holds 470372"),
    (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + b"\x00" * 12)), "not an unsigned-byte IDX file"),
])
def test_broken_file_is_one_clear_line_and_outputs_stay(workspace, damage, message):
    raw, summary, out = workspace
    params = config.load(TINY_PARAMS)
    split.run(params, raw, out, summary)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    damage(raw / "train-images-idx3-ubyte.gz")
    with pytest.raises(idx.IdxError) as err:
        split.run(params, raw, out, summary)
    assert message in str(err.value) and "train-images-idx3-ubyte.gz" in str(err.value)
    assert "\n" not in str(err.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
