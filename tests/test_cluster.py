"""The DAG on a real cluster whose workers share nothing (cluster/up.sh).

PostgreSQL, Redis, Airflow's api-server, scheduler and dag-processor, two
Celery workers isolated in mount and UTS namespaces, a git daemon as the git
remote and a moto S3 server as the DVC remote, all started for real on this
machine. The DAG comes from the git remote (GitDagBundle) at the pushed
commit, on the tiny fixture. Needs root (namespaces, Debian packages):
`make test-cluster`; `.ci/run` runs it.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml

from cluster_harness import Cluster, api_login, api_status, beyond_loopback, listening
from conftest import make_project, remote_holds_everything, sh, untimed

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                 reason="the cluster needs root and unshare")]
WORKERS = {"worker-a", "worker-b"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster")
    project = make_project(base / "project")
    cluster = Cluster(base / "state", project)
    cluster.down()  # a cluster left over by an interrupted session
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


def remote_ref(cluster: Cluster, ref: str) -> str:
    out = sh("git", "ls-remote", cluster.git_url, ref, cwd=cluster.project).stdout.split()
    return out[0] if out else ""


def record_clone(cluster: Cluster, dest) -> object:
    """The run record from the git remote, wired to the S3 remote (directly, not the relay)."""
    sh("git", "clone", "-q", "--branch", "pipeline-runs", cluster.git_url, str(dest),
       cwd=cluster.project)
    for key, value in (("url", "s3://rnn-mnist/dvc"),
                       ("endpointurl", f"http://127.0.0.1:{cluster.s3_port}")):
        sh("dvc", "remote", "modify", "--local", "storage", key, value, cwd=dest)
    return dest


S3_ENV = {"AWS_ACCESS_KEY_ID": "cluster", "AWS_SECRET_ACCESS_KEY": "cluster",
          "AWS_DEFAULT_REGION": "us-east-1"}


def new_commit(cluster: Cluster, **train) -> None:
    """A change of ``train`` params (seed, epochs) that makes every training run again."""
    params = cluster.project / "params.yaml"
    text = params.read_text()
    for key, value in train.items():
        old = f"{key}: {yaml.safe_load(text)['train'][key]} "
        at = text.index(old, text.index("\ntrain:"))
        text = text[:at] + f"{key}: {value} " + text[at + len(old):]
    params.write_text(text)
    sh("git", "commit", "-qam", f"train {train}", cwd=cluster.project)


@pytest.fixture(scope="module")
def first_run(cluster):
    cluster.trigger("first")
    assert cluster.wait_run("first") == "success", cluster.describe()
    return cluster.tasks("first")


@pytest.fixture(scope="module")
def faulty_run(first_run, cluster, tmp_path_factory):
    """A second run (new seed) that meets both faults, one after the other:
    the S3 remote goes down once validate is done, and comes back as soon as
    a task failed on it; then every process of the worker running a training
    is killed once that training's state reached the S3 remote (the worker is
    started again after the run). Trainings are longer than the first run's."""
    new_commit(cluster, seed=7, epochs=40)
    before = remote_ref(cluster, "refs/heads/pipeline-runs")
    cluster.trigger("faulty")
    cluster.wait("validate to finish", 300, lambda: any(
        t["task"] == "validate" and t["state"] == "success" for t in cluster.tasks("faulty")))
    cluster.proxy.down()
    try:
        s3_failed = cluster.wait("a task to fail on the S3 remote", 300, lambda: [
            t for t in cluster.tasks("faulty") if t["state"] == "up_for_retry"])[0]
        record_while_down = remote_ref(cluster, "refs/heads/pipeline-runs")
    finally:
        cluster.proxy.up()
    victim = cluster.wait("a training to start", 300, lambda: [
        t for t in cluster.tasks("faulty") if t["task"] == "train" and t["state"] == "running"])[0]
    cluster.wait("the training's state in the S3 remote", 120, lambda: "state saved to DVC remote"
                 in cluster.task_log(victim["host"], "faulty", "train", victim["try"],
                                     victim["index"]), every=1)
    killed = cluster.kill_worker(victim["host"])
    record_after_kill = remote_ref(cluster, "refs/heads/pipeline-runs")
    try:
        state = cluster.wait_run("faulty", 900)
    finally:
        cluster.script("up.sh")   # the worker back
    leftover = list((cluster.folder / "workers" / victim["host"] / "work").glob("faulty/*"))
    record = record_clone(cluster, tmp_path_factory.mktemp("faulty") / "record")
    return {"state": state, "tasks": cluster.tasks("faulty"), "before": before, "record": record,
            "s3_failed": s3_failed, "record_while_down": record_while_down,
            "s3_log": cluster.task_log(s3_failed["host"], "faulty", s3_failed["task"],
                                       s3_failed["try"], s3_failed["index"]),
            "victim": victim, "killed": killed, "record_after_kill": record_after_kill,
            "leftover": leftover}


def test_a_run_spreads_over_both_workers_and_trainings_overlap(first_run):
    tasks = first_run
    assert {t["state"] for t in tasks} == {"success"}, tasks
    assert {t["host"] for t in tasks} == WORKERS
    trains = [t for t in tasks if t["task"] == "train"]
    assert len(trains) == 4
    overlapping = [(a, b) for a in trains for b in trains
                   if a["host"] != b["host"] and a["start"] < b["end"] and b["start"] < a["end"]]
    assert overlapping, "no two trainings ran at once on different workers"


