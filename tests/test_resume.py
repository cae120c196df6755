"""A training killed on one worker goes on from its last check on another
(pipeline/orchestration/resume.py), on real DVC with a local-folder remote.

Two workers are two work folders (PIPELINE_WORK_DIR) that share nothing but
the git source and the DVC remote, as on the cluster; the first one's task
process is killed with SIGKILL once its state reached the remote.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import make_project, sh, tool_env
from pipeline import config
from pipeline.orchestration import orchestrate

EPOCHS = 24   # long enough that the kill lands mid-training


@pytest.fixture
def split_record(tmp_path, monkeypatch):
    for key, value in tool_env().items():
        monkeypatch.setenv(key, value)
    for key in ("DATA_MIRROR_DIR", "PIPELINE_DVC_REMOTE_URL"):
        monkeypatch.delenv(key, raising=False)
    project = make_project(tmp_path / "project")
    text = (project / "params.yaml").read_text()
    old = f"epochs: {config.load(project / 'params.yaml').train.epochs} "
    at = text.index("\ntrain:")
    at = text.index(old, at)
    (project / "params.yaml").write_text(text[:at] + f"epochs: {EPOCHS} " + text[at + len(old):])
    sh("git", "commit", "-qam", "longer training", cwd=project)
    monkeypatch.setenv("PIPELINE_WORK_DIR", str(tmp_path / "worker-0"))
    record = None
    for stage in ("fetch", "validate", "split"):
        record = orchestrate.run_stage(stage, record, run_id="r", project=project)
    (tmp_path / "split.json").write_text(json.dumps(record))
    return project, tmp_path / "split.json"


def _task(project: Path, upstream: Path, worker: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.orchestration.orchestrate", "train@gru", "--run-id", "r",
         "--upstream", str(upstream), "--project", str(project), *extra],
        env={**os.environ, "PIPELINE_WORK_DIR": str(worker)}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def test_a_killed_training_goes_on_from_the_remote_on_another_worker(split_record, tmp_path):
    project, upstream = split_record
    remote = project.parent / "project-remote"
    saved = remote / "resume" / "r" / "train@gru.tar"

    first, log = _task(project, upstream, tmp_path / "worker-a"), []
    for line in first.stdout:
        log.append(line)
        if "saved to DVC remote" in line:
            break
    os.killpg(first.pid, signal.SIGKILL)   # the worker dies mid-training
    first.wait()
    assert saved.exists(), "".join(log[-30:])
    with tarfile.open(saved) as tar:
        done = json.load(tar.extractfile("backup/training_metadata.json"))["epoch"]
    assert done >= 1

    second = _task(project, upstream, tmp_path / "worker-b", "--record", str(tmp_path / "r.json"))
    out = second.communicate(timeout=600)[0]
    assert second.returncode == 0, out[-3000:]
    assert "fetched from DVC remote" in out and "(resuming)" in out, out[-3000:]
    assert f"resuming after check {done}" in out, out[-3000:]   # the saved check, not the first
    assert not saved.exists(), "the saved state outlived the finished training"

    record = json.loads((tmp_path / "r.json").read_text())["stages"]["train@gru"]
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(record["files"]))) as tar:
        files = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}
    summary = json.loads(files["metrics/train/gru/metrics.json"])
    curve = files["metrics/train/gru/plots/metrics/eval/accuracy.tsv"].splitlines()
    column = curve[0].split("\t").index("step")
    steps = [int(row.split("\t")[column]) for row in curve[1:]]
    # every check is on the curve once, those before the kill included
    assert steps == list(range(summary["checks_run"])), steps
    assert summary["checks_run"] > done
