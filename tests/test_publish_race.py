"""Two runs racing to publish, and a git source that does not answer, on real git and DVC.

The record branch and the registry tags move in one atomic `git push`; when
two publishes push at once, one must lose, and it must decide again on top of
the winner's record instead of failing or overwriting it
(pipeline/orchestration/publish.py). A `pre-receive` hook in the git source
holds each push until both have arrived, so the two really meet. These are
fault-table rows too (tests/fault_table.py), without the cluster: publish does
the same on any worker.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fault_table
from conftest import captured, copy_project, sh, tool_env
from pipeline.orchestration import publish
from pipeline.orchestration.failures import RemoteUnavailable
from pipeline.serve import registry

MODELS = ("rnn", "lstm", "gru", "bilstm")  # tests/fixtures/params-tiny.yaml
MEET = """#!/bin/sh
# Hold each push until two have arrived (at most 60 s), so that they race.
touch "{dir}/arrived.$$"
i=0
while [ "$(ls "{dir}" | grep -c arrived)" -lt 2 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
"""


@pytest.fixture
def env(monkeypatch):
    for key, value in tool_env().items():
        monkeypatch.setenv(key, value)
    for key in ("DATA_MIRROR_DIR", "PIPELINE_WORK_DIR", "PIPELINE_DVC_REMOTE_URL"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def two_runs(tiny_repro, tmp_path, env) -> tuple[Path, dict, dict, str]:
    """Run a: the tiny repro as it is. Run b, a commit later: its best model is another
    model's checkpoint, claiming a validation accuracy no run of a reaches."""
    project = copy_project(tiny_repro, tmp_path / "p")
    sh("dvc", "push", cwd=project)
    a = captured(project)
    best = project / "models" / "best"
    card = json.loads((best / "card.json").read_text())
    rival = next(m for m in MODELS if m != card["model"])
    shutil.copyfile(project / "models" / "checkpoints" / f"{rival}.keras", best / "model.keras")
    card.update(model=rival, metrics={**card["metrics"], "val_accuracy": 0.999})
    (best / "card.json").write_text(json.dumps(card))
    sh("dvc", "commit", "-f", "evaluate", cwd=project)
    sh("git", "commit", "-qam", "run b: a better best model", cwd=project)
    sh("dvc", "push", cwd=project)
    return project, a, captured(project), rival


def _publish(project: Path, record: dict, run_id: str, folder: Path) -> subprocess.Popen:
    path = folder / f"{run_id}.json"
    path.write_text(json.dumps(record))
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.orchestration.publish", "--record", str(path),
         "--run-id", run_id, "--project", str(project)], cwd=project, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_runs_racing_to_publish_leave_one_champion_and_both_records(two_runs, tmp_path,
                                                                          request):
    project, a, b, rival = two_runs
    meet = tmp_path / "meet"
    meet.mkdir()
    hook = project / ".git" / "hooks" / "pre-receive"
    hook.write_text(MEET.format(dir=meet))
    hook.chmod(0o755)
    started = time.monotonic()
    runs = {run_id: _publish(project, record, run_id, tmp_path)
            for run_id, record in (("race-a", a), ("race-b", b))}
    out = {run_id: proc.communicate(timeout=600) for run_id, proc in runs.items()}
    took = time.monotonic() - started
    for run_id, proc in runs.items():
        assert proc.returncode == 0, (run_id, out[run_id][1][-3000:])
    assert len(list(meet.iterdir())) >= 2, "the two pushes never met"
    lost = [run_id for run_id, (_, err) in out.items() if "lost a race" in err]
    assert len(lost) == 1, {run_id: err[-2000:] for run_id, (_, err) in out.items()}
    loser, winner = lost[0], ({"race-a", "race-b"} - set(lost)).pop()
    assert "unavailable" not in out[loser][1].lower(), out[loser][1][-2000:]
    # both run records, one after the other, on the branch's first-parent line
    subjects = sh("git", "log", "--first-parent", "--format=%s", "pipeline-runs",
                  cwd=project).stdout.splitlines()
    runs_recorded = [s.split(":")[0] for s in subjects if s.startswith("retrain ")]
    assert runs_recorded == [f"retrain {loser}", f"retrain {winner}"], subjects
    body = sh("git", "log", "-1", "--format=%B", "pipeline-runs", cwd=project).stdout
    assert "another run had published first" in body
    # one champion: run b's, whoever won; every version on its own record commit
    summaries = {run_id: json.loads(o) for run_id, (o, _) in out.items()}
    assert summaries[loser]["champion"] == {"model": rival, "val_accuracy": 0.999}
    history = sh("git", "rev-list", "--first-parent", "pipeline-runs", cwd=project).stdout.split()
    versions = sh("git", "tag", "--list", "champion@*", cwd=project).stdout.split()
    commits = [sh("git", "rev-list", "-n", "1", tag, cwd=project).stdout.strip() for tag in versions]
    assert versions and len(set(commits)) == len(commits) and set(commits) <= set(history)
    assert registry.production(project)["metrics"]["model"] == rival   # prod: run b's model
    tries = {winner: 1, loser: 2}
    fault_table.record(
        "two runs racing to publish", "two `publish` processes (runs a and b, b's best better) "
        "pushing at once to one git source; a pre-receive hook holds each push until both "
        "arrived", "race-a + race-b", took, {f"publish ({r})": n for r, n in tries.items()},
        f"{loser}: lost the atomic push, decided again on top of {winner}'s record and pushed",
        "nothing: both records on the first-parent line, one champion (run b's), "
        f"{len(versions)} registry version(s), each on its own record commit",
        request.node.nodeid)


def test_an_unanswering_git_source_fails_publish_clearly_after_retries(tiny_repro, tmp_path,
                                                                       env, monkeypatch, caplog):
    project = copy_project(tiny_repro, tmp_path / "p")
    record = {**captured(project), "git_url": "git://127.0.0.1:9/nothing-listens-here.git"}
    monkeypatch.setattr(publish, "GIT_WAIT_S", 0.1)
    with caplog.at_level("WARNING", logger="pipeline.orchestration.publish"), \
            pytest.raises(RemoteUnavailable) as failed:
        publish.run(record, "unanswered", project=project)
    message = str(failed.value)
    assert "\n" not in message and "did not answer in 3 tries" in message, message
    assert "nothing was published (retried later)" in message
    assert len([r for r in caplog.records if "retrying in" in r.getMessage()]) == 2
    assert not sh("git", "branch", "--list", "pipeline-runs", cwd=project).stdout
    assert not sh("git", "tag", cwd=project).stdout