def test_the_record_is_on_the_git_remote_and_the_s3_remote_holds_everything(
        first_run, cluster, tiny_repro, tmp_path):
    record = record_clone(cluster, tmp_path / "record")
    assert remote_holds_everything(record, **S3_ENV)
    sh("dvc", "pull", cwd=record, **S3_ENV)
    assert "up to date" in sh("dvc", "status", cwd=record).stdout
    ours = yaml.safe_load((record / "dvc.lock").read_text())["stages"]
    plain = yaml.safe_load((tiny_repro / "dvc.lock").read_text())["stages"]
    assert list(ours) == list(plain)
    for stage in plain:   # the same code, params, data, checkpoints as a plain `dvc repro`
        for kind in ("deps", "outs"):
            assert untimed(ours[stage][kind]) == untimed(plain[stage][kind]), (stage, kind)
    message = sh("git", "log", "-1", "--format=%B", "HEAD", cwd=record).stdout
    assert "retrain first: champion replaced" in message
    assert "worker-a" in message and "worker-b" in message
    # the champion is published and registered as the production version
    card = json.loads((record / "models/champion/card.json").read_text())
    assert card["model"] == json.loads((record / "metrics/evaluate.json").read_text())["champion"]
    assert remote_ref(cluster, "refs/tags/champion@v0.0.1")
    assert remote_ref(cluster, "refs/tags/champion#prod#1")


def test_a_killed_worker_s_training_finishes_on_the_other(faulty_run, cluster):
    victim = faulty_run["victim"]
    assert faulty_run["killed"] > 0
    assert faulty_run["record_after_kill"] == faulty_run["before"]   # champion untouched
    assert faulty_run["state"] == "success", faulty_run["tasks"]
    retried = [t for t in faulty_run["tasks"]
               if t["task"] == "train" and t["index"] == victim["index"]][0]
    assert retried["try"] > victim["try"] and retried["host"] != victim["host"], retried
    log = cluster.task_log(retried["host"], "faulty", "train", retried["try"], retried["index"])
    # it went on from the state the dead worker had saved, not from the first check
    assert "fetched from DVC remote" in log and "(resuming)" in log, log[-3000:]
    assert faulty_run["leftover"] == [], "the restarted worker kept the killed try's workspace"
    record = faulty_run["record"]
    assert remote_holds_everything(record, **S3_ENV)   # nothing lost
    assert sh("git", "rev-parse", "HEAD~1", cwd=record).stdout.strip() == faulty_run["before"]
    assert "retrain faulty:" in sh("git", "log", "-1", "--format=%s", cwd=record).stdout


def test_the_s3_remote_down_is_retried_and_the_champion_never_half_changes(faulty_run):
    failed, log = faulty_run["s3_failed"], faulty_run["s3_log"]
    assert "DVC remote 'storage'" in log and "retried later" in log, log[-3000:]
    retried = [t for t in faulty_run["tasks"] if (t["task"], t["index"]) ==
               (failed["task"], failed["index"])][0]
    assert retried["state"] == "success" and retried["try"] > failed["try"]
    # the published champion did not move while the remote was down, and the new
    # record's champion and data are all in the remote
    assert faulty_run["record_while_down"] == faulty_run["before"]
    assert remote_holds_everything(faulty_run["record"], **S3_ENV)


def test_cluster_trigger_runs_the_commit_it_pushed_and_nothing_else(first_run, cluster):
    runs = cluster.query("SELECT run_id, run_type, bundle_version FROM dag_run ORDER BY id")
    assert runs, "no run"
    for run_id, run_type, version in runs:   # the DAG is on @weekly, and unpaused
        assert run_type == "manual" and run_id in cluster.triggered, f"unrequested run {run_id}"
        assert version == cluster.triggered[run_id], f"{run_id} ran {version}"


def test_nothing_the_cluster_started_listens_beyond_loopback(cluster):
    found = listening(cluster.pids())
    ports = {int(a.rsplit(":", 1)[1]) for addresses in found.values() for a in addresses}
    env, logs = cluster.env, int(cluster.env["LOG_PORT_BASE"])
    servers = {"PostgreSQL": env["PG_PORT"], "Redis": env["REDIS_PORT"],
               "API server": env["API_PORT"], "S3 server": env["S3_PORT"],
               "git daemon": env["GIT_PORT"], "worker-a's log server": logs,
               "worker-b's log server": logs + 1}
    missing = [name for name, port in servers.items() if int(port) not in ports]
    assert not missing, f"not among the cluster's sockets: {missing}\n{found}"
    assert beyond_loopback(found) == {}, found


def test_the_api_answers_only_with_a_login(cluster):
    base = f"http://127.0.0.1:{cluster.env['API_PORT']}"
    variable = {"key": "probe", "value": "x"}
    assert api_status("GET", f"{base}/api/v2/connections") in (401, 403)
    assert api_status("POST", f"{base}/api/v2/variables", body=variable) in (401, 403)
    assert api_status("DELETE", f"{base}/api/v2/variables/probe") in (401, 403)
    for name in ("passwords.json", "secrets.env"):   # generated for this cluster, root only
        assert (cluster.folder / name).stat().st_mode & 0o077 == 0, name
    token = api_login(base, cluster.folder / "passwords.json")
    assert api_status("GET", f"{base}/api/v2/connections", token) == 200
    assert api_status("POST", f"{base}/api/v2/variables", token, variable) in (200, 201)
    assert api_status("DELETE", f"{base}/api/v2/variables/probe", token) == 204
