"""Drive the real cluster of cluster/up.sh from tests: start, trigger, watch, break.

Nothing here imitates a service: PostgreSQL, Redis, Airflow, Celery, git and
the S3 server are the real ones, each component but PostgreSQL and the S3
server under cluster/supervise.sh. The workers reach the S3 server, and every
component the git daemon, through a ``Relay`` (tests/cluster_relay.py), so a
test can take a remote away and bring it back with its data intact, as when
an endpoint goes down and recovers. ``CLUSTER_TEST_PORT`` (default 19000) and
``CLUSTER_TEST_NAME`` give a test cluster other ports and another PostgreSQL
cluster, so two sessions on one machine never meet.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import psycopg2

from cluster_relay import Relay
from conftest import ROOT, sh

DAG_ID = "retrain"
START_SLACK_S = 20   # a due try's dispatch and start on a loaded 2-core machine


class Cluster:
    """One cluster of cluster/up.sh with its own folder, ports and PostgreSQL cluster."""

    def __init__(self, folder: Path, project: Path):
        self.folder, self.project = folder, project
        p = int(os.environ.get("CLUSTER_TEST_PORT", "19000"))
        self.env = {
            "CLUSTER_DIR": str(folder), "PROJECT_REPO": str(project),
            "CLUSTER_NAME": os.environ.get("CLUSTER_TEST_NAME", "rnn-mnist-test"),
            "PG_PORT": str(p + 1), "REDIS_PORT": str(p + 2),
            "API_PORT": str(p + 3), "S3_PORT": str(p + 4), "GIT_PORT": str(p + 5),
            "LOG_PORT_BASE": str(p + 6), "S3_ENDPOINT": f"http://127.0.0.1:{p + 8}",
            "GIT_ENDPOINT": f"git://127.0.0.1:{p + 9}/rnn-mnist.git",
            "MOTO_VENV": str(ROOT / ".cluster" / "moto-venv"),   # software only: reused
            # the real schedule: unpausing must start no run of its own
            "RETRAIN_SCHEDULE": "@weekly"}
        self.s3_port = p + 4
        self.s3_relay, self.git_relay = Relay(p + 8, p + 4), Relay(p + 9, p + 5)
        self.git_url = f"git://127.0.0.1:{p + 5}/rnn-mnist.git"   # the daemon, not the relay
        self.triggered: dict[str, str] = {}   # run id -> the commit trigger.sh pushed

    def script(self, name: str, *args: str, check: bool = True, **env: str):
        return sh("bash", str(ROOT / "cluster" / name), *args, cwd=ROOT, check=check,
                  **{**self.env, **env})

    def up(self) -> None:
        self.s3_relay.up()
        self.git_relay.up()
        self.script("up.sh")

    def down(self) -> None:
        self.script("down.sh", check=False, PURGE="1")
        self.s3_relay.down()
        self.git_relay.down()

    def setting(self, name: str) -> int:
        """A number cluster/env.sh sets for this cluster (its defaults, as users get them)."""
        out = sh("bash", "-c", f'. cluster/env.sh; echo "${name}"', cwd=ROOT, **self.env)
        return int(out.stdout.strip())

    def retry_bound_s(self) -> int:
        """How soon after a worker's death its task's next try starts (docs/airflow.md):
        heartbeat timeout + the scheduler's look + twice the retry delay + start-up."""
        return (self.setting("HEARTBEAT_TIMEOUT_S") + self.setting("HEARTBEAT_CHECK_S")
                + 2 * self.setting("RETRAIN_RETRY_DELAY_S") + START_SLACK_S)

    def secret(self, name: str) -> str:
        """One of the secrets up.sh generated for this cluster (secrets.env)."""
        lines = (self.folder / "secrets.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)[name]

    def s3_env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.secret("S3_ACCESS_KEY"),
                "AWS_SECRET_ACCESS_KEY": self.secret("S3_SECRET_KEY"),
                "AWS_DEFAULT_REGION": "us-east-1"}

    def query(self, sql: str, *args) -> list[tuple]:
        db = psycopg2.connect(host="127.0.0.1", port=self.env["PG_PORT"], user="airflow",
                              password=self.secret("PG_PASSWORD"), dbname="airflow")
        try:
            with db, db.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else []
        finally:
            db.close()

    def trigger(self, run_id: str) -> str:
        """`make cluster-trigger`: push the project's HEAD and run it; returns that commit."""
        self.script("trigger.sh", "--run-id", run_id)
        self.triggered[run_id] = sh("git", "rev-parse", "HEAD", cwd=self.project).stdout.strip()
        return self.triggered[run_id]

    def wait(self, what: str, seconds: float, ready, every: float = 2.0):
        deadline = time.monotonic() + seconds
        while not (result := ready()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}\n"
                                     f"{self.describe()}")
            time.sleep(every)
        return result

    def run_state(self, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s",
                          DAG_ID, run_id)
        return rows[0][0] if rows else None

    def wait_run(self, run_id: str, seconds: float = 600) -> str:
        return self.wait(f"run {run_id} to finish", seconds,
                         lambda: self.run_state(run_id) in ("success", "failed")
                         and self.run_state(run_id))

    def run_seconds(self, run_id: str) -> float:
        (start, end), = self.query("SELECT start_date, end_date FROM dag_run WHERE dag_id = %s "
                                   "AND run_id = %s", DAG_ID, run_id)
        return (end - start).total_seconds()

    def tasks(self, run_id: str) -> list[dict]:
        """A run's task instances; ``model`` is a training's model (Airflow renders the
        map index's name when the try ends, so a running one's comes from another run)."""
        rows = self.query(
            "SELECT task_id, map_index, state, try_number, hostname, start_date, end_date, "
            "rendered_map_index FROM task_instance WHERE dag_id = %s AND run_id = %s "
            "ORDER BY start_date", DAG_ID, run_id)
        names = dict(self.query("SELECT DISTINCT map_index, rendered_map_index FROM "
                                "task_instance WHERE task_id = 'train' AND rendered_map_index "
                                "IS NOT NULL"))
        keys = ("task", "index", "state", "try", "host", "start", "end", "model")
        return [{**dict(zip(keys, row)), "model": row[7] or names.get(row[1])} for row in rows]

    def tries(self, run_id: str) -> dict[str, int]:
        """Tries per task of a run: {"fetch": 1, "train[gru]": 2, ...}."""
        return {t["task"] + (f"[{t['model']}]" if t["index"] >= 0 else ""): t["try"]
                for t in sorted(self.tasks(run_id), key=lambda t: (t["start"] is None, t["start"]))}

    def describe(self) -> str:
        runs = self.query("SELECT run_id, state FROM dag_run ORDER BY id")
        lines = [f"{r}: {s}" for r, s in runs]
        if runs:
            lines += [str(t) for t in self.tasks(runs[-1][0])]
        return "\n".join(lines)

    def task_log(self, host: str, run_id: str, task: str, attempt: int, index: int = -1) -> str:
        folder = (self.folder / "workers" / host / "home" / "logs" / f"dag_id={DAG_ID}"
                  / f"run_id={run_id}" / f"task_id={task}")
        if index >= 0:
            folder /= f"map_index={index}"
        path = folder / f"attempt={attempt}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self, name: str) -> str:
        """A component's log (logs/NAME.log), every life of it."""
        path = self.folder / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def lives(self, name: str) -> int:
        """How often supervise.sh has started NAME."""
        return self.log(name).count(f"supervise: {name} started")

    def pids(self) -> list[int]:
        """The process of every server the cluster started (run/*.pid) and PostgreSQL's."""
        files = [*(self.folder / "run").glob("*.pid"),
                 *Path("/var/lib/postgresql").glob(f"*/{self.env['CLUSTER_NAME']}/postmaster.pid")]
        return [int(f.read_text().split()[0]) for f in files]

    def child(self, name: str) -> int:
        """The pid of the component supervise.sh runs as NAME (run/NAME.child)."""
        return int((self.folder / "run" / f"{name}.child").read_text())

    def kill_worker(self, host: str) -> int:
        """kill -9 every process of a worker (its mount namespace): the host dies."""
        pid = self.child(host)   # `unshare --fork`, under supervise.sh
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ns = _mnt_ns(Path(f"/proc/{children[0]}"))   # the worker's own mount namespace
        assert ns and ns != _mnt_ns(Path("/proc/self")), f"{host} is not isolated"
        victims = [int(p.name) for p in Path("/proc").iterdir()
                   if p.name.isdigit() and _mnt_ns(p) == ns]
        for victim in [*victims, pid]:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(victims)

    def broker_waiting(self) -> int:
        """Messages waiting in Redis for a worker (Celery's `default` queue)."""
        import redis

        client = redis.Redis(port=int(self.env["REDIS_PORT"]),
                             password=self.secret("REDIS_PASSWORD"))
        return sum(client.llen(key) for key in client.keys("default*")
                   if client.type(key) == b"list")

    def s3_object(self, key: str) -> bytes:
        """An object of the S3 remote's bucket, straight from the S3 server (not the relay)."""
        import s3fs   # what DVC's S3 remote uses

        env = self.s3_env()
        fs = s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                               client_kwargs={"endpoint_url": f"http://127.0.0.1:{self.s3_port}",
                                              "region_name": "us-east-1"})
        return fs.cat_file(f"rnn-mnist/{key}")

    def remote_ref(self, ref: str) -> str:
        out = sh("git", "ls-remote", self.git_url, ref, cwd=self.project).stdout.split()
        return out[0] if out else ""

    def remote_tags(self) -> dict[str, str]:
        """Every tag on the git remote: name -> the commit it points at."""
        out = sh("git", "ls-remote", "--tags", self.git_url, cwd=self.project).stdout
        tags = {}
        for line in out.splitlines():   # annotated tags: the peeled ^{} line is the commit
            sha, ref = line.split()
            name = ref.removeprefix("refs/tags/").removesuffix("^{}")
            if ref.endswith("^{}") or name not in tags:
                tags[name] = sha
        return tags


