"""What the DAG's stage tasks do: run one DVC stage in a workspace of its own.

``dags/retrain.py`` holds scheduling only; this module holds the work, so tests
call it directly and ``python -m pipeline.orchestration.orchestrate <stage>`` runs a task by
hand (``pipeline/orchestration/publish.py`` is the last task). DVC stays the source of truth:
every stage runs through ``dvc repro``, so an unchanged stage is skipped and
its ``dvc.lock`` entry is what plain ``dvc repro`` writes.

Workers share nothing. Each task clones the run's commit into a private
workspace (``pipeline/orchestration/workspace.py``), applies the record its upstream tasks
handed on through XCom (their ``dvc.lock`` entries and small uncached
outputs), pulls exactly its stage's data inputs from the DVC remote, runs
``dvc repro --single-item <stage>``, pushes the stage's outputs and returns
the record with its own entry added. So any task can run on any worker, a
retry may land elsewhere, and trainings never contend for one DVC lock.

Every run reruns fetch and validate (``OUTSIDE``: they read what DVC does not
track); validate gets the published champion from the record branch. With
``look_ahead`` a task asks DVC whether the stages after it are up to date
against the last recorded run: a run that changed nothing trains nothing.

Failures are raised as the classes the DAG's retry policy acts on
(``pipeline/orchestration/failures.py``): a DVC remote that fails is transient
(retried later), a missing stage or bad params permanent (never retried), and
a failed ``dvc repro`` is sorted by ``failures.classify``.

Airflow imports this module when it parses the DAG, so only the standard
library is imported at the top; YAML, pydantic and DVC load when a task runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from pipeline.orchestration import resume, workspace
from pipeline.orchestration.failures import (ParamsError, PermanentError, RemoteUnavailable,
                                             StageFailed, TransientError, classify, error_lines)

log = logging.getLogger("pipeline.orchestration.orchestrate")

OUTPUT_TAIL_LINES = 400     # lines of a command's output kept to explain a failure
# Stages that read what DVC does not track: rerun on every run, DVC's hashes decide the rest.
OUTSIDE = {"fetch": "the dataset's source", "validate": "the published champion's data profile"}


# --- running commands -------------------------------------------------------

def command_env(**extra: str) -> dict:
    """Environment of dvc, git and the stages they run."""
    # Stages run `python -m pipeline.<stage>`: this interpreter's venv must come first.
    env = {**os.environ, **extra}
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


def _stream(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[int, str]:
    """Run a command, logging each output line as it comes; return (exit code, tail)."""
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env or command_env(), stdout=subprocess.PIPE,
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


def dvc(cwd: Path, *args: str, what: str, quiet: bool = False,
        env: dict | None = None) -> tuple[int, str]:
    """Run ``dvc <args>`` in ``cwd``; return (exit code, output).

    ``quiet`` captures stdout alone (for --json) instead of logging the merged output;
    ``env`` adds variables to the command's environment.
    """
    cmd = [_dvc_exe(), *args]
    if not quiet:
        return _stream(cmd, cwd, command_env(**(env or {})))
    proc = subprocess.run(cmd, cwd=cwd, env=command_env(**(env or {})), capture_output=True,
                          text=True)
    return proc.returncode, proc.stdout if proc.returncode == 0 else f"{proc.stdout}\n{proc.stderr}"


def _outcome(stage: str, output: str) -> str:
    if f"Running stage '{stage}'" in output:
        return "ran"
    if "is cached - skipping run" in output:
        return "restored"  # from DVC's run cache
    return "unchanged"


def stage_facts(ws: Path, stage: str) -> dict:
    """From DVC itself: the pipeline's stage order, the stage's uncached outputs
    (handed on in the record) and the upstream outputs it reads (pulled)."""
    from dvc.repo import Repo

    with Repo(str(ws)) as repo:
        stages = list(repo.index.stages)
        matches = [s for s in stages if s.name == stage]
        if not matches:
            raise ParamsError(f"{stage}: no such stage in dvc.yaml (not retried)")
        this = matches[0]
        cached = {str(o.def_path) for s in stages if s is not this for o in s.outs if o.use_cache}
        deps = [str(d.def_path) for d in this.deps]
        inside = lambda a, b: a == b or a.startswith(b.rstrip("/") + "/")  # noqa: E731
        uncached = {s.name: [str(o.def_path) for o in s.outs if not o.use_cache] for s in stages}
        return {"order": [s.name for s in stages], "uncached": uncached[stage],
                "later": {s.name: uncached[s.name] for s in stages[stages.index(this) + 1:]},
                "inputs": sorted(o for o in cached if any(inside(o, d) or inside(d, o)
                                                          for d in deps))}


def _params(ws: Path):
    from pipeline import config

    try:
        return config.load_project(ws)
    except config.ConfigError as exc:
        raise ParamsError(f"params.yaml is invalid (not retried): {exc}") from None


def open_task_workspace(task: str, upstream: dict | None, *, run_id: str,
                        project: Path | None, bundle=None):
    """Clone the run's commit for ``task``, wire DVC, apply upstream's record."""
    try:
        source = workspace.resolve_source(upstream, bundle, project)
        root = workspace.work_root(project)
        ws = workspace.open_workspace(root, run_id, task, source)
        params = _params(ws)
        workspace.configure(ws, root, params.publish.remote,
                            workspace.remote_options(project, params.publish.remote))
    except workspace.WorkspaceError as exc:
        raise StageFailed(f"{task}: {exc}") from None
    return ws, source, params


def pull(ws: Path, targets: list[str], remote: str, what: str, allow_missing=False) -> None:
    """``dvc pull`` of exactly ``targets``; a remote that fails is transient."""
    if not targets:
        return
    args = ["pull", "--remote", remote, *(["--allow-missing"] if allow_missing else []), *targets]
    rc, out = dvc(ws, *args, what=what)
    if rc != 0:
        raise RemoteUnavailable(f"{what}: cannot pull {', '.join(targets)} from DVC remote "
                                f"{remote!r} (retried later)\n{error_lines(out, what)}")


def push(ws: Path, targets: list[str], remote: str, what: str) -> None:
    rc, out = dvc(ws, "push", "--remote", remote, *targets, what=what)
    if rc != 0 and "config file error" in out:
        raise PermanentError(f"{what}: DVC remote {remote!r} is not configured (not retried; "
                             f"see `dvc remote list`)\n{error_lines(out, what)}")
    if rc != 0:
        raise RemoteUnavailable(f"{what}: cannot push to DVC remote {remote!r} (retried "
                                f"later)\n{error_lines(out, what)}")


def _repro(ws: Path, stage: str, run_id: str, remote: str) -> tuple[int, str]:
    """``dvc repro`` of one stage. A training goes on from the state an earlier try
    left in the DVC remote, and keeps its own state there as it goes (``resume``)."""
    work = resume.work_of(ws, stage)
    if work is None:
        return dvc(ws, "repro", *(["--force"] if stage in OUTSIDE else []), "--single-item",
                   stage, what=stage)
    resume.fetch(ws, stage, run_id, remote, work)
    with resume.mirrored(ws, stage, run_id, remote, work):
        return dvc(ws, "repro", "--single-item", stage, what=stage,
                   env={resume.SNAPSHOT_ENV: str(resume.snapshot_path(work).resolve())})


def run_stage(stage: str, upstream: dict | None = None, *, run_id: str = "manual",
              project: Path | str | None = None, bundle=None, look_ahead: bool = False) -> dict:
    """Run one stage in a fresh workspace; return the record for downstream tasks.

    The record also lists the models of the run's params.yaml (``models``),
    which the DAG maps ``train`` over, and with ``look_ahead`` the last recorded
    run the later stages are unchanged since (``unchanged_since``; None if any changed).
    """
    started = time.monotonic()
    project = Path(project).resolve() if project else None
    ws, source, params = open_task_workspace(stage, upstream, run_id=run_id, project=project,
                                             bundle=bundle)
    remote = params.publish.remote
    facts = stage_facts(ws, stage)
    workspace.apply(ws, upstream or {}, facts["order"])
    pull(ws, facts["inputs"], remote, stage)
    pull(ws, [stage], remote, stage, allow_missing=True)  # so an unchanged stage is skipped
    if stage == "validate":   # it compares the data with the published champion's
        try:
            last = workspace.last_run(ws, params.publish.record_branch)
            champion = last and workspace.place_champion(ws, last[0], params.publish.champion_dir)
        except workspace.WorkspaceError as exc:
            raise RemoteUnavailable(f"validate: cannot read the published champion (retried "
                                    f"later): {exc}") from None
        if champion:
            pull(ws, [champion], remote, stage)
    rc, out = _repro(ws, stage, run_id, remote)
    if rc != 0:
        raise classify(stage, out, ws)
    push(ws, [stage], remote, stage)
    if resume.work_of(ws, stage):
        resume.discard(ws, stage, run_id, remote)
    outcome, seconds = _outcome(stage, out), round(time.monotonic() - started, 1)
    record = workspace.capture(ws, stage, facts["uncached"], source, upstream or {},
                               outcome=outcome, seconds=seconds, finished=time.time())
    record["models"] = list(params.models)
    log.info("%s: %s in %.1f s on %s (commit %s)", stage, outcome, seconds,
             record["stages"][stage]["host"], source.commit[:10])
    if look_ahead:
        record["unchanged_since"] = workspace.unchanged_since(
            ws, facts["later"], facts["order"], params.publish.record_branch, remote)
        if record["unchanged_since"]:
            log.info("retrain: nothing changed since run %s (data, code, params): no training",
                     record["unchanged_since"])
    shutil.rmtree(ws, ignore_errors=True)
    return record


def model_names(record: dict) -> list[str]:
    """The models of the run's params.yaml, in order: one ``train@<name>`` stage each."""
    return list(record["models"])


# --- command line -------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.orchestration.orchestrate <stage> [--upstream FILE] [--record FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.orchestration.orchestrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", help="a dvc.yaml stage, e.g. fetch or train@gru")
    parser.add_argument("--upstream", type=Path, action="append", default=[],
                        help="record of an upstream task (JSON); repeat for several")
    parser.add_argument("--record", type=Path, help="write this task's record here (JSON)")
    parser.add_argument("--run-id", default="manual")
    parser.add_argument("--project", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        upstream = workspace.merge([json.loads(p.read_text()) for p in args.upstream])
        record = run_stage(args.stage, upstream, run_id=args.run_id, project=args.project)
    except (OSError, ValueError, workspace.WorkspaceError) as exc:
        print(f"orchestrate: cannot use the upstream records: {exc}", file=sys.stderr)
        return 1
    except StageFailed as exc:
        print(f"orchestrate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 75 if isinstance(exc, TransientError) else 1  # 75 = EX_TEMPFAIL
    if args.record:
        args.record.write_text(json.dumps(record))
    entry = record["stages"][args.stage]
    print(json.dumps({"stage": args.stage, "outcome": entry["outcome"],
                      "seconds": entry["seconds"], "commit": record["commit"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
