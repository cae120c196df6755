"""The DAG on a real cluster whose workers share nothing (cluster/up.sh), and its faults.

PostgreSQL, Redis, Airflow's api-server, scheduler and dag-processor, two
Celery workers isolated in mount and UTS namespaces, a git daemon as the git
remote and a moto S3 server as the DVC remote, all started for real on this
machine, each but PostgreSQL and the S3 server under cluster/supervise.sh. The
DAG comes from the git remote (GitDagBundle) at the pushed commit, on the tiny
fixture, with the cluster's own settings (cluster/env.sh). Three runs on one
cluster (tests/cluster_scenarios.py): a clean one, one that meets the S3 remote
going down and a worker killed mid-training, one that meets Redis and
PostgreSQL restarts and the git remote going away at publish. Each fault test
writes its row of the fault table (tests/fault_table.py). Needs root
(namespaces, Debian packages): `make test-cluster`; `.ci/run` runs it.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml

import fault_table
from cluster_harness import api_login, api_status, beyond_loopback, listening
from cluster_scenarios import (cluster, curve_steps, faulty_run, first_run,  # noqa: F401
                               record_clone, restarts_run)
from conftest import remote_holds_everything, sh, untimed

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                 reason="the cluster needs root and unshare")]
WORKERS = {"worker-a", "worker-b"}
# The third run (Redis, PostgreSQL, git remote) adds about 5 min: `make test-cluster`
# and `make cluster-faults` run it, `make test` (and so CI) does not.
restarts = pytest.mark.slow


def row(cluster, request, run: str, fault: str, done: str, retried: str, lost: str) -> None:
    fault_table.record(fault, done, run, cluster.run_seconds(run), cluster.tries(run), retried,
                       lost, request.node.nodeid)


def first_parent(record) -> list[str]:
    """The run records on the record branch's first-parent line, newest first."""
    subjects = sh("git", "log", "--first-parent", "--format=%s", "HEAD", cwd=record).stdout
    return [s for s in subjects.splitlines() if s.startswith("retrain ")]


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
    assert remote_holds_everything(record, **cluster.s3_env())
    sh("dvc", "pull", cwd=record, **cluster.s3_env())
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
    assert cluster.remote_ref("refs/tags/champion@v0.0.1")
    assert cluster.remote_ref("refs/tags/champion#prod#1")


def test_a_killed_worker_s_training_goes_on_from_its_saved_check_within_the_bound(
        faulty_run, cluster, request):
    victim, model, tasks = faulty_run["victim"], faulty_run["victim"]["model"], faulty_run["tasks"]
    assert faulty_run["killed"] > 0
    assert faulty_run["record_after_kill"] == faulty_run["before"]   # champion untouched
    assert faulty_run["state"] == "success", tasks
    retried = next(t for t in tasks if t["task"] == "train" and t["index"] == victim["index"])
    assert retried["try"] == victim["try"] + 1 and retried["state"] == "success", retried
    # (i) the next try started within heartbeat timeout + look + 2 x retry delay + start-up
    waited, bound = (retried["start"] - faulty_run["killed_at"]).total_seconds(), \
        cluster.retry_bound_s()
    assert 0 < waited <= bound, f"the next try started {waited:.0f} s after the kill (> {bound})"
    # (ii) from the check the S3 remote held when the worker died, not from the first
    checks = faulty_run["checks_at_kill"]
    log = cluster.task_log(retried["host"], "faulty", "train", retried["try"], retried["index"])
    assert checks and f"fetched from DVC remote 'storage'; resuming after check {checks}" in log, \
        log[-3000:]
    # (iii) the record's curves hold every check exactly once, those before the kill too
    record = faulty_run["record"]
    summary = json.loads((record / "metrics" / "train" / model / "metrics.json").read_text())
    curves = curve_steps(record, model)
    assert curves and summary["checks_run"] > checks
    for tsv, steps in curves.items():
        assert steps == list(range(summary["checks_run"])), (tsv, steps)
    assert remote_holds_everything(record, **cluster.s3_env())   # nothing lost
    assert sh("git", "rev-parse", "HEAD~1", cwd=record).stdout.strip() == faulty_run["before"]
    assert "retrain faulty:" in first_parent(record)[0]
    row(cluster, request, "faulty", "worker killed (-9) mid-training",
        f"kill -9 of every process of {victim['host']} (its namespace) during train[{model}], "
        f"with check {checks} in the S3 remote; its supervisor started it again",
        f"train[{model}]: next try {waited:.0f} s after the kill (bound {bound} s) on "
        f"{retried['host']}, resumed after check {checks} of {summary['checks_run']}",
        f"nothing: the curves hold each of the {summary['checks_run']} checks once; the S3 "
        f"remote holds every output; one record commit")


def test_a_killed_worker_is_started_again_and_drops_its_dead_workspaces(faulty_run):
    host, model = faulty_run["victim"]["host"], faulty_run["victim"]["model"]
    assert f"train@{model}" in faulty_run["left_at_kill"]   # what the dead try left behind
    log = faulty_run["worker_log"]
    assert f"supervise: {host} died" in log and f"supervise: {host} started" in log, log[-2000:]
    removed = [line for line in log.splitlines() if "workspaces of its last life" in line]
    assert removed and f"faulty/train@{model}" in removed[-1], log[-2000:]


