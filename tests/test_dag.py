"""The Airflow DAG (dags/retrain.py) with real Airflow on a SQLite metadata DB.

Parsing: the DAG folder loads in a DagBag without errors, with its schedule,
retries, timeouts, pool and retry policy; importing it is cheap. Running:
`airflow dags test retrain` takes a fresh tiny project end to end, and a run
whose data fails validation stops at validate without touching the champion.
Airflow runs in subprocesses so its config (AIRFLOW_HOME) never leaks into
this process.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, copy_project, make_project, sh, untimed
from pipeline import config

DAG_ID = "retrain"
STAGE_TASKS = ("fetch", "validate", "split", "train", "evaluate")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory) -> dict:
    """A private AIRFLOW_HOME with a migrated SQLite DB and the `training` pool."""
    home = tmp_path_factory.mktemp("airflow")
    env = {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags")}
    sh("airflow", "db", "migrate", cwd=home, **env)
    sh("airflow", "pools", "set", "training", "2", "models that train at once", cwd=home, **env)
    return env


def python(code: str, airflow: dict, *args: str) -> dict:
    """Run a snippet in a fresh interpreter with the Airflow env; it prints JSON."""
    return json.loads(sh(sys.executable, "-c", code, *args, cwd=ROOT, **airflow).stdout
                      .strip().splitlines()[-1])


DAGBAG = (Path(__file__).parent / "dagbag_facts.py").read_text()


@pytest.fixture(scope="module")
def dagbag(airflow) -> dict:
    return python(DAGBAG, airflow, str(ROOT / "dags"))


def test_dag_folder_imports_without_errors(dagbag):
    assert dagbag["errors"] == {}
    assert dagbag["dags"] == [DAG_ID, "retrain_watch"]
    dag = dagbag[DAG_ID]
    assert set(dag["tasks"]) == {*STAGE_TASKS, "publish"}
    assert dag["tags"] and "dvc" in dag["tags"]
    assert dag["doc"].strip().startswith("### retrain")
    assert (dag["schedule"], dag["catchup"], dag["max_active_runs"]) == ("0 0 * * 0", False, 1)  # @weekly
    assert dag["assets"] == ["retrain_source"]   # ... or when the dataset's source changed
    assert dag["first_run_in_future"], "unpausing would start a run for a week already past"
    watch = dagbag["retrain_watch"]
    assert (watch["schedule"], watch["catchup"], watch["first_run_in_future"]) == ("0 * * * *", False, True)
    assert watch["tasks"]["watch"]["inlets"] == watch["tasks"]["watch"]["outlets"] == ["retrain_source"]
    assert dagbag["overridden"] == {"schedule": "0 3 * * 1", "pool": "gpus", "watch": "*/5 * * * *"}
    assert dagbag["no_clock"] == {"timetable": "AssetTriggeredTimetable", "assets": ["retrain_source"]}


def test_every_task_retries_with_backoff_and_has_a_timeout(dagbag):  # of retrain
    tasks = dagbag[DAG_ID]["tasks"]
    for name, task in tasks.items():
        assert task["retries"] >= 1 and task["backoff"] >= 2 and task["retry_delay_s"] > 0, name
        assert task["max_retry_delay_s"] and task["timeout_s"], name
        # bad data or params fail at once; an unreachable mirror or remote is retried
        assert task["policy"] == {"DataValidationError": "fail", "ParamsError": "fail",
                                  "RemoteUnavailable": "retry", "StageFailed": "default"}, name
    assert tasks["train"]["timeout_s"] > max(t["timeout_s"] for n, t in tasks.items() if n != "train")


def test_trainings_are_one_mapped_task_in_the_training_pool(dagbag):
    tasks = dagbag[DAG_ID]["tasks"]
    assert tasks["train"]["mapped"] and tasks["train"]["pool"] == "training"
    assert [n for n, t in tasks.items() if t["mapped"]] == ["train"]
    assert tasks["publish"]["outlets"] == ["retrain_champion"]
    # publish runs only when every training and the evaluation succeeded
    assert tasks["publish"]["upstream"] == ["evaluate"] and tasks["evaluate"]["upstream"] == ["train"]
    assert {tasks[n]["trigger_rule"] for n in ("train", "evaluate", "publish")} == {"all_success"}


def _dvc_edges() -> set[tuple[str, str]]:
    """stage -> stage edges implied by dvc.yaml: a dep inside (or around) another's output."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    deps, outs = {}, {}
    for name, spec in stages.items():
        spec = spec.get("do", spec)
        deps[name] = spec.get("deps", [])
        outs[name] = [next(iter(o)) if isinstance(o, dict) else o
                      for kind in ("outs", "metrics", "plots") for o in spec.get(kind, [])]

    def inside(a, b):
        a, b = a.split("${")[0].rstrip("/"), b.split("${")[0].rstrip("/")
        return a == b or a.startswith(b + "/") or b.startswith(a + "/")
    return {(t, s) for s in stages for t in stages
            if t != s and any(inside(d, o) for d in deps[s] for o in outs[t])}


