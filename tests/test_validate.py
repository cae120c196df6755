"""The validate stage: the tiny fixture passes, each kind of damage is named."""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from pipeline import config
from pipeline.data import idx
from pipeline.stages import validate
from pipeline.data.idx import IdxError
from pipeline.runtime import StageError

FIXTURES = Path(__file__).parent / "fixtures"
TINY_PARAMS = FIXTURES / "params-tiny.yaml"
TINY_DATA = FIXTURES / "mnist-tiny"
TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"


@pytest.fixture(scope="module")
def params() -> config.Params:
    return config.load(TINY_PARAMS)


@pytest.fixture(scope="module")
def frame(params):
    return validate.build_frame(TINY_DATA, params.dataset)


@pytest.fixture
def raw(tmp_path) -> Path:
    """A private copy of the fixture that a test may damage."""
    return Path(shutil.copytree(TINY_DATA, tmp_path / "raw"))


def run(params, tmp_path, raw):
    return validate.run(params, raw_dir=raw, docs_dir=tmp_path / "docs",
                        metrics_path=tmp_path / "metrics" / "validate.json",
                        references=[tmp_path / "no-champion"])   # drift: tests/test_drift.py


def failure(params, tmp_path, raw) -> str:
    with pytest.raises(StageError) as err:
        run(params, tmp_path, raw)
    return str(err.value)


def edit(path: Path, change) -> None:
    """Rewrite an IDX file with change(array) applied to a writable copy."""
    data = idx.read(path).data.copy()
    idx.write(path, change(data))


def test_frame_has_one_row_per_image(frame):
    assert len(frame) == 800
    assert frame["split"].value_counts().to_dict() == {"train": 600, "test": 200}
    assert set(frame["images_magic"]) == {2051} and set(frame["labels_magic"]) == {2049}
    assert set(frame["rows"]) == {28} and set(frame["cols"]) == {28}
    # Shares of the classes of one split add up to one.
    for _, part in frame.groupby("split"):
        assert part.drop_duplicates("label")["class_share"].sum() == pytest.approx(1.0)


def test_frame_pads_a_short_labels_file_with_nulls(params, raw):
    edit(raw / TRAIN_LABELS, lambda labels: labels[:590])
    frame = validate.build_frame(raw, params.dataset)
    train = frame[frame["split"] == "train"]
    assert len(train) == 600 and train["label"].isna().sum() == 10


def test_suite_has_the_expectations_the_docs_promise(params):
    suite = validate.build_suite(params)
    types = {e.expectation_type for e in suite.expectations}
    assert {"expect_table_row_count_to_equal", "expect_column_values_to_be_unique",
            "expect_column_distinct_values_to_contain_set"} <= types
    assert len(suite.expectations) == 19


def test_tiny_fixture_passes_and_writes_docs_and_summary(params, tmp_path, raw):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "stale.html").write_text("from an earlier run")
    summary = run(params, tmp_path, raw)
    assert summary["success"] is True
    assert summary["expectations_failed"] == 0 and summary["expectations_evaluated"] == 19
    assert summary["images"] == {"train": 600, "test": 200}
    assert summary["duplicates"] == {"within_train": 0, "within_test": 0, "cross": 0}
    assert json.loads((tmp_path / "metrics" / "validate.json").read_text()) == summary
    assert (tmp_path / "docs" / "index.html").is_file()
    assert not (tmp_path / "docs" / "stale.html").exists()
    # the data's profile, which evaluate keeps beside the champion; drift needs one there
    assert json.loads((tmp_path / "docs" / "profile.json").read_text())["images"] == 600
    assert summary["drift"] == {"checked": False, "reason": "no champion yet: drift not checked"}


def test_label_outside_classes_fails_naming_the_expectation(params, tmp_path, raw):
    edit(raw / TRAIN_LABELS, lambda labels: np.where(np.arange(len(labels)) == 7, 10, labels))
    message = failure(params, tmp_path, raw)
    first, *lines = message.splitlines()
    # A lone class 10 also has a class share far below class_share_min.
    assert first.startswith(f"2 of 19 expectations failed on {raw} (tiny)")
    assert sorted(lines) == [
        "  expect_column_values_to_be_between(class_share): 1 unexpected of 800 (0.125%), "
        "e.g. [0.0017]",
        "  expect_column_values_to_be_in_set(label): 1 unexpected of 800 (0.125%), e.g. [10]"]
    # The evidence is kept even though the stage failed.
    summary = json.loads((tmp_path / "metrics" / "validate.json").read_text())
    assert summary["success"] is False and summary["expectations_failed"] == 2
    assert summary["drift"]["reason"] == "the expectations failed: drift not checked"
    assert (tmp_path / "docs" / "index.html").is_file()


