"""What the DAG's tasks do (pipeline/orchestration/: orchestrate, workspace, publish, failures), on real DVC.

Every task works in a private clone of the run's commit and hands on a record
(dvc.lock entries and small outputs); data goes through the DVC remote. These
tests run stages and publish by hand, as Airflow's workers do, and check that
the project checkout is never written, that records chain, that unchanged
stages are skipped, and how failures are sorted for the retry policy.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml

from conftest import captured, copy_project, make_project, remote_holds_everything, sh, tool_env
from pipeline.orchestration import failures, orchestrate, publish, workspace
from pipeline.orchestration.failures import (DataValidationError, MirrorUnavailable, ParamsError,
                                             RemoteUnavailable, StageFailed)

MODELS = ("rnn", "lstm", "gru", "bilstm")  # tests/fixtures/params-tiny.yaml


@pytest.fixture(scope="module")
def env():
    """The environment orchestrate's subprocesses inherit: offline, quiet, this venv."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in tool_env().items():
            mp.setenv(key, value)
        for key in ("DATA_MIRROR_DIR", "PIPELINE_WORK_DIR", "PIPELINE_DVC_REMOTE_URL"):
            mp.delenv(key, raising=False)
        yield


@pytest.fixture(scope="module")
def chain(tmp_path_factory, env) -> tuple[Path, dict]:
    """A fresh project and the records of fetch -> validate -> split, run by hand."""
    project = make_project(tmp_path_factory.mktemp("orchestrate") / "project")
    record = None
    for stage in ("fetch", "validate", "split"):
        record = orchestrate.run_stage(stage, record, run_id="r1", project=project)
    return project, record


def test_each_stage_runs_in_a_clone_and_hands_on_a_record(chain):
    project, record = chain
    head = sh("git", "rev-parse", "HEAD", cwd=project).stdout.strip()
    assert (record["git_url"], record["commit"]) == (str(project), head)
    assert list(record["stages"]) == ["fetch", "validate", "split"]
    assert {e["outcome"] for e in record["stages"].values()} == {"ran"}
    assert record["models"] == list(MODELS)
    assert record["stages"]["split"]["lock"]["outs"][0]["path"] == "data/split"
    # the checkout is never written; the clones are gone; the data is in the DVC remote
    assert not (project / "dvc.lock").exists() and not (project / "data" / "raw").exists()
    assert not list((project / "tmp" / "workspaces").glob("*/*/.git"))
    assert sh("git", "status", "--porcelain", cwd=project).stdout == ""
    remote = project.parent / "project-remote"
    assert any(remote.rglob("*")), "nothing was pushed"


def test_a_stage_recorded_in_the_commit_is_skipped(tiny_repro, tmp_path, env):
    project = copy_project(tiny_repro, tmp_path / "p")
    sh("dvc", "push", cwd=project)
    record = orchestrate.run_stage("split", None, run_id="again", project=project)
    assert record["stages"]["split"]["outcome"] == "unchanged"
    locked = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["split"]
    assert record["stages"]["split"]["lock"] == locked


def test_records_merge_only_from_one_commit(chain):
    _, record = chain
    other = {**record, "commit": "0" * 40}
    with pytest.raises(workspace.WorkspaceError, match="different commits"):
        workspace.merge([record, other])
    assert workspace.merge([record, record]) == {k: record[k] for k in ("git_url", "commit",
                                                                          "stages")}


def test_failed_validation_is_permanent_and_names_the_expectation(chain, tmp_path):
    project, record = chain
    project = copy_project(project, tmp_path / "p")
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("class_share_max: 0.25", "class_share_max: 0.12"))
    sh("git", "commit", "-qam", "tighter bounds", cwd=project)
    fetched = orchestrate.run_stage("fetch", None, run_id="bad", project=project)
    with pytest.raises(DataValidationError) as err:
        orchestrate.run_stage("validate", fetched, run_id="bad", project=project)
    message = str(err.value)
    assert message.startswith("validate: the raw data failed validation (not retried")
    assert "validate: error: 1 of" in message and "class_share" in message


