"""dvc.lock records the committed code and params: the results in metrics/ and the
README were made by the code in the checkout, not by an older one.

DVC itself says what changed (``dvc status --json``). Only code (``pipeline/``,
``dags/``), params and commands count: data and models are not in git, so a
clean clone lacks them ("deleted", "not in cache") without the lock being stale,
and a stage marked ``always_changed`` is never up to date by design. After a
change to code a stage depends on, ``make repro`` (or ``dvc commit`` where the
outputs are proven unchanged) brings the lock back in step. Deselect while
developing with ``-m "not lock"``.
"""

import json

import pytest

from conftest import ROOT, sh

CODE = ("pipeline/", "dags/")


def stale_code_and_params(status: dict) -> list[str]:
    """``stage: what`` for each code, params or command change in ``dvc status --json``."""
    stale = []
    for stage, items in sorted(status.items()):
        items = items if isinstance(items, list) else [items]
        if "always changed" in items:
            continue
        for item in items:
            if item == "changed command":
                stale.append(f"{stage}: command changed")
            for path, state in (item.get("changed deps") or {}).items() if isinstance(item, dict) else ():
                if isinstance(state, dict):  # a params file: {key: "modified" | "new" | "deleted"}
                    stale += [f"{stage}: {path} {key} {change}" for key, change in sorted(state.items())]
                elif path.startswith(CODE):
                    stale.append(f"{stage}: {path} {state}")
    return stale


def _status(project) -> dict:
    return json.loads(sh("dvc", "status", "--json", cwd=project).stdout or "{}")


@pytest.mark.lock
def test_dvc_lock_matches_the_committed_code_and_params():
    stale = stale_code_and_params(_status(ROOT))
    assert not stale, ("dvc.lock predates the code or params it records; run `make repro` "
                       f"and commit dvc.lock with its outputs: {stale}")


def test_the_lock_check_sees_code_params_and_commands_but_not_missing_data(tmp_path):
    """A real DVC project: missing data passes; code, params and command changes fail."""
    project = tmp_path / "p"
    (project / "pipeline").mkdir(parents=True)
    (project / "pipeline" / "step.py").write_text("print('v1')\n")
    (project / "params.yaml").write_text("step:\n  size: 1\n")
    (project / "dvc.yaml").write_text(
        "stages:\n"
        "  step:\n    cmd: python pipeline/step.py > out.txt\n"
        "    deps: [pipeline/step.py]\n    params: [step.size]\n    outs: [out.txt]\n"
        "  clock:\n    cmd: date > clock.txt\n    always_changed: true\n    outs: [clock.txt]\n")
    sh("git", "init", "-q", cwd=project)
    sh("dvc", "init", "-q", cwd=project)
    sh("dvc", "repro", "-q", cwd=project)
    assert stale_code_and_params(_status(project)) == []
    (project / "out.txt").unlink()  # as in a clean clone: outputs are not in git
    assert stale_code_and_params(_status(project)) == []
    (project / "pipeline" / "step.py").write_text("print('v2')\n")
    (project / "params.yaml").write_text("step:\n  size: 2\n")
    assert sorted(stale_code_and_params(_status(project))) == [
        "step: params.yaml step.size modified", "step: pipeline/step.py modified"]
    (project / "dvc.yaml").write_text((project / "dvc.yaml").read_text().replace("> out", ">> out"))
    assert "step: command changed" in stale_code_and_params(_status(project))
