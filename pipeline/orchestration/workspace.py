"""A task's private DVC workspace: the run's commit, what upstream tasks handed on.

Why: on a cluster the Airflow workers share nothing but the git remote and the
DVC remote, and a retry may land on another worker. So no task relies on files
another task left on a disk. Each one

1. clones the run's commit from the git source into a folder of its own
   (``<work root>/<run>/<task>``), with a DVC cache per worker
   (``<work root>/dvc-cache``) and the DVC remote set from the environment;
2. applies the **record** of its upstream tasks: their ``dvc.lock`` entries
   and their small uncached outputs (metrics, plots, report; ``cache: false``
   in dvc.yaml), which travel in Airflow's XCom;
3. after its stage ran and pushed, hands on the record, with its own stage added.

Cached outputs (data, checkpoints) never travel in the record: they go
through the DVC remote, addressed by the checksums in the ``dvc.lock`` entries.
A record is plain JSON::

    {"git_url": ..., "commit": ...,
     "stages": {"fetch": {"lock": <dvc.lock entry>, "files": <base64 tar.gz>,
                          "outcome": "ran", "seconds": 1.2, "host": "worker-a"}, ...}}

Settings (environment of every worker): ``PIPELINE_WORK_DIR`` (work root;
default ``<project>/tmp/workspaces``), ``PIPELINE_DVC_REMOTE_<OPTION>`` (each
becomes ``dvc remote modify --local <remote> <option> <value>``: ``..._URL``,
``..._ENDPOINTURL``, ...; default: the remote's URL in the project checkout).

Only the standard library at import time: the DAG file imports this module.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

REMOTE_ENV_PREFIX = "PIPELINE_DVC_REMOTE_"
RESUME_DIR = Path("tmp/train")   # pipeline.stages.train keeps an interrupted training's state here
MAX_FILES_BYTES = 8 * 2**20      # a record's uncached outputs; XCom is no place for data


def _dvc() -> str:
    """The dvc beside this interpreter (a worker's PATH may not hold the venv)."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else "dvc"


class WorkspaceError(RuntimeError):
    """The workspace could not be made: the message names the step and the cause."""


@dataclass(frozen=True)
class Source:
    """Where a run's code comes from: every task of one run uses the same commit."""
    git_url: str
    commit: str


def git(cwd: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)} in {cwd} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def resolve_source(upstream: dict | None, bundle=None, project: Path | None = None) -> Source:
    """The run's source: upstream's, else the DAG bundle's version, else the project's HEAD.

    With Airflow's ``GitDagBundle`` every task of a run gets the commit the run
    was created at (DAG versioning). With the local DAG folder (standalone),
    the first task pins the project checkout's HEAD and the record carries it on.
    """
    version, url = getattr(bundle, "version", None), getattr(bundle, "repo_url", None)
    if upstream:
        source = Source(upstream["git_url"], upstream["commit"])
        if version and version != source.commit:
            raise WorkspaceError(f"upstream ran commit {source.commit[:10]} but this task's "
                                 f"DAG bundle is at {version[:10]}")
        return source
    if version and url:
        return Source(str(url), str(version))
    if project is None:
        raise WorkspaceError("no upstream record, no versioned DAG bundle and no project folder")
    project = Path(project).resolve()
    dirty = git(project, "status", "--porcelain", "--untracked-files=no", check=False)
    if dirty:
        print(f"workspace: {project} has uncommitted changes; this run uses its last commit "
              f"(commit them to train them):\n{dirty}", flush=True)
    return Source(str(project), git(project, "rev-parse", "HEAD"))


def work_root(project: Path | None) -> Path:
    root = os.environ.get("PIPELINE_WORK_DIR") or (project and Path(project) / "tmp" / "workspaces")
    if not root:
        raise WorkspaceError("set PIPELINE_WORK_DIR: the folder where tasks make their workspaces")
    return Path(root).resolve()


