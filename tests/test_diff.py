"""`pipeline.review.diff` (make diff) end to end on a real repository, and the
pull-request workflow that posts its report.

The report's pure parts (DVC's JSON to rows and Markdown) are in test_diff_markdown.py.
"""

import importlib.resources
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import ROOT, copy_project, sh
from pipeline.review import diff

WORKFLOWS = ROOT / ".github" / "workflows"


# ---------------------------------------------------------------- end to end

def _set_units(project: Path, model: str, old: int, new: int) -> None:
    params = project / "params.yaml"
    text = params.read_text()
    pattern = rf"(\n  {model}:\n(?:    .*\n)*?    units: ){old}\b"
    edited, n = re.subn(pattern, rf"\g<1>{new}", text)
    assert n == 1, f"models.{model}.units: {old} not found in params.yaml"
    params.write_text(edited)


def test_branch_that_changes_one_model_shows_exactly_that_model(tiny_repro, tmp_path):
    project = copy_project(tiny_repro, tmp_path / "project")
    sh("git", "checkout", "-q", "-b", "wider-gru", cwd=project)
    _set_units(project, "gru", 8, 12)
    repro = sh("dvc", "repro", cwd=project)
    assert "Running stage 'train@gru'" in repro.stdout
    out = tmp_path / "diff"

    result = diff.run("main", out, project=project)
    assert result["status"] == "compared"
    assert result["changed_models"] == ["gru"]
    assert [(p["param"], p["old"], p["new"]) for p in result["params"]] == [
        ("models.gru.units", 8, 12)]
    assert result["reran"] == ["train@gru", "evaluate"]
    assert result["stale"] == {}

    report = (out / "report.md").read_text()
    # gru changed; whether significantly, McNemar's test on the 200 test images says
    summary = re.search(r"\*\*Summary:\*\* (.*)", report).group(1)
    significant = result["significant_models"] == ["gru"]
    assert summary.startswith("Results changed for **gru**; rnn, lstm, bilstm unchanged"
                              if significant else "No model's results changed significantly; "
                              "within noise: gru (")
    assert re.search(r"- \*\*gru\*\*: [+-]\d+ images? \(\d+ fixed, \d+ broken\), p [=<] "
                     r"[0-9.]+: (significant|within noise)", report)
    assert "| `models.gru.units` | `8` | `12` | +4 (+50%) |" in report
    assert "| `train@gru` | params `models.gru.units` | in the workspace, not committed |" in report
    assert "Not rerun: `fetch`, `validate`, `split`, `train@rnn`, `train@lstm`, `train@bilstm`." \
        in report
    accuracy = report.split("## Accuracy")[1].split("## Training cost")[0]
    rows = {line.split(" | ")[0].strip("| *"): line for line in accuracy.splitlines()
            if line.startswith("| ") and not line.startswith("| model")}
    assert list(rows) == ["rnn", "lstm", "gru", "bilstm"]
    for name in ("rnn", "lstm", "bilstm"):
        assert rows[name].count("±0 pp") == 2 and rows[name].endswith("| ±0 |"), rows[name]
    assert rows["gru"].startswith("| **gru** |" if significant else "| gru |")
    cost = report.split("## Training cost")[1]
    assert "| 1,866 | 3,514 | +1,648 (+88%) |" in cost
    assert "gru Δ" in report and "rnn Δ" not in report  # per-class F1 only for gru
    for image in ("curves.png", "confusion.png"):
        assert f"]({image})" in report
        assert (out / image).read_bytes()[:4] == b"\x89PNG"
    assert (out / "plots" / "index.html").exists()

    # As a pull request sees it: the rerun committed on the branch.
    sh("git", "add", "-A", cwd=project)
    sh("git", "commit", "-q", "-m", "wider gru", cwd=project)
    proc = sh(sys.executable, "-m", "pipeline.review.diff", "--rev", "main", "--out", str(out),
              "--note", "from the test", cwd=project)
    assert "diff: report in" in proc.stdout
    report = (out / "report.md").read_text()
    assert "> from the test" in report
    assert "| `train@gru` | params `models.gru.units` | committed |" in report

    # A param edited without a rerun: flagged, not silently compared.
    _set_units(project, "rnn", 8, 10)
    result = diff.run("main", out, project=project)
    assert result["stale"] == {"train@rnn": ["params `models.rnn`"],
                               "evaluate": ["params `models`"]}
    assert result["changed_models"] == ["gru"]
    assert "**Out of date:**" in (out / "report.md").read_text()

    # The workspace lost its metrics: nothing to compare, said plainly.
    (project / "metrics" / "evaluate.json").unlink()
    result = diff.run("main", out, project=project)
    assert result["status"] == "no_metrics"
    assert "Nothing to compare: the workspace has no metrics" in (out / "report.md").read_text()


def test_same_revision_says_there_is_nothing_to_compare(tiny_repro, tmp_path):
    result = diff.run("main", tmp_path / "diff", project=tiny_repro)
    assert result["status"] == "same_revision"
    report = (tmp_path / "diff" / "report.md").read_text()
    assert ("Nothing to compare: the workspace and `main` are the same revision with no changes."
            in report)
    assert "|" not in report  # no empty tables


