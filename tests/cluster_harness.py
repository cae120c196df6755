"""Drive the real cluster of cluster/up.sh from tests: start, trigger, watch, break.

Nothing here imitates a service: PostgreSQL, Redis, Airflow, Celery, git and
the S3 server are the real ones. ``S3Proxy`` is a plain TCP relay that the
workers reach the S3 server through, so a test can take the remote away
(connections refused) and bring it back with its data intact, as when a
storage endpoint goes down and recovers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import psycopg2

from conftest import ROOT, sh

DAG_ID = "retrain"


class S3Proxy:
    """Relay 127.0.0.1:<port> to the S3 server; ``down()`` refuses and cuts connections."""

    def __init__(self, port: int, upstream: int):
        self.port, self.upstream = port, upstream
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        server, self._server = self._server, None
        if server:
            server.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while self._server is server:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                remote = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, remote]
            for a, b in ((client, remote), (remote, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Cluster:
    """One cluster of cluster/up.sh with its own folder, ports and PostgreSQL cluster."""

    def __init__(self, folder: Path, project: Path, base_port: int = 19000):
        self.folder, self.project = folder, project
        p = base_port
        self.env = {
            "CLUSTER_DIR": str(folder), "PROJECT_REPO": str(project),
            "CLUSTER_NAME": "rnn-mnist-test", "PG_PORT": str(p + 1), "REDIS_PORT": str(p + 2),
            "API_PORT": str(p + 3), "S3_PORT": str(p + 4), "GIT_PORT": str(p + 5),
            "LOG_PORT_BASE": str(p + 6), "S3_ENDPOINT": f"http://127.0.0.1:{p + 8}",
            "MOTO_VENV": str(ROOT / ".cluster" / "moto-venv"),   # software only: reused
            # the real schedule: unpausing must start no run of its own
            "RETRAIN_SCHEDULE": "@weekly", "RETRAIN_RETRY_DELAY_S": "5",
            "HEARTBEAT_TIMEOUT_S": "20"}
        self.s3_port = p + 4
        self.proxy = S3Proxy(p + 8, p + 4)
        self.git_url = f"git://127.0.0.1:{p + 5}/rnn-mnist.git"
        self.triggered: dict[str, str] = {}   # run id -> the commit trigger.sh pushed

    def script(self, name: str, *args: str, check: bool = True, **env: str):
        return sh("bash", str(ROOT / "cluster" / name), *args, cwd=ROOT, check=check,
                  **{**self.env, **env})

    def up(self) -> None:
        self.proxy.up()
        self.script("up.sh")

    def down(self) -> None:
        self.script("down.sh", check=False, PURGE="1")
        self.proxy.down()

    def secret(self, name: str) -> str:
        """One of the secrets up.sh generated for this cluster (secrets.env)."""
        lines = (self.folder / "secrets.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)[name]

    def query(self, sql: str, *args) -> list[tuple]:
        db = psycopg2.connect(host="127.0.0.1", port=self.env["PG_PORT"], user="airflow",
                              password=self.secret("PG_PASSWORD"), dbname="airflow")
        try:
            with db, db.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
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

    def tasks(self, run_id: str) -> list[dict]:
        rows = self.query(
            "SELECT task_id, map_index, state, try_number, hostname, start_date, end_date "
            "FROM task_instance WHERE dag_id = %s AND run_id = %s ORDER BY start_date",
            DAG_ID, run_id)
        keys = ("task", "index", "state", "try", "host", "start", "end")
        return [dict(zip(keys, row)) for row in rows]

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
        return path.read_text() if path.exists() else ""

    def pids(self) -> list[int]:
        """The process of every server the cluster started (run/*.pid) and PostgreSQL's."""
        files = [*(self.folder / "run").glob("*.pid"),
                 *Path("/var/lib/postgresql").glob(f"*/{self.env['CLUSTER_NAME']}/postmaster.pid")]
        return [int(f.read_text().split()[0]) for f in files]

    def kill_worker(self, host: str) -> int:
        """kill -9 every process of a worker (its mount namespace): the host dies."""
        pid = int((self.folder / "run" / f"{host}.pid").read_text())  # `unshare --fork`
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ns = _mnt_ns(Path(f"/proc/{children[0]}"))   # the worker's own mount namespace
        assert ns and ns != _mnt_ns(Path("/proc/self")), f"{host} is not isolated"
        victims = [int(p.name) for p in Path("/proc").iterdir()
                   if p.name.isdigit() and _mnt_ns(p) == ns]
        for victim in victims:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return len(victims)


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