def test_an_unreachable_dvc_remote_is_transient_and_says_so(chain, tmp_path, monkeypatch):
    project, _ = chain
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the remote's folder should be")
    monkeypatch.setenv("PIPELINE_DVC_REMOTE_URL", str(blocker / "remote"))
    with pytest.raises(RemoteUnavailable) as err:
        orchestrate.run_stage("fetch", None, run_id="down", project=project)
    assert "DVC remote 'storage' (retried later)" in str(err.value)


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
    exc = failures.classify(stage, output, tmp_path)
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


@pytest.fixture
def finished(tiny_repro, tmp_path, env) -> tuple[Path, dict]:
    """A reproduced project, pushed, and the record its tasks would have handed on."""
    project = copy_project(tiny_repro, tmp_path / "p")
    sh("dvc", "push", cwd=project)
    return project, captured(project)


def test_publish_replaces_registers_and_then_keeps_the_champion(finished, tmp_path):
    project, record = finished
    first = publish.run(record, "run-1", project=project)
    assert first["decision"] == "replaced"
    tip = sh("git", "rev-parse", "pipeline-runs", cwd=project).stdout.strip()
    assert tip == first["record_commit"]
    best = json.loads((project / "models/best/card.json").read_text())
    assert "champion replaced: " + best["model"] in sh(
        "git", "log", "-1", "--format=%B", tip, cwd=project).stdout
    for path in ("dvc.lock", "metrics/evaluate.json", "reports/report.md"):
        assert sh("git", "show", f"pipeline-runs:{path}", cwd=project).stdout == \
            (project / path).read_text(), path
    tags = sh("git", "tag", cwd=project).stdout.split()
    assert tags == ["champion#prod#1", "champion@v0.0.1"]
    # the remote holds the champion: a fresh clone of the record gets it back
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", "--branch", "pipeline-runs", str(project), str(clone), cwd=tmp_path)
    sh("dvc", "remote", "modify", "--local", "storage", "url",
       str(project.parent / "p-remote"), cwd=clone)
    assert remote_holds_everything(clone)
    sh("dvc", "pull", "models/champion.dvc", cwd=clone)
    assert (clone / "models/champion/model.keras").read_bytes() == \
        (project / "models/best/model.keras").read_bytes()
    # a retry of the same run reuses its record
    assert publish.run(record, "run-1", project=project)["record_commit"] == tip

    # Someone publishes a better model by hand: this run's best must not replace it.
    rival = next(m for m in MODELS if m != best["model"])
    hand = hand_publish(project, clone, rival, 0.999)

    kept = publish.run(record, "run-2", project=project)
    assert kept["decision"] == "kept" and kept["champion"] == {"model": rival, "val_accuracy": 0.999}
    message = sh("git", "log", "-1", "--format=%B", "pipeline-runs", cwd=project).stdout
    assert message.startswith("retrain run-2: champion kept: " + rival)
    assert sh("git", "rev-parse", "pipeline-runs~1", cwd=project).stdout.strip() == hand
    assert sh("git", "tag", cwd=project).stdout.split() == tags   # nothing registered


def hand_publish(project: Path, clone: Path, model: str, val_accuracy: float) -> str:
    """Publish ``model``'s checkpoint as the champion by hand, claiming ``val_accuracy``."""
    champion = clone / "models" / "champion"
    shutil.copyfile(project / "models/checkpoints" / f"{model}.keras", champion / "model.keras")
    card = json.loads((champion / "card.json").read_text())
    card.update(model=model, metrics={**card["metrics"], "val_accuracy": val_accuracy})
    (champion / "card.json").write_text(json.dumps(card))
    sh("dvc", "add", "models/champion", cwd=clone)
    sh("dvc", "push", "models/champion.dvc", cwd=clone)
    sh("git", "commit", "-qam", "hand-published champion", cwd=clone)
    sh("git", "push", "-q", "origin", "pipeline-runs", cwd=clone)
    return sh("git", "rev-parse", "HEAD", cwd=clone).stdout.strip()