def test_revision_without_metrics_says_so(tiny_repro, tmp_path):
    # The fixture's first commit is the project before any `dvc repro`.
    proc = sh(sys.executable, "-m", "pipeline.review.diff", "--rev", "HEAD~1", "--out",
              str(tmp_path / "diff"), cwd=tiny_repro)
    assert "Nothing to compare: `HEAD~1` has no committed metrics (metrics/evaluate.json)" \
        in proc.stdout
    assert "has no committed metrics" in (tmp_path / "diff" / "report.md").read_text()


def test_unknown_revision_is_an_error(tiny_repro, tmp_path):
    proc = sh(sys.executable, "-m", "pipeline.review.diff", "--rev", "no-such-branch", "--out",
              str(tmp_path / "diff"), cwd=tiny_repro, check=False)
    assert proc.returncode == 2
    assert "no-such-branch: not a git revision" in proc.stderr


def test_make_diff_keeps_its_interface_and_output_is_not_committed():
    makefile = (ROOT / "Makefile").read_text()
    assert "REV ?= main" in makefile
    assert "-m pipeline.review.diff --rev $(REV)" in makefile
    ignored = subprocess.run(["git", "check-ignore", "-q", "reports/diff/report.md"], cwd=ROOT)
    assert ignored.returncode == 0


# ---------------------------------------------------------------- the workflows

class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans, as GitHub reads workflows: `on:` stays the string "on"."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|false)$"),
                                    list("tf"))


def _workflow(name: str) -> dict:
    return yaml.load((WORKFLOWS / name).read_text(), Loader=_Yaml12Loader)


def _schema() -> dict:
    # check-jsonschema vendors SchemaStore's github-workflow schema: no network needed.
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "github-workflows.json").read_text())


@pytest.mark.parametrize("name", ["pr-report.yml", "pr-report-comment.yml"])
def test_workflow_is_valid_against_githubs_schema(name):
    workflow = _workflow(name)
    jsonschema.Draft7Validator.check_schema(_schema())
    errors = list(jsonschema.Draft7Validator(_schema()).iter_errors(workflow))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            # Values reach scripts through env:, never ${{ }} pasted into shell.
            assert "${{" not in step.get("run", ""), step.get("name")


def _steps(workflow: dict) -> list[dict]:
    return [s for job in workflow["jobs"].values() for s in job["steps"]]


def test_pr_workflow_reruns_compares_and_updates_one_comment():
    workflow = _workflow("pr-report.yml")
    assert "pull_request" in workflow["on"]
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    steps = _steps(workflow)
    uses = {s["uses"].split("@")[0]: s for s in steps if "uses" in s}
    assert uses["actions/checkout"]["with"]["fetch-depth"] == 0
    assert uses["actions/setup-python"]["with"]["python-version"] == "3.11"
    assert "iterative/setup-cml" in uses
    runs = {s.get("id"): s for s in steps if "run" in s}
    assert runs["pull"]["run"] == "dvc pull" and runs["pull"]["continue-on-error"]
    assert runs["repro"]["run"] == "dvc repro --pull"
    for step in (runs["pull"], runs["repro"]):  # only with a remote, i.e. secrets
        assert step["if"] == "steps.remote.outputs.configured == 'true'"
    assert "secrets.DVC_REMOTE_URL" in runs["remote"]["env"]["DVC_REMOTE_URL"]
    assert 'rnn-diff --rev "origin/$BASE_REF"' in runs["report"]["run"]
    assert "not rerun" in runs["report"]["run"]  # the note when secrets are missing
    comment = next(s for s in steps if "cml comment" in s.get("run", ""))
    assert "cml comment update" in comment["run"]
    assert '--watermark-title="pipeline diff"' in comment["run"]
    assert 'pr/$PR_NUMBER' in comment["run"]


def test_fork_reports_are_posted_by_a_workflow_that_never_runs_fork_code():
    report, poster = _workflow("pr-report.yml"), _workflow("pr-report-comment.yml")
    assert poster["on"]["workflow_run"]["workflows"] == [report["name"]]
    assert not any(s.get("uses", "").startswith("actions/checkout") for s in _steps(poster))
    comment = next(s for s in _steps(poster) if "cml comment" in s.get("run", ""))
    assert '--watermark-title="pipeline diff"' in comment["run"]  # the same comment


def test_secrets_are_documented_in_the_workflow_and_the_docs():
    header = (WORKFLOWS / "pr-report.yml").read_text().split("\nname:")[0]
    docs = (ROOT / "docs" / "pr-report.md").read_text()
    used = set(re.findall(r"secrets\.([A-Z_]+)", (WORKFLOWS / "pr-report.yml").read_text()))
    assert "DVC_REMOTE_URL" in used
    for secret in used - {"GITHUB_TOKEN"}:
        assert secret in header, secret
        assert secret in docs, secret
    assert "make diff REV=" in docs and "fork" in docs


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("name", ["pr-report.yml", "pr-report-comment.yml"])
def test_workflow_scripts_pass_shellcheck(name):
    for step in _steps(_workflow(name)):
        if "run" in step:
            proc = subprocess.run(["shellcheck", "-s", "bash", "-"], input=step["run"],
                                  capture_output=True, text=True)
            assert proc.returncode == 0, f"{step.get('name')}:\n{proc.stdout}"