def test_dag_follows_dvc_yaml(dagbag):
    tasks = dagbag[DAG_ID]["tasks"]
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert tuple(stages) == STAGE_TASKS  # task ids are the DVC stage names
    dag_edges = {(u, name) for name, t in tasks.items() for u in t["upstream"] if name != "publish"}
    closure = set(dag_edges)
    while True:
        more = {(a, d) for a, b in closure for c, d in closure if b == c} - closure
        if not more:
            break
        closure |= more
    dvc_edges = _dvc_edges()
    assert dag_edges <= dvc_edges, "the DAG orders stages that DVC does not"
    assert dvc_edges <= closure, "a stage could run before one it depends on"


IMPORT = r"""
import importlib.util, json, sys, time
import airflow.sdk  # the DAG processor has this loaded before it parses a DAG file
opened, connects = [], []
def audit(event, args):
    if event == "open" and isinstance(args[0], str):
        opened.append(args[0])
    elif event == "socket.connect":
        connects.append(str(args[1]))
sys.addaudithook(audit)
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("retrain_dag", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
seconds = time.perf_counter() - start
heavy = [m for m in ("tensorflow", "keras", "dvc", "great_expectations", "dvclive")
         if m in sys.modules]
print(json.dumps({"seconds": seconds, "heavy": heavy, "connects": connects,
                  "read": [p for p in opened if not p.endswith((".py", ".pyc"))
                           and not p.startswith("/dev/")]}))
"""


def test_parsing_the_dag_is_cheap(airflow):
    facts = python(IMPORT, airflow, str(ROOT / "dags" / "retrain.py"))
    assert facts["seconds"] < 1.0, facts
    assert facts["heavy"] == [] and facts["connects"] == []
    assert not [p for p in facts["read"] if p.startswith(str(ROOT))], facts["read"]


def task_states(airflow: dict) -> dict:
    """(task_id, rendered map index or None) -> (state, try_number) of the latest run."""
    db = sqlite3.connect(Path(airflow["AIRFLOW_HOME"]) / "airflow.db")
    try:
        run_id = db.execute("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
                            (DAG_ID,)).fetchone()[0]
        rows = db.execute("SELECT task_id, map_index, rendered_map_index, state, try_number "
                          "FROM task_instance WHERE dag_id = ? AND run_id = ? ORDER BY map_index",
                          (DAG_ID, run_id)).fetchall()
    finally:
        db.close()
    return {(t, r if m >= 0 else None): (s, n) for t, m, r, s, n in rows}


def dags_test(airflow: dict, project: Path, **env: str):
    started = time.monotonic()
    proc = sh("airflow", "dags", "test", DAG_ID, cwd=project, check=False, **{**airflow, **env})
    return proc, time.monotonic() - started


@pytest.fixture(scope="module")
def dag_run(airflow, tmp_path_factory):
    """A fresh tiny project taken through the whole DAG by `airflow dags test`.

    The DAG comes from the project's own dags/ folder, so the project directory
    is found the default way (the folder above dags/).
    """
    project = make_project(tmp_path_factory.mktemp("dag") / "project")
    proc, seconds = dags_test(airflow, project, AIRFLOW__CORE__DAGS_FOLDER=str(project / "dags"))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    print(f"\nairflow dags test {DAG_ID}: {seconds:.0f} s on the tiny fixture")
    return project, proc.stdout + proc.stderr, task_states(airflow)


def test_dags_test_runs_every_task_to_success(dag_run, airflow):
    project, output, states = dag_run
    models = list(config.load(project / "params.yaml").models)
    expected = {(t, None) for t in ("fetch", "validate", "split", "evaluate", "publish")}
    expected |= {("train", m) for m in models}  # train[rnn], train[lstm], ...
    assert set(states) == expected
    assert {s for s, _ in states.values()} == {"success"}, states
    # every stage ran in a clone of its own: the checkout is untouched ...
    assert not (project / "dvc.lock").exists() and not (project / "data" / "raw").exists()
    assert not any((project / "tmp" / "workspaces").glob("*/*/dvc.yaml"))  # cleaned up
    # ... and the run's record says what plain `dvc repro` would
    locked = yaml.safe_load(sh("git", "show", "pipeline-runs:dvc.lock", cwd=project).stdout)
    assert list(locked["stages"]) == ["fetch", "validate", "split",
                                      *(f"train@{m}" for m in models), "evaluate"]


