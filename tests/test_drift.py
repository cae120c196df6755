"""Drift: the profile and its distances (pipeline/data/drift.py) and the validate stage's check.

On the tiny fixture: the unchanged data passes; a class removed, darker digits
and rotated digits each fail, by the distances and by the stage, which stops
in one line naming the statistic (or with on_drift: flag goes on); the
metrics are byte for byte the same when nothing changed. The false-alarm rate
on the real MNIST is measured by bench/drift_false_alarms.py
(reports/drift-false-alarms.md).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURE_DIR, TINY_PARAMS, bench_module
from pipeline import config
from pipeline.data import drift, idx
from pipeline.runtime import StageError
from pipeline.stages import split, validate

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"


shifted = bench_module("drift_false_alarms").shifted   # the bench's shifts: the measured ones are the tested ones


@pytest.fixture(scope="module")
def params() -> config.Params:
    return config.load(TINY_PARAMS)


@pytest.fixture(scope="module")
def tiny() -> tuple[np.ndarray, np.ndarray]:
    return (idx.read(FIXTURE_DIR / TRAIN_IMAGES).data, idx.read(FIXTURE_DIR / TRAIN_LABELS).data)


@pytest.fixture(scope="module")
def reference(tiny) -> dict:
    return drift.profile(*tiny, 10)


def compare(reference, images, labels, params) -> dict:
    return drift.compare(reference, drift.profile(images, labels, 10),
                         drift.limits(params.validate.drift))


def test_the_profile_is_small_plain_json(reference):
    text = json.dumps(reference)
    assert len(text) < 80_000 and json.loads(text) == reference
    assert reference["images"] == 600 and sum(reference["labels"]) == 600
    assert len(reference["quantiles"]["ink"]) == drift.QUANTILES
    assert np.asarray(reference["mean_images"][3]).shape == (28, 28)


def test_centre_of_mass_and_ink_of_known_images():
    images = np.zeros((2, 28, 28), np.uint8)
    images[0, 3, 20] = 255          # one pixel: the centre is that pixel
    stats = drift.per_image(images)
    assert (stats["centre_row"][0], stats["centre_col"][0]) == (3, 20)
    assert stats["ink"][0] == pytest.approx(1 / 784)
    assert (stats["centre_row"][1], stats["centre_col"][1], stats["ink"][1]) == (13.5, 13.5, 0)


def test_the_distances_agree_with_scipy():
    spatial, stats = pytest.importorskip("scipy.spatial"), pytest.importorskip("scipy.stats")
    p, q = np.array([10, 20, 30, 0]), np.array([12, 18, 25, 5])
    assert drift.js_distance(p, q) == pytest.approx(spatial.distance.jensenshannon(p, q, base=2))
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 5000), rng.normal(0.3, 1.2, 5000)
    qa, qb = (drift._quantiles(v) for v in (a, b))
    assert drift.wasserstein_normed(qa, qb, 1.0) == pytest.approx(
        stats.wasserstein_distance(a, b), rel=0.02)


def test_unchanged_data_passes_with_every_distance_zero(reference, tiny, params):
    result = compare(reference, *tiny, params)
    assert list(result) == list(drift.STATISTICS)
    assert all(r["passed"] and r["value"] == 0 for r in result.values()), result


@pytest.mark.parametrize("kind, amount, drifted", [
    ("remove", 7, {"labels", "mean_images"}),
    ("brightness", 0.8, {"ink", "mean_images"}),
    ("rotate", 15, {"centre_col", "mean_images"}),
])
def test_shifted_data_fails(reference, tiny, params, kind, amount, drifted):
    result = compare(reference, *shifted(*tiny, kind, amount), params)
    failed = {s for s, r in result.items() if not r["passed"]}
    assert drifted <= failed, result
    if kind == "remove":
        assert result["mean_images"]["detail"] == "classes missing on one side: [7]"


# --- the validate stage --------------------------------------------------------

def _champion(folder: Path, raw: Path, params) -> Path:
    """A champion folder whose profile is that of ``raw``'s data."""
    folder.mkdir(parents=True)
    (folder / "profile.json").write_text(json.dumps(validate.train_profile(raw, params)))
    (folder / "card.json").write_text(json.dumps({"model": "gru"}))
    (folder / "published.json").write_text(json.dumps({"run_id": "scheduled__1"}))
    return folder


def _shift(raw: Path, kind: str, amount: float) -> None:
    images, labels = shifted(idx.read(raw / TRAIN_IMAGES).data, idx.read(raw / TRAIN_LABELS).data,
                             kind, amount)
    idx.write(raw / TRAIN_IMAGES, images)
    idx.write(raw / TRAIN_LABELS, labels)


