"""What the DAG's stage tasks do: run one DVC stage (``train`` in isolation).

``dags/retrain.py`` holds scheduling only; this module holds the work, so tests
call it directly and ``python -m pipeline.orchestrate stage <name>`` or
``... train <model>`` runs a task by hand (``pipeline/publish.py`` is the last
task). DVC stays the source of truth: every stage runs through ``dvc repro``,
so an unchanged stage is skipped and ``dvc.lock`` records every run.

Parallel trainings. ``dvc repro`` holds a repository-wide lock for as long as
its stage runs, so two trainings in one workspace cannot overlap ("Unable to
acquire lock", treeverse/dvc#755). ``train()`` therefore runs ``train@<model>``
in a throwaway DVC workspace of its own under ``tmp/dvc-workspaces/``, which
shares the project's DVC cache, then moves the outputs into the project and
records them with ``dvc commit`` (the lock is held for about a second). The
recorded entry must equal the one the workspace's ``dvc repro`` wrote, so
``dvc.lock`` ends up as plain ``dvc repro`` would have left it.

Failures are sorted for the DAG's retry policy: ``TransientError`` (a mirror
down, the DVC lock busy) is worth retrying later; ``PermanentError`` (data that
failed validation, bad params) is not; anything else is a ``StageFailed``.

Airflow imports this module when it parses the DAG, so only the standard
library is imported at the top; YAML, pydantic and DVC load when a task runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

log = logging.getLogger("pipeline.orchestrate")

WORKSPACES = Path("tmp/dvc-workspaces")   # isolated training workspaces (git-ignored)
# Copied into each training workspace: what `python -m pipeline.train` reads.
WORKSPACE_FILES = ("dvc.yaml", "dvc.lock", "params.yaml", "pipeline")
LOCK_MESSAGE = "Unable to acquire lock"
STAGE_LOCK_WAIT_S = 60.0    # a stage waits this long for the lock, then Airflow retries later
COMMIT_LOCK_WAIT_S = 600.0  # a finished training waits longer: giving up would waste it
OUTPUT_TAIL_LINES = 400     # lines of a command's output kept to explain a failure


class StageFailed(RuntimeError):
    """A stage or publish step failed; the message is what the task log shows."""


class TransientError(StageFailed):
    """Likely to pass on a later try: retried with back-off."""


class LockBusy(TransientError):
    """Another DVC process held the repository lock for too long."""


class MirrorUnavailable(TransientError):
    """No dataset mirror answered."""


class PermanentError(StageFailed):
    """Trying again cannot help until a person changes data or params: never retried."""


class DataValidationError(PermanentError):
    """The raw data failed the validate stage's expectations."""


class ParamsError(PermanentError):
    """params.yaml is unusable."""


# --- running commands -------------------------------------------------------

def command_env() -> dict:
    """Environment of dvc, git and the stages they run."""
    # Stages run `python -m pipeline.<stage>`: this interpreter's venv must come first.
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def _dvc_exe() -> str:
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else "dvc"


def _kill(proc: subprocess.Popen) -> None:
    """Stop a command and its children (dvc -> the stage's python)."""
    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait_s)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _stream(cmd: list[str], cwd: Path) -> tuple[int, str]:
    """Run a command, logging each output line as it comes; return (exit code, tail)."""
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    proc = subprocess.Popen(cmd, cwd=cwd, env=command_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True)
    try:
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            log.info("%s", line)
        return proc.wait(), "\n".join(tail)
    except BaseException:
        # A task timeout or kill lands here: never leave a training (and the DVC
        # lock it holds) running behind the task's back.
        _kill(proc)
        raise


def dvc(cwd: Path, *args: str, what: str, lock_wait_s: float | None = None,
        quiet: bool = False) -> tuple[int, str]:
    """Run ``dvc <args>`` in ``cwd``; wait out a busy lock for up to ``lock_wait_s``
    (default ``STAGE_LOCK_WAIT_S``).

    Returns (exit code, output); ``quiet`` captures stdout alone (for --json)
    instead of logging the merged output.
    """
    lock_wait_s = STAGE_LOCK_WAIT_S if lock_wait_s is None else lock_wait_s
    deadline, delay = time.monotonic() + lock_wait_s, 1.0
    while True:
        cmd = [_dvc_exe(), *args]
        if quiet:
            proc = subprocess.run(cmd, cwd=cwd, env=command_env(), capture_output=True, text=True)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        else:
            (rc, out), err = _stream(cmd, cwd), ""
        if rc == 0 or LOCK_MESSAGE not in out + err:
            return rc, out if rc == 0 or not quiet else f"{out}\n{err}"
        if time.monotonic() >= deadline:
            raise LockBusy(f"{what}: another DVC process kept the lock of {cwd} for over "
                           f"{lock_wait_s:.0f} s (a manual `dvc repro`?; retried later)")
        log.info("%s: DVC lock busy, trying again in %.0f s", what, delay)
        time.sleep(delay)
        delay = min(delay * 2, 30.0)