def test_the_s3_remote_down_is_retried_and_the_champion_never_half_changes(
        faulty_run, cluster, request):
    failed, log = faulty_run["s3_failed"], faulty_run["s3_log"]
    assert "DVC remote 'storage'" in log and "retried later" in log, log[-3000:]
    retried = next(t for t in faulty_run["tasks"] if (t["task"], t["index"]) ==
                   (failed["task"], failed["index"]))
    assert retried["state"] == "success" and retried["try"] > failed["try"]
    # the published champion did not move while the remote was down, and the new
    # record's champion and data are all in the remote
    assert faulty_run["record_while_down"] == faulty_run["before"]
    assert remote_holds_everything(faulty_run["record"], **cluster.s3_env())
    row(cluster, request, "faulty", "S3 (DVC) remote down",
        f"the S3 endpoint refused connections from validate's end until {failed['task']} "
        f"had failed on it",
        f"{failed['task']}: try {failed['try']} failed (`cannot pull ... from DVC remote "
        f"'storage' (retried later)`), try {retried['try']} succeeded",
        "nothing: the record branch did not move while it was down; the S3 remote holds "
        "every output")


@restarts
def test_a_redis_restart_with_trainings_waiting_loses_none(restarts_run, cluster, request):
    assert restarts_run["waiting"] >= 1
    assert restarts_run["state"] == "success", restarts_run["tasks"]
    trains = [t for t in restarts_run["tasks"] if t["task"] == "train"]
    # the waiting trainings' messages survived (append-only file): each ran once, first try
    assert len(trains) == 4 and {(t["state"], t["try"]) for t in trains} == {("success", 1)}
    row(cluster, request, "restarts", "Redis restarted with tasks in its queue",
        f"pool `training` at 4 for 2 worker slots; with {restarts_run['waiting']} trainings "
        f"waiting in Redis, TERM to redis-server; its supervisor started it again "
        f"({restarts_run['waiting_after']} waiting after)",
        "nothing: every training ran once, on its first try", "nothing")


@restarts
def test_a_postgresql_restart_mid_run_is_survived(restarts_run, cluster, request):
    assert restarts_run["state"] == "success", restarts_run["tasks"]
    assert cluster.query("SELECT count(*) FROM dag_run WHERE run_id = 'restarts'") == [(1,)]
    record = restarts_run["record"]
    assert sh("git", "rev-parse", "HEAD~1", cwd=record).stdout.strip() == restarts_run["before"]
    assert remote_holds_everything(record, **cluster.s3_env())
    died = ", ".join(f"{n} ({k}x)" for n, k in restarts_run["restarted"].items()) or "none"
    row(cluster, request, "restarts", "PostgreSQL restarted mid-run",
        "`pg_ctlcluster ... restart -m fast` (every connection cut) while two trainings ran; "
        f"components that died and were started again by their supervisor: {died}",
        "nothing beyond the git fault's publish try", "nothing: one dag_run row, one record "
        "commit, the S3 remote holds every output")


@restarts
def test_an_unreachable_git_remote_at_publish_is_retried_and_half_writes_nothing(
        restarts_run, cluster, request):
    log, failed = restarts_run["publish_log"], restarts_run["publish_failed"]
    assert "does not answer" in log and "retrying in" in log, log[-3000:]
    assert "did not answer in 3 tries" in log and "(retried later)" in log, log[-3000:]
    # while it was away: no record, no tag, the champion as it was
    assert restarts_run["while_down"] == (restarts_run["before"], restarts_run["tags_before"])
    publish = next(t for t in restarts_run["tasks"] if t["task"] == "publish")
    assert publish["state"] == "success" and publish["try"] == failed["try"] + 1
    history = sh("git", "rev-list", "--first-parent", "HEAD", cwd=restarts_run["record"]).stdout
    orphans = {tag: sha for tag, sha in cluster.remote_tags().items()
               if tag.startswith("champion@") and sha not in history.split()}
    assert not orphans, f"registry versions off the record branch: {orphans}"
    row(cluster, request, "restarts", "git remote unreachable at publish",
        "the git endpoint refused connections from evaluate's end until publish's first try "
        "had failed",
        f"publish: try {failed['try']} asked the git source 3 times, then failed (`did not "
        f"answer in 3 tries ... (retried later)`); try {publish['try']} published",
        "nothing: while it was away the record branch, tags and champion stayed as they were; "
        "no registry tag off the record branch")


def test_every_run_is_recorded_once_and_whole(faulty_run, cluster, tmp_path):
    runs = cluster.query("SELECT run_id, state FROM dag_run ORDER BY id")
    assert runs == [(run, "success") for run in cluster.triggered], runs   # one row each
    subjects = [s.split(":")[0] for s in first_parent(record_clone(cluster, tmp_path / "r"))]
    assert subjects == [f"retrain {run}" for run in reversed(cluster.triggered)], subjects


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
    for name in ("passwords.json", "secrets.env", "pgpass", "redis/redis.conf"):
        assert (cluster.folder / name).stat().st_mode & 0o077 == 0, name   # root only
    token = api_login(base, cluster.folder / "passwords.json")
    assert api_status("GET", f"{base}/api/v2/connections", token) == 200
    assert api_status("POST", f"{base}/api/v2/variables", token, variable) in (200, 201)
    assert api_status("DELETE", f"{base}/api/v2/variables/probe", token) == 204