def test_the_run_record_equals_a_plain_dvc_repro(dag_run, tiny_repro, tmp_path):
    project = dag_run[0]
    record = tmp_path / "record"
    sh("git", "clone", "-q", "--branch", "pipeline-runs", str(project), str(record), cwd=tmp_path)
    sh("dvc", "remote", "modify", "--local", "storage", "url",
       str(project.parent / "project-remote"), cwd=record)
    sh("dvc", "pull", cwd=record)
    assert "up to date" in sh("dvc", "status", cwd=record).stdout
    plain = yaml.safe_load((tiny_repro / "dvc.lock").read_text())["stages"]
    ours = yaml.safe_load((record / "dvc.lock").read_text())["stages"]
    assert list(ours) == list(plain)
    for stage in plain:  # same code, params, data and outputs, checksum for checksum ...
        assert (ours[stage]["cmd"], ours[stage].get("params")) == \
            (plain[stage]["cmd"], plain[stage].get("params")), stage
        for kind in ("deps", "outs"):
            assert untimed(ours[stage][kind]) == untimed(plain[stage][kind]), (stage, kind)
    best = [yaml.safe_load((p / "models/best/card.json").read_text())["model"]
            for p in (record, tiny_repro)]
    assert best[0] == best[1]
    assert (record / "models/best/model.keras").read_bytes() == \
        (tiny_repro / "models/best/model.keras").read_bytes()
    for model in config.load(record / "params.yaml").models:  # training metrics, less the clock
        ours, plain = (json.loads((p / f"metrics/train/{model}/metrics.json").read_text())
                       for p in (record, tiny_repro))
        clock = dict.fromkeys(("wall_time_s", "seconds_per_epoch", "seconds_to_reference_val"))
        assert {**ours, **clock} == {**plain, **clock}, model
    for rel in ("metrics/evaluate.json", "metrics/validate.json", "reports/report.md"):
        assert (record / rel).exists(), rel


def test_dags_test_publishes_the_champion(dag_run, airflow):
    project, output, _ = dag_run
    card = json.loads(sh("git", "show", "pipeline-runs:metrics/evaluate.json", cwd=project)
                      .stdout)["champion"]
    assert "publish: champion replaced: " + card in output
    assert sh("git", "cat-file", "-e", "pipeline-runs:models/champion.dvc", cwd=project)
    message = sh("git", "log", "-1", "--format=%B", "pipeline-runs", cwd=project).stdout
    assert "champion replaced" in message and "ran on:" in message
    db = sqlite3.connect(Path(airflow["AIRFLOW_HOME"]) / "airflow.db")
    try:
        name, extra = db.execute("SELECT a.name, e.extra FROM asset_event e JOIN asset a "
                                 "ON a.id = e.asset_id ORDER BY e.id DESC LIMIT 1").fetchone()
    finally:
        db.close()
    extra = json.loads(extra)
    assert name == "retrain_champion"
    assert (extra["decision"], extra["model"]) == ("replaced", card)


def test_a_run_that_changed_nothing_trains_nothing_and_says_so(dag_run, airflow, tmp_path):
    project = copy_project(dag_run[0], tmp_path / "same")
    record = sh("git", "rev-parse", "pipeline-runs", cwd=project).stdout
    first = sh("git", "log", "-1", "--format=%s", "pipeline-runs", cwd=project).stdout
    proc, seconds = dags_test(airflow, project, PIPELINE_PROJECT_DIR=str(project))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    run_id = first.removeprefix("retrain ").split(": ")[0]
    assert f"retrain: nothing changed since run {run_id} (data, code, params): no training" \
        in output
    assert "Running stage 'train" not in output and "Running stage 'validate'" in output
    states = task_states(airflow)
    assert {t: s for (t, _), (s, _) in states.items()} == {
        "fetch": "success", "validate": "success", "split": "success",
        "train": "skipped", "evaluate": "skipped", "publish": "skipped"}
    assert sh("git", "rev-parse", "pipeline-runs", cwd=project).stdout == record  # no new record
    print(f"\nnothing changed: {seconds:.0f} s")


def test_failed_validation_stops_the_run_and_keeps_the_champion(dag_run, airflow, tmp_path):
    project = copy_project(dag_run[0], tmp_path / "bad")
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("class_share_max: 0.25", "class_share_max: 0.12"))
    sh("git", "commit", "-q", "-am", "tighter class share bounds", cwd=project)
    record = sh("git", "rev-parse", "pipeline-runs", cwd=project).stdout

    # This time the DAG comes from the repository and is pointed at the project.
    proc, seconds = dags_test(airflow, project, PIPELINE_PROJECT_DIR=str(project))
    assert proc.returncode != 0 and "DagRun failed" in proc.stdout + proc.stderr
    output = proc.stdout + proc.stderr
    assert "validate: error: 1 of" in output and "class_share" in output
    assert "not retried" in output
    states = task_states(airflow)
    assert states[("fetch", None)][0] == "success"
    assert states[("validate", None)] == ("failed", 1)  # failed on the first try, no retry
    for task in ("split", "train", "evaluate", "publish"):
        assert states[(task, None)][0] == "upstream_failed", task
    assert sh("git", "rev-parse", "pipeline-runs", cwd=project).stdout == record