# --- stages -----------------------------------------------------------------

def error_lines(output: str, stage: str) -> str:
    """The stage's own error message (``<stage>: error: ...`` and its indented
    continuation), else DVC's ``ERROR:`` lines, else the last lines."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(f"{stage}: error:")), None)
    if start is not None:
        end = start + 1
        while end < len(lines) and lines[end].startswith((" ", "\t")):
            end += 1
        return "\n".join(lines[start:end])
    dvc_errors = [line for line in lines if line.startswith("ERROR:")]
    return "\n".join(dvc_errors or lines[-20:])


def classify(stage: str, output: str, project: Path) -> StageFailed:
    """Turn a failed ``dvc repro`` into the exception the retry policy acts on."""
    message = error_lines(output, stage)
    if stage == "validate" and _validation_failed(project):
        return DataValidationError(
            f"validate: the raw data failed validation (not retried: fix the data or the "
            f"`validate` bounds in params.yaml)\n{message}")
    if re.search(r"error: params\.yaml: ", message):
        return ParamsError(f"{stage}: params.yaml is invalid (not retried)\n{message}")
    if stage == "fetch" and "every mirror failed" in message:
        return MirrorUnavailable(f"fetch: no dataset mirror answered (retried later)\n{message}")
    return StageFailed(f"{stage}: the stage failed\n{message}")


def _validation_failed(project: Path) -> bool:
    from pipeline import config

    try:
        return json.loads((project / config.VALIDATION_METRICS).read_text())["success"] is False
    except (OSError, ValueError, KeyError):
        return False


def _outcome(stage: str, output: str) -> str:
    if f"Running stage '{stage}'" in output:
        return "ran"
    if "is cached - skipping run" in output:
        return "restored"  # from DVC's run cache
    return "unchanged"


def run_stage(project: Path | str, stage: str) -> dict:
    """``dvc repro --single-item <stage>`` in the project: runs it only if it changed."""
    project, started = Path(project).resolve(), time.monotonic()
    rc, out = dvc(project, "repro", "--single-item", stage, what=stage)
    if rc != 0:
        raise classify(stage, out, project)
    result = {"stage": stage, "outcome": _outcome(stage, out),
              "seconds": round(time.monotonic() - started, 1)}
    log.info("%s: %s (%.1f s)", stage, result["outcome"], result["seconds"])
    return result


def model_names(project: Path | str) -> list[str]:
    """The models of params.yaml, in order: one ``train@<name>`` stage each."""
    from pipeline import config

    try:
        return list(config.load(Path(project) / config.PARAMS_FILE).models)
    except config.ConfigError as exc:
        raise ParamsError(f"params.yaml is invalid (not retried): {exc}") from None


def changed(project: Path, stage: str) -> bool:
    """Whether ``dvc status`` finds the stage's deps, params or outputs changed."""
    rc, out = dvc(project, "status", "--json", stage, what=stage, quiet=True)
    if rc != 0:
        raise StageFailed(f"{stage}: dvc status failed:\n{out.strip()}")
    return bool(json.loads(out or "{}"))


