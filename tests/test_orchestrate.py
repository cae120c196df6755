"""What the DAG's tasks do (pipeline/orchestrate.py, pipeline/publish.py), on real DVC projects.

The headline test trains the four models two at a time, as the Airflow pool
does, and checks that the trainings overlapped, all succeeded, and that
dvc.lock records them exactly as a plain `dvc repro` does.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
import zc.lockfile

from conftest import copy_project, make_project, sh, tool_env
from pipeline import orchestrate, publish
from pipeline.orchestrate import (DataValidationError, LockBusy, MirrorUnavailable, ParamsError,
                                  StageFailed, TransientError)

MODELS = ("rnn", "lstm", "gru", "bilstm")  # tests/fixtures/params-tiny.yaml


@pytest.fixture(scope="module")
def env():
    """The environment orchestrate's subprocesses inherit: offline, quiet, this venv."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in tool_env().items():
            mp.setenv(key, value)
        mp.delenv("DATA_MIRROR_DIR", raising=False)
        yield


@pytest.fixture(scope="module")
def split_project(tmp_path_factory, env) -> Path:
    """A project where fetch, validate and split ran through run_stage."""
    project = make_project(tmp_path_factory.mktemp("orchestrate") / "project")
    outcomes = [orchestrate.run_stage(project, s)["outcome"] for s in ("fetch", "validate", "split")]
    assert outcomes == ["ran", "ran", "ran"]
    return project


def lock_stages(project: Path) -> dict:
    return yaml.safe_load((project / "dvc.lock").read_text())["stages"]


def test_an_unchanged_stage_is_skipped(split_project):
    result = orchestrate.run_stage(split_project, "fetch")
    assert result["outcome"] == "unchanged"


def test_overlapping_trainings_all_succeed_and_are_recorded(split_project, tiny_repro, tmp_path):
    project = copy_project(split_project, tmp_path / "p")

    def train(model):  # what one `train` task instance runs
        proc = subprocess.run([sys.executable, "-m", "pipeline.orchestrate", "train", model],
                              cwd=project, env=tool_env(), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)

    with ThreadPoolExecutor(max_workers=2) as pool:  # the `training` pool's default size
        results = list(pool.map(train, MODELS))

    assert [r["outcome"] for r in results] == ["ran"] * 4
    overlapping = [(a["stage"], b["stage"]) for i, a in enumerate(results) for b in results[i + 1:]
                   if max(a["started"], b["started"]) < min(a["finished"], b["finished"])]
    assert overlapping, results
    stages = lock_stages(project)
    reference = lock_stages(tiny_repro)  # the same project after a plain `dvc repro`
    for model in MODELS:
        ours, plain = stages[f"train@{model}"], reference[f"train@{model}"]
        assert ours["cmd"] == plain["cmd"] and ours["deps"] == plain["deps"]
        assert ours["params"] == plain["params"]
        assert [o["path"] for o in ours["outs"]] == [o["path"] for o in plain["outs"]]
        assert (project / "models" / "checkpoints" / f"{model}.keras").exists()
    status = json.loads(sh("dvc", "status", "--json", cwd=project).stdout)
    assert sorted(status) == ["evaluate"]  # every training is recorded; evaluate is next
    assert not any((project / orchestrate.WORKSPACES).iterdir())  # workspaces cleaned up
    again = orchestrate.train(project, "gru")
    assert again["outcome"] == "unchanged"


def test_a_busy_dvc_lock_is_transient(split_project, monkeypatch):
    monkeypatch.setattr(orchestrate, "STAGE_LOCK_WAIT_S", 1.0)
    held = zc.lockfile.LockFile(str(split_project / ".dvc" / "tmp" / "lock"))
    try:
        with pytest.raises(LockBusy, match="lock") as err:
            orchestrate.run_stage(split_project, "split")
        assert isinstance(err.value, TransientError)
    finally:
        held.close()
    assert orchestrate.run_stage(split_project, "split")["outcome"] == "unchanged"


def test_failed_validation_is_permanent_and_names_the_expectation(split_project, tmp_path):
    project = copy_project(split_project, tmp_path / "p")
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("class_share_max: 0.25", "class_share_max: 0.12"))
    with pytest.raises(DataValidationError) as err:
        orchestrate.run_stage(project, "validate")
    message = str(err.value)
    assert message.startswith("validate: the raw data failed validation (not retried")
    assert "validate: error: 1 of" in message and "class_share" in message


@pytest.mark.parametrize("stage, output, kind, shown", [
    ("fetch", "fetch: error: train-images-idx3-ubyte.gz: every mirror failed (6 attempts)\n"
              "ERROR: failed to reproduce 'fetch'", MirrorUnavailable, "every mirror failed"),
    ("split", "split: error: params.yaml: split.val_size: must be below the dataset's "
              "train_count\nERROR: failed to reproduce 'split'", ParamsError, "split.val_size"),
    ("train@gru", "train@gru: error: training diverged (loss became NaN)\n"
                  "ERROR: failed to reproduce 'train@gru'", StageFailed, "diverged"),
    ("evaluate", "Traceback ...\nMemoryError\nERROR: failed to reproduce 'evaluate'",
     StageFailed, "ERROR: failed to reproduce 'evaluate'"),
])
def test_failures_are_sorted_for_the_retry_policy(stage, output, kind, shown, tmp_path):
    exc = orchestrate.classify(stage, output, tmp_path)
    assert type(exc) is kind
    assert str(exc).startswith(f"{stage}: ") and shown in str(exc)