def remote_options(project: Path | None, remote: str) -> dict[str, str]:
    """``dvc remote modify`` options from ``PIPELINE_DVC_REMOTE_*``, else the project's URL."""
    options = {k[len(REMOTE_ENV_PREFIX):].lower(): v for k, v in os.environ.items()
               if k.startswith(REMOTE_ENV_PREFIX) and v}
    if "url" not in options and project is not None:
        # `dvc config` prints the value alone, the local config's where it has one;
        # `dvc remote list` is a table that wraps a long URL onto a line of its own.
        proc = subprocess.run([_dvc(), "config", f"remote.{remote}.url"], cwd=project,
                              capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            options["url"] = proc.stdout.strip()
    if "url" not in options:
        raise WorkspaceError(f"no URL for DVC remote {remote!r}: set {REMOTE_ENV_PREFIX}URL")
    return options


def open_workspace(root: Path, run: str, task: str, source: Source) -> Path:
    """A fresh clone of ``source`` at ``root/run/task``.

    A training's resume state (``tmp/train``) survives from an earlier try of
    the same task on this worker; everything else starts clean.
    """
    safe = lambda s: "".join(c if c.isalnum() or c in "-_.@" else "_" for c in s)  # noqa: E731
    ws = root / safe(run) / safe(task)
    saved = root / safe(run) / f".{safe(task)}.resume"
    if (ws / RESUME_DIR).is_dir():
        shutil.rmtree(saved, ignore_errors=True)
        (ws / RESUME_DIR).rename(saved)
    shutil.rmtree(ws, ignore_errors=True)
    ws.parent.mkdir(parents=True, exist_ok=True)
    git(ws.parent, "clone", "--quiet", "--no-checkout", source.git_url, ws.name)
    git(ws, "checkout", "--quiet", "--detach", source.commit)
    if saved.is_dir():
        (ws / RESUME_DIR).parent.mkdir(parents=True, exist_ok=True)
        saved.rename(ws / RESUME_DIR)
    return ws


def configure(ws: Path, root: Path, remote: str, options: dict[str, str]) -> None:
    """This worker's DVC cache, and the DVC remote as this worker reaches it."""
    for args in (("config", "--local", "core.analytics", "false"),
                 ("config", "--local", "cache.dir", str(root / "dvc-cache")),
                 *(("remote", "modify", "--local", remote, k, v)   # url first: it sets the schema
                   for k, v in sorted(options.items(), key=lambda kv: kv[0] != "url"))):
        proc = subprocess.run([_dvc(), *args], cwd=ws, capture_output=True, text=True)
        if proc.returncode != 0:
            raise WorkspaceError(f"dvc {' '.join(args[:3])} in {ws} failed: "
                                 f"{(proc.stderr or proc.stdout).strip()}")


# --- records ------------------------------------------------------------------

def merge(records: list[dict]) -> dict:
    """One record from several (e.g. every training's): same source, stages united."""
    records = [r for r in records if r]
    if not records:
        return {}
    first = records[0]
    stages: dict = {}
    for record in records:
        if (record["git_url"], record["commit"]) != (first["git_url"], first["commit"]):
            raise WorkspaceError("upstream tasks ran different commits; the run is inconsistent")
        for name, entry in record["stages"].items():
            if name in stages and stages[name]["lock"] != entry["lock"]:
                raise WorkspaceError(f"two upstream records disagree about stage {name}")
            stages[name] = entry
    return {"git_url": first["git_url"], "commit": first["commit"], "stages": stages}


def apply(ws: Path, record: dict, stage_order: list[str]) -> None:
    """Write upstream's ``dvc.lock`` entries and uncached outputs into the workspace."""
    if not record:
        return
    lock = read_lock(ws)
    lock.update({name: entry["lock"] for name, entry in record["stages"].items()})
    write_lock(ws, lock, stage_order)
    for entry in record["stages"].values():
        if entry.get("files"):
            data = base64.b64decode(entry["files"])
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                for member in tar.getmembers():
                    if member.name.endswith(".gitignore"):   # several stages write one
                        _merge_lines(ws / member.name, tar.extractfile(member).read().decode())
                    else:
                        tar.extract(member, ws, filter="data")


def _merge_lines(path: Path, text: str) -> None:
    """Add the lines of ``text`` that ``path`` lacks, in order (as DVC appends them)."""
    lines = path.read_text().splitlines() if path.exists() else []
    lines += [line for line in text.splitlines() if line not in lines]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def capture(ws: Path, stage: str, uncached: list[str], source: Source, upstream: dict,
            **facts) -> dict:
    """The record to hand on: upstream's plus this stage's lock entry and uncached outputs."""
    # The .gitignore files DVC writes beside outputs are part of what `dvc repro`
    # leaves behind (and of a folder's checksum when a later stage reads it).
    ignores = [line[3:] for line in git(ws, "status", "--porcelain", "--untracked-files=all")
               .splitlines() if line.endswith(".gitignore")]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for rel in [*uncached, *ignores]:
            if (ws / rel).exists():
                tar.add(ws / rel, arcname=rel)
    if buffer.tell() > MAX_FILES_BYTES:
        raise WorkspaceError(f"{stage}: its uncached outputs are {buffer.tell()} bytes after "
                             f"compression, over {MAX_FILES_BYTES}; make the large ones cached")
    own = {"lock": read_lock(ws)[stage], "files": base64.b64encode(buffer.getvalue()).decode(),
           "host": socket.gethostname(), **facts}
    stages = dict((upstream or {}).get("stages", {}))
    stages[stage] = own
    return {"git_url": source.git_url, "commit": source.commit, "stages": stages}


# --- the last recorded run -------------------------------------------------------

def last_run(ws: Path, branch: str) -> tuple[str, str] | None:
    """The tip of the record branch on the run's git source and the run id its message
    names (``retrain <run id>: ...``, written by publish); None before the first run."""
    tip = git(ws, "ls-remote", "--heads", "origin", branch).split()
    if not tip:
        return None
    git(ws, "fetch", "--quiet", "origin", f"refs/heads/{branch}")
    subject = git(ws, "log", "-1", "--format=%s", tip[0])
    return tip[0], subject.removeprefix("retrain ").split(": ", 1)[0]


def place_champion(ws: Path, commit: str, champion_dir: str) -> str | None:
    """The recorded run's ``<champion_dir>.dvc`` (the published champion) into the workspace,
    for ``dvc pull``; None where that run published none. The file stays out of the record."""
    dvc_file = f"{champion_dir}.dvc"
    if not git(ws, "ls-tree", "--name-only", commit, "--", dvc_file):
        return None
    (ws / dvc_file).parent.mkdir(parents=True, exist_ok=True)
    (ws / dvc_file).write_text(git(ws, "show", f"{commit}:{dvc_file}") + "\n")
    return dvc_file


def seed(ws: Path, commit: str, stages: dict[str, list[str]], order: list[str]) -> bool:
    """Give the workspace the recorded run's ``dvc.lock`` entries of ``stages`` (name -> its
    uncached outputs), those outputs and its .gitignore files (one inside a folder, as in
    models/checkpoints, is in the folder's hash); False where it lacks one of the stages."""
    import yaml
    recorded = (yaml.safe_load(git(ws, "show", f"{commit}:dvc.lock", check=False) or "{}")
                or {}).get("stages", {})
    if not stages or any(name not in recorded for name in stages):
        return False
    lock = read_lock(ws)
    lock.update({name: recorded[name] for name in stages})
    write_lock(ws, lock, order)
    paths = [path.rstrip("/") for outs in stages.values() for path in outs]
    files = [f for f in git(ws, "ls-tree", "-r", "--name-only", commit).splitlines()
             if f.endswith(".gitignore") or any(f == p or f.startswith(p + "/") for p in paths)]
    if files:
        git(ws, "checkout", commit, "--", *files)
    return True


def unchanged_since(ws: Path, later: dict[str, list[str]], order: list[str], branch: str,
                    remote: str) -> str | None:
    """The last recorded run's id where DVC finds every stage of ``later`` (name -> its
    uncached outputs) up to date against it (data, code, params); else None."""
    try:
        last = last_run(ws, branch)
        if not last or not seed(ws, last[0], later, order):
            return None
    except WorkspaceError as exc:
        print(f"workspace: cannot compare with the last recorded run: {exc}", flush=True)
        return None
    subprocess.run([_dvc(), "pull", "--remote", remote, "--allow-missing"], cwd=ws,
                   capture_output=True)   # what the remote lacks shows up in the status
    status = subprocess.run([_dvc(), "status", "--json", *later], cwd=ws, capture_output=True,
                            text=True)
    return last[1] if status.returncode == 0 and not json.loads(status.stdout or "{}") else None


def read_lock(ws: Path) -> dict:
    import yaml

    path = ws / "dvc.lock"
    return (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.exists() else {}


def write_lock(ws: Path, stages: dict, order: list[str]) -> None:
    """``dvc.lock`` with stages in dvc.yaml's order, in DVC's own YAML style."""
    from dvc.utils.serialize import dump_yaml

    rank = {name: i for i, name in enumerate(order)}
    ordered = dict(sorted(stages.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    dump_yaml(ws / "dvc.lock", {"schema": "2.0", "stages": ordered})
