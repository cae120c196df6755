"""A training's resume state, kept in the DVC remote while the training runs.

A worker can die in the middle of a training (``kill -9``, a lost host), and
its retry may run on another worker, which shares nothing with the dead one
but the git and DVC remotes. So the state to resume from must be in the DVC
remote before the worker dies. ``pipeline/stages/train.py`` keeps it in its
work folder ``tmp/train/<model>`` (Keras' ``BackupAndRestore``, the best
checkpoint so far, the dvclive curves) and, when ``SNAPSHOT_ENV`` names a
file, packs it there after every check, replaced atomically. While the stage
runs, ``mirrored`` copies each new snapshot to the remote under
``resume/<run>/<stage>.tar``, beside DVC's content-addressed ``files/`` (which
it never touches); a retry on any worker first ``fetch``-es it, so the
training goes on from its last check with every earlier check's curves, and
``discard`` removes it once the stage's outputs are pushed. The snapshot only ever resumes the same params
and data: train.py checks its fingerprint and starts over otherwise. Each
save and each fetch logs the check it holds (``state after check N saved``,
``resuming after check N``), so a task log shows where a retry went on from.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
import threading
from contextlib import contextmanager
from pathlib import Path

from pipeline.orchestration.workspace import RESUME_DIR

log = logging.getLogger("pipeline.orchestration.resume")

SNAPSHOT_ENV = "PIPELINE_RESUME_SNAPSHOT"   # the file train.py packs its state into
EVERY_S = 2.0                                # how often a running stage's snapshot is looked at


def work_of(ws: Path, stage: str) -> Path | None:
    """``train@gru`` -> its work folder in the workspace; None for stages that do not train."""
    return ws / RESUME_DIR / stage.split("@", 1)[1] if stage.startswith("train@") else None


def snapshot_path(work: Path) -> Path:
    """The snapshot of the work folder ``work``, beside it."""
    return work.parent / f"{work.name}.snapshot.tar"


def checks_in(snapshot: Path) -> int | None:
    """The checks a snapshot holds as finished (Keras' ``BackupAndRestore`` epoch);
    None if it has no readable backup."""
    try:
        with tarfile.open(snapshot) as tar:
            meta = tar.extractfile("backup/training_metadata.json")
            return int(json.load(meta)["epoch"]) if meta else None
    except (OSError, KeyError, ValueError, tarfile.TarError):
        return None


def _remote(ws: Path, remote: str):
    """The DVC remote as DVC itself opens it (the workspace's config and credentials)."""
    from dvc.repo import Repo

    with Repo(str(ws)) as repo:
        found = repo.cloud.get_remote(remote)
        return found.fs, found.path


def _key(fs, root: str, run_id: str, stage: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in run_id)
    return fs.join(root, "resume", safe, f"{stage}.tar")


def fetch(ws: Path, stage: str, run_id: str, remote: str, work: Path) -> bool:
    """Unpack the remote's snapshot of this run's ``stage`` into ``work``, unless a
    state is already there (an earlier try on this worker). True if one was fetched."""
    if (work / "backup").exists():
        return False
    try:
        fs, root = _remote(ws, remote)
        key = _key(fs, root, run_id, stage)
        if not fs.exists(key):
            return False
        local = snapshot_path(work)
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(key, str(local))
    except Exception as exc:   # no state to resume is never fatal: the training starts over
        log.warning("resume: cannot read %s's saved state from DVC remote %r (%s); starting over",
                    stage, remote, exc)
        return False
    checks = checks_in(local)
    with tarfile.open(local) as tar:
        tar.extractall(work, filter="data")
    log.info("resume: %s's state fetched from DVC remote %r; resuming after check %s",
             stage, remote, checks)
    return True


@contextmanager
def mirrored(ws: Path, stage: str, run_id: str, remote: str, work: Path):
    """While the body runs, copy every new snapshot of ``work`` to the remote."""
    stop, local = threading.Event(), snapshot_path(work)

    def copy_new() -> None:
        seen = None
        fs = key = None
        while True:
            stopping = stop.wait(EVERY_S)
            try:
                stamp = local.stat().st_mtime_ns
            except FileNotFoundError:
                stamp = None
            if stamp is not None and stamp != seen:
                # A hard link pins this snapshot: the one sent is the one whose check is logged.
                pinned = local.with_name(local.name + ".sending")
                try:
                    pinned.unlink(missing_ok=True)
                    os.link(local, pinned)
                    if fs is None:
                        fs, root = _remote(ws, remote)
                        key = _key(fs, root, run_id, stage)
                    fs.put_file(str(pinned), key)
                    seen = stamp
                    log.info("resume: %s's state after check %s saved to DVC remote %r",
                             stage, checks_in(pinned), remote)
                except Exception as exc:   # the training goes on; the next snapshot retries
                    log.warning("resume: cannot save %s's state to DVC remote %r: %s",
                                stage, remote, exc)
                finally:
                    pinned.unlink(missing_ok=True)
            if stopping:
                return

    thread = threading.Thread(target=copy_new, name=f"resume-{stage}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)


def discard(ws: Path, stage: str, run_id: str, remote: str) -> None:
    """Remove the remote's snapshot once the stage's outputs are in the remote."""
    try:
        fs, root = _remote(ws, remote)
        key = _key(fs, root, run_id, stage)
        if fs.exists(key):
            fs.rm(key)
    except Exception as exc:   # a leftover snapshot only costs space
        log.warning("resume: cannot remove %s's saved state from DVC remote %r: %s",
                    stage, remote, exc)
