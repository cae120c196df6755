"""Safe by default: nothing the project starts listens beyond 127.0.0.1 without a login.

`make airflow-standalone` (cluster/standalone.sh) is started for real, on SQLite
with the LocalExecutor, and its sockets are read from the kernel's table for
every process it started; the API server is asked without and with a login.
The cluster's own sockets and login are checked in test_cluster.py. Asking for
another address without a login is refused before anything starts, as is a
broker visibility timeout that a long training could outlast.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from cluster_harness import api_login, api_status, beyond_loopback, listening
from conftest import ROOT

VENV_BIN = Path(os.environ.get("VIRTUAL_ENV") or ROOT / ".venv") / "bin"


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
            "GX_ANALYTICS_ENABLED": "false", **extra}


@pytest.mark.parametrize("script", ["standalone.sh", "up.sh"])
def test_another_address_without_a_login_is_refused_in_one_line(script, tmp_path):
    result = subprocess.run(
        ["bash", str(ROOT / "cluster" / script)], capture_output=True, text=True, timeout=60,
        env=_env(LISTEN_HOST="0.0.0.0", AIRFLOW_AUTH="off", AIRFLOW_HOME=str(tmp_path / "home"),
                 CLUSTER_DIR=str(tmp_path / "cluster")))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "LISTEN_HOST=0.0.0.0" in lines[0] and "AIRFLOW_AUTH=off" in lines[0]
    assert not list(tmp_path.iterdir()), "something was set up before the refusal"


def test_a_visibility_timeout_without_a_start_up_margin_is_refused(tmp_path):
    # 60 min trainings + the 600 s start-up margin need 4200 s; one second less is refused
    result = subprocess.run(
        ["bash", str(ROOT / "cluster" / "up.sh")], capture_output=True, text=True, timeout=60,
        env=_env(RETRAIN_TRAIN_TIMEOUT_MIN="60", VISIBILITY_TIMEOUT_S="4199",
                 CLUSTER_DIR=str(tmp_path / "cluster")))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "VISIBILITY_TIMEOUT_S=4199" in lines[0] and "4200" in lines[0]
    assert not list(tmp_path.iterdir()), "something was set up before the refusal"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("listen_host", ["", "0.0.0.0"], ids=["default", "asked-for-0.0.0.0"])
def test_standalone_listens_on_loopback_and_asks_for_a_login(listen_host, tmp_path):
    home, port = tmp_path / "airflow", _free_port()
    extra = {"LISTEN_HOST": listen_host} if listen_host else {}
    proc = subprocess.Popen(["bash", str(ROOT / "cluster" / "standalone.sh")], text=True,
                            env=_env(AIRFLOW_HOME=str(home), AIRFLOW_PORT=str(port), **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        ready = ""
        while "UI http" not in ready:
            line = proc.stdout.readline()
            assert line, f"standalone.sh stopped: {ready}"
            ready += line
        pids = [int(f.read_text()) for f in (home / "run").glob("*.pid")]
        assert len(pids) == 4   # api-server, scheduler, dag-processor, triggerer
        time.sleep(10)          # every component is up and has opened what it opens
        assert all(psutil.pid_exists(pid) for pid in pids), (home / "run").iterdir()
        found = listening([proc.pid])
        ports = {int(a.rsplit(":", 1)[1]) for addresses in found.values() for a in addresses}
        assert port in ports, found
        exposed = beyond_loopback(found)
        if listen_host:   # only the API server, as asked
            assert set().union(*exposed.values()) == {f"0.0.0.0:{port}"}, exposed
        else:
            assert exposed == {}, exposed
        base = f"http://127.0.0.1:{port}"
        assert api_status("GET", f"{base}/api/v2/dags") in (401, 403)
        assert (home / "passwords.json").stat().st_mode & 0o077 == 0
        token = api_login(base, home / "passwords.json")
        assert api_status("GET", f"{base}/api/v2/dags", token) == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while (alive := [p for p in pids if psutil.pid_exists(p)]) and time.monotonic() < deadline:
        time.sleep(1)
    assert not alive, "a component outlived standalone.sh"
