"""Drift and new data in the DAG's tasks (pipeline/orchestration/), on real DVC and git.

After a run is published, the validate task compares the data with the published
champion's (brought from the record branch); new data at an unpinned source is
fetched (fetch and validate rerun on every run) and its drift stops the run at
validate; the split task's look-ahead says when nothing changed since the last
recorded run, and does not when a model's params did.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile

import numpy as np
import pytest

from conftest import sh
from pipeline.data import idx
from pipeline.orchestration import orchestrate, publish
from pipeline.orchestration.failures import DataValidationError
from test_orchestrate import env, finished  # noqa: F401  (fixtures)


def recorded_file(record: dict, stage: str, path: str) -> str:
    """An uncached output a task handed on in its record."""
    data = base64.b64decode(record["stages"][stage]["files"])
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.extractfile(path).read().decode()


@pytest.fixture
def published(finished):
    project, record = finished
    assert publish.run(record, "run-1", project=project)["decision"] == "replaced"
    fetched = {**record, "stages": {"fetch": record["stages"]["fetch"]}}
    return project, record, fetched


def test_validate_compares_with_the_published_champion(published):
    project, _, fetched = published
    record = orchestrate.run_stage("validate", fetched, run_id="run-2", project=project)
    assert record["stages"]["validate"]["outcome"] == "ran"   # rerun although nothing changed
    block = json.loads(recorded_file(record, "validate", "metrics/validate.json"))["drift"]
    assert block["checked"] and block["passed"], block
    assert (block["reference"]["from"], block["reference"]["run_id"]) == ("models/champion",
                                                                          "run-1")


def test_the_look_ahead_says_nothing_changed_until_a_param_does(published):
    project, _, fetched = published
    validated = orchestrate.run_stage("validate", fetched, run_id="run-2", project=project)
    split = orchestrate.run_stage("split", validated, run_id="run-2", project=project,
                                  look_ahead=True)
    assert split["unchanged_since"] == "run-1"
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("units: 8", "units: 9", 1))
    sh("git", "commit", "-qam", "a wider rnn", cwd=project)
    head = sh("git", "rev-parse", "HEAD", cwd=project).stdout.strip()
    again = orchestrate.run_stage("split", {**validated, "commit": head}, run_id="run-3",
                                  project=project, look_ahead=True)   # the same data, validated
    assert again["unchanged_since"] is None


def test_new_data_at_an_unpinned_source_is_fetched_and_its_drift_stops_validate(published):
    project = published[0]
    params = project / "params.yaml"
    text = params.read_text()
    for sha in ("727ecfaf97aee56bbb32058dbd512248c2c916b5aa13498a79b528e74ffee458",
                "b1d1fbcc0df1af5b9414333e8e4f88ce26fe03b42a2249fefabe7dcde3220f37"):
        assert sha in text
        text = text.replace(sha, "null")       # the training files are not pinned
    params.write_text(text)
    mirror = project / "tests" / "fixtures" / "mnist-tiny" / "train-images-idx3-ubyte.gz"
    idx.write(mirror, (idx.read(mirror).data * 0.8).astype(np.uint8))   # darker digits arrive
    sh("git", "commit", "-qam", "the source serves new data", cwd=project)
    fetched = orchestrate.run_stage("fetch", None, run_id="run-4", project=project)
    assert fetched["stages"]["fetch"]["outcome"] == "ran"
    with pytest.raises(DataValidationError) as err:
        orchestrate.run_stage("validate", fetched, run_id="run-4", project=project)
    line = next(line for line in str(err.value).splitlines() if line.startswith("validate: error"))
    assert "against the champion's data in models/champion: ink 0.6" in line, line
