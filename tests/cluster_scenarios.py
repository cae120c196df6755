"""The runs tests/test_cluster.py makes on one cluster, each meeting its faults.

Why a module of its own: starting the cluster costs a minute, so one cluster
(module-scoped) serves every scenario, one run after another, and the tests
only read what a run left behind. Each fixture returns what its faults' tests
assert on; the timings and tries become rows of the fault table
(tests/fault_table.py).

- ``first_run``: nothing breaks.
- ``faulty_run``: the S3 remote goes down after ``validate``; then, once every
  training has a slot, the worker of one whose state reached the S3 remote is
  killed (``kill -9`` of its whole namespace) and its supervisor starts it again.
- ``restarts_run``: with trainings waiting in Redis, Redis is restarted, then
  PostgreSQL; when ``publish`` starts, the git remote goes away until its first
  try has failed.
"""

from __future__ import annotations

import os
import re
import signal
from datetime import datetime, timezone

import pytest

from cluster_harness import Cluster
from conftest import make_project, sh
from pipeline import config
from pipeline.orchestration import resume


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


def record_clone(cluster: Cluster, dest):
    """The run record from the git remote, wired to the S3 remote (directly, not the relay)."""
    sh("git", "clone", "-q", "--branch", "pipeline-runs", cluster.git_url, str(dest),
       cwd=cluster.project)
    for key, value in (("url", "s3://rnn-mnist/dvc"),
                       ("endpointurl", f"http://127.0.0.1:{cluster.s3_port}")):
        sh("dvc", "remote", "modify", "--local", "storage", key, value, cwd=dest)
    return dest


def new_commit(cluster: Cluster, **train) -> None:
    """A change of ``train`` params (seed, epochs) that makes every training run again."""
    params = cluster.project / "params.yaml"
    text, now = params.read_text(), config.load(params).train
    for key, value in train.items():
        old = f"{key}: {getattr(now, key)} "
        at = text.index(old, text.index("\ntrain:"))
        text = text[:at] + f"{key}: {value} " + text[at + len(old):]
    params.write_text(text)
    sh("git", "commit", "-qam", f"train {train}", cwd=cluster.project)


def task(cluster: Cluster, run: str, name: str, state: str | None = None) -> dict | None:
    return next((t for t in cluster.tasks(run) if t["task"] == name
                 and (state is None or t["state"] == state)), None)


@pytest.fixture(scope="module")
def first_run(cluster):
    cluster.trigger("first")
    assert cluster.wait_run("first") == "success", cluster.describe()
    return cluster.tasks("first")


def _victim(cluster: Cluster, run: str, checks: int = 3) -> dict | None:
    """A running training with ``checks`` checks' state in the S3 remote, once no training
    waits for a slot (a retry then needs no slot another training holds)."""
    trains = [t for t in cluster.tasks(run) if t["task"] == "train"]
    if len(trains) < 4 or any(t["state"] not in ("running", "success") for t in trains):
        return None
    return next((t for t in trains if t["state"] == "running" and max(map(int, re.findall(
        r"state after check (\d+) saved to DVC remote",
        cluster.task_log(t["host"], run, "train", t["try"], t["index"]))), default=0) >= checks),
        None)


def _back(cluster: Cluster, name: str, lives: int) -> bool:
    """NAME's supervisor started it again and the new life is ready."""
    log = cluster.log(name)
    return cluster.lives(name) > lives and " ready." in log.rsplit("supervise:", 1)[-1]