def _locked(project: Path) -> dict:
    """The stages recorded in ``dvc.lock``."""
    import yaml

    path = project / "dvc.lock"
    return (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.exists() else {}


def _stage_def(project: Path, stage: str) -> dict:
    """deps and params of a stage as dvc.yaml declares them (foreach resolved)."""
    import yaml

    name, _, key = stage.partition("@")
    spec = yaml.safe_load((project / "dvc.yaml").read_text())["stages"][name]
    spec = spec.get("do", spec)
    fill = (lambda s: str(s).replace("${key}", key)) if key else str
    return {"deps": [fill(d) for d in spec.get("deps", [])],
            "params": [fill(p) for p in spec.get("params", [])]}


def _param(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _inputs(project: Path, stage: str, data_deps: list[str]) -> dict:
    """What a training reads, to notice when the project's inputs change under it."""
    import yaml

    spec = _stage_def(project, stage)
    params = yaml.safe_load((project / "params.yaml").read_text())
    outs = {o["path"]: o.get("md5") for s in _locked(project).values()
            for o in s.get("outs", [])}
    files = {}
    for dep in spec["deps"]:
        if dep not in data_deps:
            for f in sorted([project / dep] if (project / dep).is_file()
                            else (project / dep).rglob("*")):
                if f.is_file():
                    files[str(f.relative_to(project))] = hashlib.md5(f.read_bytes()).hexdigest()
    return {"files": files, "data": {d: outs.get(d) for d in data_deps},
            "params": {p: _param(params, p) for p in spec["params"]}}


def replace_path(src: Path, dest: Path) -> None:
    """Put ``src`` at ``dest`` in one rename, so readers never see half of it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = dest.with_name(f".{dest.name}.incoming")
    remove_path(staged)
    if src.is_dir():
        shutil.copytree(src, staged)
    else:
        shutil.copy2(src, staged)
    if dest.is_dir():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        staged.rename(dest)
        shutil.rmtree(old)
    else:
        os.replace(staged, dest)


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _same_entry(a: dict, b: dict) -> bool:
    """Two dvc.lock entries record the same run (list order aside)."""
    def norm(entry):
        return {"cmd": entry.get("cmd"), "params": entry.get("params"),
                **{k: sorted(entry.get(k) or [], key=lambda x: x["path"]) for k in ("deps", "outs")}}
    return norm(a) == norm(b)


def train(project: Path | str, model: str) -> dict:
    """``train@<model>`` in an isolated workspace; outputs merged into the project.

    Safe to run for several models at once: each has its own workspace and DVC
    lock, and only the final ``dvc commit`` (about a second) takes the project's.
    """
    project, stage = Path(project).resolve(), f"train@{model}"
    if model not in model_names(project):
        raise ParamsError(f"{stage}: no model {model!r} in params.yaml (not retried)")
    if not changed(project, stage):
        log.info("%s: unchanged since its recorded run, skipping", stage)
        return {"stage": stage, "outcome": "unchanged", "seconds": 0.0}

    ws = project / WORKSPACES / stage.replace("@", "-")
    try:
        data_deps = _workspace(project, ws, stage)
        started = time.time()
        rc, out = dvc(ws, "repro", "--single-item", stage, what=stage)
        finished = time.time()
        if rc != 0:
            raise classify(stage, out, ws)
        if _inputs(project, stage, data_deps) != _inputs(ws, stage, data_deps):
            raise TransientError(f"{stage}: code, params or data of the project changed while "
                                 f"it trained; not recording this run (the retry trains again)")
        entry = _locked(ws)[stage]
        for out_path in (o["path"] for o in entry["outs"]):
            replace_path(ws / out_path, project / out_path)
        rc, out = dvc(project, "commit", "--force", stage, what=stage,
                      lock_wait_s=COMMIT_LOCK_WAIT_S)
        if rc != 0:
            raise StageFailed(f"{stage}: dvc commit failed\n{error_lines(out, stage)}")
        if not _same_entry(_locked(project).get(stage, {}), entry):
            raise StageFailed(f"{stage}: dvc.lock does not match the workspace's record; "
                              f"the project changed during training")
    finally:
        shutil.rmtree(ws, ignore_errors=True)
    result = {"stage": stage, "outcome": "ran", "seconds": round(finished - started, 1),
              "started": started, "finished": finished}
    log.info("%s: trained in %.1f s and recorded in dvc.lock", stage, result["seconds"])
    return result


def _workspace(project: Path, ws: Path, stage: str) -> list[str]:
    """A fresh DVC workspace sharing the project's cache, with the stage's inputs.

    Returns the stage's data dependencies (outputs of upstream stages), which
    are checked out from the cache as ``dvc.lock`` records them.
    """
    from pipeline.train import WORK_ROOT

    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    # .dvc first: from then on the project's DVC skips ws as a sub-repository.
    for args in (("init", "--no-scm", "-q"), ("config", "core.analytics", "false"),
                 ("config", "cache.dir", _cache_dir(project))):
        if dvc(ws, *args, what=stage, quiet=True)[0] != 0:
            raise StageFailed(f"{stage}: could not set up the workspace {ws}")
    for rel in WORKSPACE_FILES:
        src = project / rel
        if src.is_dir():
            shutil.copytree(src, ws / rel, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, ws / rel)
    # An interrupted training resumes from tmp/train/<model> (see pipeline.train):
    # keep that state in the project, where the next try looks for it.
    (project / WORK_ROOT).mkdir(parents=True, exist_ok=True)
    (ws / WORK_ROOT).parent.mkdir(parents=True, exist_ok=True)
    (ws / WORK_ROOT).symlink_to(project / WORK_ROOT, target_is_directory=True)

    recorded = {o["path"] for s in _locked(ws).values() for o in s.get("outs", [])}
    data_deps = [d for d in _stage_def(ws, stage)["deps"] if d in recorded]
    if data_deps and dvc(ws, "checkout", *data_deps, what=stage)[0] != 0:
        raise StageFailed(f"{stage}: could not check out {', '.join(data_deps)} from the "
                          f"DVC cache; run the upstream stages first")
    return data_deps


def _cache_dir(project: Path) -> str:
    rc, out = dvc(project, "cache", "dir", what="cache", quiet=True)
    if rc != 0:
        raise StageFailed(f"cannot find the DVC cache of {project}:\n{out.strip()}")
    return str((project / out.strip()).resolve())


# --- command line -------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.orchestrate stage <name> | train <model>``."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.orchestrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("stage", help="dvc repro one stage").add_argument("name")
    sub.add_parser("train", help="train one model in its own workspace").add_argument("model")
    parser.add_argument("--project", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.command == "stage":
            result = run_stage(args.project, args.name)
        else:
            result = train(args.project, args.model)
    except StageFailed as exc:
        print(f"orchestrate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 75 if isinstance(exc, TransientError) else 1  # 75 = EX_TEMPFAIL
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