@pytest.fixture
def stage(tmp_path, params):
    """Run validate on a copy of the fixture against a champion trained on the fixture."""
    raw = Path(shutil.copytree(FIXTURE_DIR, tmp_path / "raw"))
    champion = _champion(tmp_path / "champion", raw, params)

    def run(p=params, references=(champion,)):
        return validate.run(p, raw, tmp_path / "docs", tmp_path / "validate.json",
                            references=references)
    return raw, run


def test_no_champion_is_recorded_not_failed(stage, tmp_path):
    summary = stage[1](references=(tmp_path / "nowhere",))
    assert summary["success"] and summary["drift"] == {
        "checked": False, "reason": "no champion yet: drift not checked"}
    assert "no champion yet" in (tmp_path / "docs" / "drift.md").read_text()


def test_unchanged_data_passes_and_gives_the_same_bytes(stage, tmp_path):
    summary = stage[1]()
    block = summary["drift"]
    assert summary["success"] and block["checked"] and block["passed"] and not block["flagged"]
    assert block["reference"] == {"from": str(tmp_path / "champion"), "model": "gru",
                                  "run_id": "scheduled__1", "images": 600}
    assert block["statistics"]["labels"] == {
        "test": drift.TESTS["labels"], "value": 0.0, "threshold": 0.05, "passed": True}
    first = [(tmp_path / p).read_bytes() for p in ("validate.json", "docs/profile.json")]
    stage[1]()   # no timestamps: DVC sees the same outputs, split does not rerun
    assert [(tmp_path / p).read_bytes() for p in ("validate.json", "docs/profile.json")] == first
    assert (tmp_path / "docs" / "drift.png").stat().st_size > 5000
    assert "**passed**" in (tmp_path / "docs" / "drift.md").read_text()


def test_drift_stops_in_one_line_and_split_refuses(stage, tmp_path, params):
    raw, run = stage
    _shift(raw, "brightness", 0.8)
    with pytest.raises(StageError) as err:
        run()
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"drift in {raw} against the champion's")
    assert "ink 0.6" in message and "> 0.1" in message and "labels" not in message
    summary = json.loads((tmp_path / "validate.json").read_text())
    assert summary["success"] is False and summary["drift"]["statistics"]["ink"]["passed"] is False
    assert "**drift: the run stopped**" in (tmp_path / "docs" / "drift.md").read_text()
    with pytest.raises(StageError, match="failed validation"):
        split.run(params, raw, tmp_path / "split", tmp_path / "validate.json")


def test_flag_mode_goes_on_and_says_so(stage, tmp_path, params):
    raw, run = stage
    _shift(raw, "rotate", 15)
    flag = dataclasses.replace(params, validate=dataclasses.replace(
        params.validate, drift=dataclasses.replace(params.validate.drift, on_drift="flag")))
    summary = run(flag)
    assert summary["success"] is True
    assert summary["drift"]["flagged"] is True and summary["drift"]["passed"] is False
    assert "**drift, flagged**" in (tmp_path / "docs" / "drift.md").read_text()


def test_a_champion_of_another_dataset_is_not_compared(stage, tmp_path, params):
    profile = tmp_path / "champion" / "profile.json"
    profile.write_text(json.dumps({**json.loads(profile.read_text()), "dataset": "mnist"}))
    block = stage[1]()["drift"]
    assert not block["checked"] and "trained on other data (mnist)" in block["reason"]


def test_the_pr_diff_shows_both_revisions_drift():
    from pipeline.review import comparison, markdown

    raw = {"drift.checked": {"old": False, "new": True},
           "drift.passed": {"old": None, "new": False},
           "drift.flagged": {"old": None, "new": True},
           "drift.reason": {"old": "no champion yet: drift not checked", "new": None},
           "drift.reference.from": {"old": None, "new": "models/champion"},
           "drift.reference.model": {"old": None, "new": "lstm"},
           "drift.reference.run_id": {"old": None, "new": "scheduled__2"},
           "drift.statistics.ink.value": {"old": None, "new": 0.6044},
           "drift.statistics.ink.passed": {"old": None, "new": False},
           "drift.statistics.ink.threshold": {"old": None, "new": 0.1},
           "drift.statistics.labels.value": {"old": None, "new": 0.0},
           "drift.statistics.labels.passed": {"old": None, "new": True},
           "drift.statistics.labels.threshold": {"old": None, "new": 0.05}}
    text = "\n".join(markdown.drift_section(comparison.metric_pairs({"v": raw})["v"], "main",
                                            "this PR"))
    assert "main: not checked (no champion yet: drift not checked)." in text
    assert ("this PR: **drift, flagged** against the champion in `models/champion` "
            "(model lstm, run scheduled__2).") in text
    assert "| `labels` | 0.05 | — | 0.0000 pass |" in text
    assert "| `ink` | 0.1 | — | 0.6044 **drift** |" in text