def listening(pids) -> dict[str, set[str]]:
    """Where these processes and all their descendants listen (TCP, and unconnected UDP):
    {"name[pid]": {"address:port", ...}}, read from the kernel's socket table."""
    procs = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs |= {p.pid: p for p in (root, *root.children(recursive=True))}
        except psutil.NoSuchProcess:
            pass
    found: dict[str, set[str]] = {}
    for conn in psutil.net_connections(kind="inet"):
        server = conn.status == psutil.CONN_LISTEN or (conn.type == socket.SOCK_DGRAM
                                                       and not conn.raddr)
        if server and conn.pid in procs:
            try:
                name = procs[conn.pid].name()
            except psutil.NoSuchProcess:
                continue
            found.setdefault(f"{name}[{conn.pid}]", set()).add(f"{conn.laddr.ip}:{conn.laddr.port}")
    return found


def beyond_loopback(found: dict[str, set[str]]) -> dict[str, set[str]]:
    """The part of ``listening``'s answer on addresses other machines can reach."""
    def loopback(address: str) -> bool:
        host = address.rsplit(":", 1)[0]
        return host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1")
    return {p: bad for p, a in found.items() if (bad := {x for x in a if not loopback(x)})}


def api_status(method: str, url: str, token: str = "", body: dict | None = None) -> int:
    """The HTTP status the API server answers, with a bearer token or without one."""
    request = urllib.request.Request(url, method=method, data=json.dumps(body or {}).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def api_login(base: str, passwords_file: Path) -> str:
    """A token for the generated admin (Airflow's simple auth manager: POST /auth/token)."""
    password = json.loads(passwords_file.read_text())["admin"]
    request = urllib.request.Request(
        f"{base}/auth/token", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"username": "admin", "password": password}).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["access_token"]


def _mnt_ns(proc: Path) -> str | None:
    try:
        return os.readlink(proc / "ns" / "mnt")
    except OSError:
        return None