@pytest.fixture(scope="module")
def faulty_run(first_run, cluster, tmp_path_factory):
    """A second run (new seed, longer trainings) that meets two faults, one after the other."""
    new_commit(cluster, seed=7, epochs=30)
    before = cluster.remote_ref("refs/heads/pipeline-runs")
    cluster.trigger("faulty")
    cluster.wait("validate to finish", 300, lambda: task(cluster, "faulty", "validate", "success"))
    cluster.s3_relay.down()
    try:
        s3_failed = cluster.wait("a task to fail on the S3 remote", 300, lambda: [
            t for t in cluster.tasks("faulty") if t["state"] == "up_for_retry"])[0]
        record_while_down = cluster.remote_ref("refs/heads/pipeline-runs")
    finally:
        cluster.s3_relay.up()
    victim = cluster.wait("every training to start, one with its state in the S3 remote", 600,
                          lambda: _victim(cluster, "faulty"), every=1)
    host, lives = victim["host"], cluster.lives(victim["host"])
    killed = cluster.kill_worker(host)
    killed_at = datetime.now(timezone.utc)
    snapshot = tmp_path_factory.mktemp("snapshot") / "state.tar"
    snapshot.write_bytes(cluster.s3_object(f"dvc/resume/faulty/train@{victim['model']}.tar"))
    dead = cluster.folder / "workers" / host / "work" / "faulty"
    left_at_kill = sorted(p.name for p in dead.iterdir()) if dead.is_dir() else []
    record_after_kill = cluster.remote_ref("refs/heads/pipeline-runs")
    cluster.wait(f"{host}'s supervisor to start it again", 240,
                 lambda: _back(cluster, host, lives))
    state = cluster.wait_run("faulty", 900)
    record = record_clone(cluster, tmp_path_factory.mktemp("faulty") / "record")
    return {"state": state, "tasks": cluster.tasks("faulty"), "before": before, "record": record,
            "s3_failed": s3_failed, "record_while_down": record_while_down,
            "s3_log": cluster.task_log(s3_failed["host"], "faulty", s3_failed["task"],
                                       s3_failed["try"], s3_failed["index"]),
            "victim": victim, "killed": killed, "killed_at": killed_at,
            "checks_at_kill": resume.checks_in(snapshot), "record_after_kill": record_after_kill,
            "left_at_kill": left_at_kill, "worker_log": cluster.log(host)}


@pytest.fixture(scope="module")
def restarts_run(faulty_run, cluster, tmp_path_factory):
    """A third run (new seed) that meets three faults, one after the other."""
    new_commit(cluster, seed=11, epochs=20)
    before, tags_before = cluster.remote_ref("refs/heads/pipeline-runs"), cluster.remote_tags()
    # A pool larger than the workers' slots: two trainings wait in Redis while two run.
    cluster.query("UPDATE slot_pool SET slots = 4 WHERE pool = 'training'")
    try:
        cluster.trigger("restarts")
        waiting = cluster.wait("trainings waiting in Redis", 400, lambda: task(
            cluster, "restarts", "train", "queued") and cluster.broker_waiting(), every=0.5)
        lives = {name: cluster.lives(name) for name in
                 ("redis", "scheduler", "dag-processor", "api-server", "worker-a", "worker-b")}
        os.kill(cluster.child("redis"), signal.SIGTERM)   # Redis writes its file and stops
        cluster.wait("Redis to be started again", 60, lambda: cluster.lives("redis") > lives["redis"]
                     and _answers(cluster), every=0.5)
        waiting_after = cluster.broker_waiting()
        sh("pg_ctlcluster", "--mode", "fast", _pg_version(), cluster.env["CLUSTER_NAME"],
           "restart", cwd=cluster.project)   # every connection cut, as in a failover
    finally:
        cluster.query("UPDATE slot_pool SET slots = 2 WHERE pool = 'training'")
    cluster.wait("evaluate to finish", 600, lambda: task(cluster, "restarts", "evaluate", "success"),
                 every=0.5)
    cluster.git_relay.down()
    try:
        failed = cluster.wait("publish's first try to fail", 300,
                              lambda: task(cluster, "restarts", "publish", "up_for_retry"))
        while_down = cluster.remote_ref("refs/heads/pipeline-runs"), cluster.remote_tags()
    finally:
        cluster.git_relay.up()
    state = cluster.wait_run("restarts", 600)
    died = {name: cluster.lives(name) - n for name, n in lives.items()
            if cluster.lives(name) > n and name != "redis"}
    return {"state": state, "tasks": cluster.tasks("restarts"), "before": before,
            "tags_before": tags_before, "waiting": waiting, "waiting_after": waiting_after,
            "restarted": died,
            "publish_failed": failed, "while_down": while_down,
            "publish_log": cluster.task_log(failed["host"], "restarts", "publish", failed["try"]),
            "record": record_clone(cluster, tmp_path_factory.mktemp("restarts") / "record")}


def _answers(cluster: Cluster) -> bool:
    try:
        cluster.broker_waiting()
        return True
    except Exception:   # redis.ConnectionError while it starts
        return False


def _pg_version() -> str:
    return sorted(os.listdir("/usr/lib/postgresql"), key=float)[-1]


def curve_steps(record, model: str) -> dict[str, list[int]]:
    """The steps of every dvclive curve of ``model`` in a run record: {tsv: [steps]}."""
    curves = {}
    for tsv in sorted((record / "metrics" / "train" / model / "plots").rglob("*.tsv")):
        rows = tsv.read_text().splitlines()
        column = rows[0].split("\t").index("step")
        curves[str(tsv.relative_to(record))] = [int(r.split("\t")[column]) for r in rows[1:]]
    return curves
