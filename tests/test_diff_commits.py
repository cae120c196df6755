"""`rnn-diff --base A --head B`: two commits compared as committed, whatever the
workspace holds (pipeline/review/checkout.py), on a real repository."""

import subprocess
import sys

from conftest import copy_project, sh


def _set_gru_units(project, old: int, new: int) -> None:
    params = project / "params.yaml"
    text = params.read_text()
    head, tail = text.split("\n  gru:\n", 1)
    params.write_text(head + "\n  gru:\n" + tail.replace(f"units: {old}", f"units: {new}", 1))


def test_two_commits_compare_as_committed_not_as_the_workspace(tiny_repro, tmp_path):
    project = copy_project(tiny_repro, tmp_path / "project")
    sh("git", "checkout", "-q", "-b", "wider-gru", cwd=project)
    _set_gru_units(project, 8, 12)
    sh("dvc", "repro", cwd=project)
    sh("git", "add", "-A", cwd=project)
    sh("git", "commit", "-q", "-m", "wider gru", cwd=project)
    # The workspace is elsewhere: main checked out, and an uncommitted edit on top.
    sh("git", "checkout", "-q", "main", cwd=project)
    _set_gru_units(project, 8, 9)
    before = [sh("git", *cmd, cwd=project).stdout for cmd in (("status", "--porcelain"),
                                                              ("rev-parse", "HEAD"))]
    out = tmp_path / "diff"

    proc = sh(sys.executable, "-m", "pipeline.review.diff", "--base", "main", "--head", "wider-gru",
              "--out", str(out), cwd=project)
    assert "diff: report in" in proc.stdout
    report = (out / "report.md").read_text()
    assert "Both sides as committed: `wider-gru`" in report
    assert "| `models.gru.units` | `8` | `12` | +4 (+50%) |" in report  # not the workspace's 9
    assert "| `train@gru` | params `models.gru.units` | committed |" in report
    assert "**Out of date:**" not in report  # the head's dvc.lock matches its own code
    assert "| test acc main | test acc wider-gru |" in report  # the head's name heads its columns
    assert [sh("git", *cmd, cwd=project).stdout for cmd in (("status", "--porcelain"),
                                                           ("rev-parse", "HEAD"))] == before

    # A relative base is the checkout's: HEAD (main) against the branch, the other way round.
    sh(sys.executable, "-m", "pipeline.review.diff", "--base", "HEAD", "--head", "wider-gru",
       "--out", str(out), cwd=project)
    assert "| `models.gru.units` | `8` | `12` | +4 (+50%) |" in (out / "report.md").read_text()


def test_unknown_head_is_one_line_and_exit_2(tiny_repro, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.review.diff", "--base", "main",
                           "--head", "no-such-branch", "--out", str(tmp_path / "diff")],
                          cwd=tiny_repro, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"diff: error: no-such-branch: not a git revision of {tiny_repro}")