def test_wrong_image_size_fails_naming_rows_and_cols(params, tmp_path, raw):
    edit(raw / TEST_IMAGES, lambda images: images[:, :27, :27])
    message = failure(params, tmp_path, raw)
    assert "expect_column_values_to_be_in_set(rows): 200 unexpected" in message
    assert "expect_column_values_to_be_in_set(cols): 200 unexpected" in message
    assert "e.g. [27]" in message


def test_wrong_magic_fails_naming_the_magic(params, tmp_path, raw):
    # Re-declare the images as 2-D (magic 0x0802, n x 784): still parseable.
    path = raw / TRAIN_IMAGES
    payload = gzip.decompress(path.read_bytes())
    n = struct.unpack(">I", payload[4:8])[0]
    path.write_bytes(gzip.compress(struct.pack(">III", 0x0802, n, 784) + payload[16:]))
    message = failure(params, tmp_path, raw)
    assert "expect_column_values_to_be_in_set(images_magic): 600 unexpected" in message
    assert "e.g. [2050]" in message


def test_missing_file_is_one_line_naming_it(params, tmp_path, raw):
    metrics = tmp_path / "metrics" / "validate.json"
    metrics.parent.mkdir()
    metrics.write_text('{"success": true}')  # from an earlier, good run
    (raw / TRAIN_LABELS).unlink()
    with pytest.raises(IdxError) as err:
        run(params, tmp_path, raw)
    assert str(err.value) == f"{raw / TRAIN_LABELS}: file is missing"
    # A stale success must not let the split stage go ahead.
    assert not metrics.exists()


def test_truncated_gzip_is_one_line_naming_it(params, tmp_path, raw):
    path = raw / TEST_IMAGES
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(IdxError) as err:
        run(params, tmp_path, raw)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{path}: truncated")


def _duplicate_first_train_image(raw, into_train, into_test):
    """Copy train image 0 over the next into_train train and first into_test test images."""
    train = idx.read(raw / TRAIN_IMAGES).data.copy()
    train[1:1 + into_train] = train[0]
    idx.write(raw / TRAIN_IMAGES, train)
    test = idx.read(raw / TEST_IMAGES).data.copy()
    test[:into_test] = train[0]
    idx.write(raw / TEST_IMAGES, test)


def test_duplicates_above_threshold_fail_and_are_counted(params, tmp_path, raw):
    _duplicate_first_train_image(raw, into_train=2, into_test=1)
    message = failure(params, tmp_path, raw)
    assert "expect_column_values_to_be_unique(digest, split == 'train'): 3 unexpected" in message
    assert "expect_column_values_to_be_unique(digest): 4 unexpected of 800" in message
    summary = json.loads((tmp_path / "metrics" / "validate.json").read_text())
    assert summary["duplicates"] == {"within_train": 2, "within_test": 0, "cross": 1}


def test_duplicates_within_threshold_pass(params, tmp_path, raw):
    lenient = dataclasses.replace(
        params, validate=dataclasses.replace(params.validate, max_duplicate_share=0.01))
    _duplicate_first_train_image(raw, into_train=1, into_test=0)
    assert run(lenient, tmp_path, raw)["duplicates"]["within_train"] == 1


def test_missing_class_fails_naming_the_split(params, tmp_path, raw):
    edit(raw / TRAIN_LABELS, lambda labels: np.where(labels == 3, 4, labels))
    message = failure(params, tmp_path, raw)
    assert ("expect_column_distinct_values_to_contain_set(label, split == 'train'): "
            "missing [3]") in message


def test_failure_leaves_downstream_outputs_alone(params, tmp_path, raw):
    downstream = tmp_path / "split" / "train.npz"
    downstream.parent.mkdir()
    downstream.write_bytes(b"previous split")
    edit(raw / TRAIN_LABELS, lambda labels: np.where(labels == 3, 4, labels))
    failure(params, tmp_path, raw)
    assert downstream.read_bytes() == b"previous split"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "metrics", "raw", "split"]
    assert [p.name for p in (tmp_path / "metrics").iterdir()] == ["validate.json"]