@pytest.mark.parametrize("new, old, margin, same, decision", [
    (0.99, None, 0.0005, False, "replaced"),     # nothing published yet
    (0.9915, 0.991, 0.0005, False, "replaced"),  # exactly the margin (float-safe)
    (0.9914, 0.991, 0.0005, False, "kept"),      # better, but not by the margin
    (0.991, 0.991, 0.0, False, "kept"),          # a tie never replaces
    (0.9911, 0.991, 0.0, False, "replaced"),
    (0.98, 0.99, 0.0005, False, "kept"),
    (0.99, 0.99, 0.0005, True, "unchanged"),     # the published model itself
])
def test_champion_decision(new, old, margin, same, decision):
    assert publish.decide(new, old, margin, same) == decision


def test_publish_replaces_then_keeps_the_champion(tiny_repro, tmp_path, env):
    project = copy_project(tiny_repro, tmp_path / "p")
    records = tmp_path / "records.git"
    sh("git", "init", "-q", "--bare", str(records), cwd=tmp_path)
    sh("git", "remote", "add", "records", str(records), cwd=project)
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("git_remote: null", "git_remote: records"))
    sh("git", "commit", "-qam", "push run records", cwd=project)
    head = sh("git", "rev-parse", "HEAD", cwd=project).stdout

    first = publish.run(project, run_id="run-1")
    best = json.loads((project / "models/best/card.json").read_text())
    assert first["decision"] == "replaced" and first["champion"]["model"] == best["model"]
    champion = project / "models" / "champion"
    assert (champion / "model.keras").read_bytes() == (project / "models/best/model.keras").read_bytes()
    assert json.loads((champion / "published.json").read_text())["run_id"] == "run-1"
    assert (project / "models" / "champion.dvc").exists()
    # tracked storage: the remote holds the champion, checkpoints and data
    assert "in sync" in sh("dvc", "status", "--cloud", cwd=project).stdout
    # the run record: a commit on the record branch, pushed; HEAD is untouched
    assert sh("git", "rev-parse", "HEAD", cwd=project).stdout == head
    tip = sh("git", "rev-parse", "pipeline-runs", cwd=project).stdout.strip()
    assert tip == first["record_commit"]
    assert sh("git", "rev-parse", "pipeline-runs", cwd=records).stdout.strip() == tip
    for path in ("dvc.lock", "metrics/evaluate.json", "reports/report.md", "models/champion.dvc"):
        recorded = sh("git", "show", f"pipeline-runs:{path}", cwd=project).stdout
        assert recorded == (project / path).read_text(), path
    assert "champion replaced" in sh("git", "log", "-1", "--format=%B", tip, cwd=project).stdout
    # a retry of the same run reuses its record
    assert publish.run(project, run_id="run-1")["record_commit"] == tip

    # Publish a better model by hand: the pipeline's own best must not replace it.
    rival = next(m for m in MODELS if m != best["model"])
    shutil.copyfile(project / "models/checkpoints" / f"{rival}.keras", champion / "model.keras")
    card = json.loads((champion / "card.json").read_text())
    card.update(model=rival, metrics={**card["metrics"], "val_accuracy": 0.999})
    (champion / "card.json").write_text(json.dumps(card))
    before = {p.name: p.read_bytes() for p in champion.iterdir()}
    kept = publish.run(project, run_id="run-2")
    assert kept["decision"] == "kept" and kept["champion"] == {"model": rival, "val_accuracy": 0.999}
    assert {p.name: p.read_bytes() for p in champion.iterdir()} == before
    message = sh("git", "log", "-1", "--format=%B", "pipeline-runs", cwd=project).stdout
    assert message.startswith("retrain run-2: champion kept: " + rival)
    assert sh("git", "rev-parse", "pipeline-runs~1", cwd=project).stdout.strip() == tip


def test_publish_refuses_an_incomplete_pipeline(split_project):
    with pytest.raises(StageFailed, match="not up to date"):
        publish.run(split_project, run_id="r")
    assert not (split_project / "models" / "champion").exists()


def test_a_task_timeout_stops_the_stage_and_its_children(tmp_path):
    """Airflow's execution_timeout raises inside the task; no training may outlive it."""
    pids = tmp_path / "pids"

    def timeout(signum, frame):
        raise TimeoutError("execution_timeout")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(2)
    try:
        with pytest.raises(TimeoutError):
            orchestrate._stream(["bash", "-c", f"sleep 60 & echo $! > {pids}; echo started; wait"],
                                tmp_path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    child = int(pids.read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists()
