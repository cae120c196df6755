"""New data starts `retrain` (dags/retrain.py: `retrain_watch`, the asset `retrain_source`).

On real Airflow with a SQLite metadata DB: `airflow dags test retrain_watch`
fingerprints a local mirror; the first look and a changed file each emit an
event of `retrain_source`, which queues a run of the unpaused `retrain`, and a
real scheduler turns the queued event into an asset-triggered run; an unchanged
mirror skips the task and emits nothing. (That such a run trains nothing when
DVC finds nothing changed: tests/test_dag.py.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from conftest import FIXTURE_DIR, TINY_PARAMS, sh, tool_env
from test_dag import airflow  # noqa: F401  (fixture: a private AIRFLOW_HOME, migrated)


def query(airflow: dict, sql: str) -> list[tuple]:
    db = sqlite3.connect(Path(airflow["AIRFLOW_HOME"]) / "airflow.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def scheduled_run(airflow: dict, project: Path, env: dict, within_s: float = 180.0) -> list:
    """Run a real scheduler until it has created retrain's run, then stop it and its workers.

    Not ``--num-runs`` alone: where its loops reach the run's first task, the
    LocalExecutor starts it, and on exit the scheduler waits for that task, which
    has no API server to talk to here (seen: a 15-minute hang under load).
    """
    sql = "SELECT run_type FROM dag_run WHERE dag_id = 'retrain'"
    proc = subprocess.Popen(["airflow", "scheduler", "--skip-serve-logs"], cwd=project,
                            env=tool_env(**env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline and proc.poll() is None and not query(airflow, sql):
            time.sleep(1)
        return query(airflow, sql)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=20)
                break
            except subprocess.TimeoutExpired:
                continue


def test_a_changed_source_starts_retrain_and_an_unchanged_one_does_not(airflow, tmp_path):
    mirror = Path(shutil.copytree(FIXTURE_DIR, tmp_path / "mirror"))
    project = tmp_path / "project"     # the watcher reads only its params.yaml
    project.mkdir()
    shutil.copy2(TINY_PARAMS, project / "params.yaml")
    env = {**airflow, "DATA_MIRROR_DIR": str(mirror), "PIPELINE_PROJECT_DIR": str(project)}
    sh("airflow", "dags", "reserialize", cwd=project, **env)
    sh("airflow", "dags", "unpause", "retrain", cwd=project, **env)

    def look() -> tuple[str, list[dict], list[str], str]:
        proc = sh("airflow", "dags", "test", "retrain_watch", cwd=project, **env)
        events = [json.loads(e) for (e,) in query(airflow, (
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.name = 'retrain_source' ORDER BY e.id"))]
        queued = [d for (d,) in query(airflow, "SELECT target_dag_id FROM asset_dag_run_queue")]
        state = query(airflow, "SELECT state FROM task_instance WHERE dag_id = 'retrain_watch' "
                               "ORDER BY start_date DESC LIMIT 1")[0][0]
        return proc.stdout + proc.stderr, events, queued, state

    output, events, queued, state = look()           # the first look: an event
    assert state == "success" and f"retrain_watch: {mirror} changed" in output
    assert len(events) == 1 and events[0]["fingerprint"]["source"] == str(mirror)
    assert queued == ["retrain"]
    # a real scheduler turns the queued event into a run of retrain
    assert scheduled_run(airflow, project, env) == [("asset_triggered",)]

    output, events, queued, state = look()           # nothing changed: no event
    assert state == "skipped" and "unchanged since" in output
    assert len(events) == 1 and queued == []

    labels = mirror / "t10k-labels-idx1-ubyte.gz"     # new data arrives
    labels.write_bytes(labels.read_bytes() + b"\0")
    output, events, queued, state = look()
    assert state == "success" and "changed (t10k-labels-idx1-ubyte.gz)" in output
    assert len(events) == 2 and queued == ["retrain"]
    assert events[1]["fingerprint"]["files"]["t10k-images-idx3-ubyte.gz"] == \
        events[0]["fingerprint"]["files"]["t10k-images-idx3-ubyte.gz"]