def test_publish_can_require_a_significant_gain(finished, tmp_path, caplog):
    project, record = finished
    assert publish.run(record, "run-1", project=project)["decision"] == "replaced"
    best = json.loads((project / "models/best/card.json").read_text())["model"]
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", "--branch", "pipeline-runs", str(project), str(clone), cwd=tmp_path)
    sh("dvc", "remote", "modify", "--local", "storage", "url",
       str(project.parent / "p-remote"), cwd=clone)
    sh("dvc", "pull", "models/champion.dvc", cwd=clone)
    # a rival that claims a lower validation accuracy: the margin alone would replace it
    hand_publish(project, clone, next(m for m in MODELS if m != best), 0.0)
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("require_significance: false",
                                                 "require_significance: true"))
    sh("git", "commit", "-qam", "require a significant gain", cwd=project)
    strict = {**record, "commit": sh("git", "rev-parse", "HEAD", cwd=project).stdout.strip()}
    with caplog.at_level("INFO", logger="pipeline.orchestration.publish"):
        result = publish.run(strict, "run-2", project=project)
    words = [r.getMessage() for r in caplog.records if "validation set" in r.getMessage()]
    assert words and "fixed" in words[0] and "broken" in words[0], caplog.text
    # 200 validation images of models near chance: no difference is significant
    assert "within noise" in words[0] and result["decision"] == "kept"


def test_publish_refuses_an_incomplete_run(finished):
    project, record = finished
    partial = {**record, "stages": {k: v for k, v in record["stages"].items() if k != "evaluate"}}
    with pytest.raises(StageFailed, match="did not record evaluate"):
        publish.run(partial, "r", project=project)
    assert not sh("git", "branch", "--list", "pipeline-runs", cwd=project).stdout


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


def test_gitignore_files_of_several_stages_merge_in_order(tmp_path):
    """Each training writes models/checkpoints/.gitignore with its own line; the
    evaluate task must see all of them, as after a plain `dvc repro`."""
    import base64
    import io
    import tarfile

    def files(text: str) -> str:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            info = tarfile.TarInfo("models/checkpoints/.gitignore")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
        return base64.b64encode(buffer.getvalue()).decode()

    stages = {f"train@{m}": {"lock": {"cmd": m}, "files": files(f"/{m}.keras\n")}
              for m in ("rnn", "lstm")}
    record = {"git_url": "x", "commit": "c", "stages": stages}
    workspace.apply(tmp_path, record, list(stages))
    assert (tmp_path / "models/checkpoints/.gitignore").read_text() == "/rnn.keras\n/lstm.keras\n"
    workspace.apply(tmp_path, record, list(stages))   # applying again changes nothing
    assert (tmp_path / "models/checkpoints/.gitignore").read_text() == "/rnn.keras\n/lstm.keras\n"


def test_the_remote_url_is_read_whole_however_long(tmp_path, monkeypatch):
    """`dvc remote list` wraps a long URL onto its own line (it broke every task of
    a run once the URL passed 80 columns); the local config's URL wins."""
    repo = tmp_path / "repo"
    repo.mkdir()
    sh("git", "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    long_url = str(tmp_path / ("a-remote-folder-with-a-long-name-" * 4) / "storage")
    sh("dvc", "remote", "add", "-d", "storage", "/somewhere/else", cwd=repo)
    sh("dvc", "remote", "modify", "--local", "storage", "url", long_url, cwd=repo)
    monkeypatch.delenv(workspace.REMOTE_ENV_PREFIX + "URL", raising=False)
    monkeypatch.setenv("PATH", tool_env()["PATH"])
    assert workspace.remote_options(repo, "storage") == {"url": long_url}
    with pytest.raises(workspace.WorkspaceError, match="no URL for DVC remote 'other'"):
        workspace.remote_options(repo, "other")
