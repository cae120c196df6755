"""What each task of the Airflow DAG does: run one DVC stage, or publish.

``dags/retrain.py`` holds scheduling only; this module holds the work, so tests
call it directly and ``python -m pipeline.orchestrate`` runs a task by hand.
DVC stays the source of truth: every stage runs through ``dvc repro``, so an
unchanged stage is skipped and ``dvc.lock`` records every run.

Parallel trainings. ``dvc repro`` holds a repository-wide lock for as long as
its stage runs, so two trainings in one workspace cannot overlap ("Unable to
acquire lock", treeverse/dvc#755). ``train()`` therefore runs ``train@<model>``
in a throwaway DVC workspace of its own under ``tmp/dvc-workspaces/``, which
shares the project's DVC cache, then moves the outputs into the project and
records them with ``dvc commit`` (the lock is held for about a second). The
recorded entry must equal the one the workspace's ``dvc repro`` wrote, so
``dvc.lock`` ends up as plain ``dvc repro`` would have left it.

Failures are sorted for the retry policy: ``TransientError`` (a mirror down,
the DVC lock busy) is worth retrying later; ``PermanentError`` (data that
failed validation, bad params) is not; anything else is a ``StageFailed``.

This module is imported when Airflow parses the DAG, so it imports only the
standard library at the top; YAML, pydantic and DVC are loaded when a task runs.
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
from datetime import datetime, timezone
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

def _env() -> dict:
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
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE,
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
            proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        else:
            (rc, out), err = _stream(cmd, cwd), ""
        if rc == 0 or LOCK_MESSAGE not in out + err:
            return rc, out if rc == 0 or not quiet else f"{out}\n{err}"
        if time.monotonic() >= deadline:
            raise LockBusy(f"{what}: another DVC process kept the lock of {cwd} for over "
                           f"{lock_wait_s:.0f} s (a manual `dvc repro`?); will retry later")
        log.info("%s: DVC lock busy, trying again in %.0f s", what, delay)
        time.sleep(delay)
        delay = min(delay * 2, 30.0)


def _git(project: Path, *args: str, env: dict | None = None, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=project, capture_output=True, text=True,
                          env={**_env(), **(env or {})})
    if check and proc.returncode != 0:
        raise StageFailed(f"publish: git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip() if proc.returncode == 0 else ""


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
        raise ParamsError(f"params.yaml is invalid; not retrying: {exc}") from None


def changed(project: Path, stage: str) -> bool:
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


def _replace(src: Path, dest: Path) -> None:
    """Put ``src`` at ``dest`` in one rename, so readers never see half of it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = dest.with_name(f".{dest.name}.incoming")
    _remove(staged)
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


def _remove(path: Path) -> None:
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
            _replace(ws / out_path, project / out_path)
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


# --- publish ----------------------------------------------------------------

def decide(new_val: float, old_val: float | None, margin: float, same_model: bool) -> str:
    """``replaced``, ``kept`` or ``unchanged`` (this very model is already published).

    A new champion must beat the published one by at least ``margin`` on
    validation accuracy; a tie never replaces it.
    """
    if same_model:
        return "unchanged"
    if old_val is None:
        return "replaced"
    gain = round(new_val - old_val, 9)  # 0.9915 - 0.991 is 0.000499999... in floats
    return "replaced" if gain > 0 and gain >= margin else "kept"


def record_run(project: Path, branch: str, message: str, run_id: str) -> str:
    """Commit the project as it ran onto ``branch``, leaving HEAD, index and files alone.

    The commit is HEAD's tree plus every change git sees in the workspace
    (dvc.lock, params.yaml, metrics/, reports/, the champion's .dvc file, ...),
    built in a private index. Its first parent is the branch's previous run, so
    ``dvc metrics diff <branch>~1 <branch>`` compares two runs; the code commit
    it ran from is the second parent. A retry of the same run reuses its commit.
    """
    if _git(project, "symbolic-ref", "--quiet", "--short", "HEAD", check=False) == branch:
        raise PermanentError(f"publish: record_branch {branch!r} is the checked-out branch; "
                             f"give publish.record_branch a branch of its own (not retried)")
    previous = _git(project, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}",
                    check=False)
    if previous and _git(project, "log", "-1", "--format=%s", previous).startswith(
            f"retrain {run_id}:"):
        return previous
    head = _git(project, "rev-parse", "--verify", "--quiet", "HEAD", check=False)
    index = Path(project, _git(project, "rev-parse", "--git-path", f"retrain-{os.getpid()}.index"))
    env = {"GIT_INDEX_FILE": str(index)}
    if not _git(project, "config", "user.email", check=False):
        env.update(GIT_AUTHOR_NAME="retrain DAG", GIT_AUTHOR_EMAIL="retrain@localhost",
                   GIT_COMMITTER_NAME="retrain DAG", GIT_COMMITTER_EMAIL="retrain@localhost")
    try:
        if head:
            _git(project, "read-tree", head, env=env)
        _git(project, "add", "--all", ".", env=env)
        tree = _git(project, "write-tree", env=env)
    finally:
        index.unlink(missing_ok=True)
    parents = [previous] if previous else []
    if head and not (previous and _is_ancestor(project, head, previous)):
        parents.append(head)
    commit = _git(project, "commit-tree", tree, *[a for p in parents for a in ("-p", p)],
                  "-m", message, env=env)
    _git(project, "update-ref", "-m", f"retrain {run_id}", f"refs/heads/{branch}", commit,
         previous or "0" * 40)
    return commit


def _is_ancestor(project: Path, a: str, b: str) -> bool:
    return subprocess.run(["git", "merge-base", "--is-ancestor", a, b], cwd=project,
                          capture_output=True).returncode == 0


def _champion(folder: Path) -> dict | None:
    """Model, val accuracy and model checksum of a champion folder (models/best or the published one)."""
    try:
        card = json.loads((folder / "card.json").read_text())
    except (OSError, ValueError):
        return None
    published = folder / "published.json"
    return {"model": card["model"], "val_accuracy": card["metrics"]["val_accuracy"],
            "md5": _md5(folder / "model.keras"),
            "published": json.loads(published.read_text()) if published.exists() else {}}


def _md5(path: Path) -> str | None:
    return hashlib.md5(path.read_bytes()).hexdigest() if path.exists() else None


def _verdict(decision: str, new: dict, old: dict | None, margin: float) -> str:
    def show(c):
        return f"{c['model']} (val accuracy {c['val_accuracy']:.4f})"
    if decision == "replaced":
        return f"champion replaced: {show(new)} " + (
            f"beats {show(old)} by at least {margin}" if old else "is the first champion")
    if decision == "kept":
        return (f"champion kept: {show(old)}; this run's best, {show(new)}, "
                f"is not better by {margin}")
    return f"champion unchanged: {show(new)} is already the published one"


def publish(project: Path | str, run_id: str = "manual") -> dict:
    """Decide on the champion, push to the DVC remote, record the run on git.

    Only a complete, up-to-date pipeline is published: ``dvc status`` must be
    clean. The champion folder (``publish.champion_dir``) changes only when
    this run's best model beats it by ``publish.champion_margin``. Safe to retry.
    """
    from pipeline import config

    project = Path(project).resolve()
    try:
        pub = config.load(project / config.PARAMS_FILE).publish
    except config.ConfigError as exc:
        raise ParamsError(f"publish: params.yaml is invalid (not retried): {exc}") from None
    rc, out = dvc(project, "status", "--json", "dvc.yaml", what="publish", quiet=True)
    if rc != 0 or json.loads(out or "{}"):
        raise StageFailed(f"publish: the pipeline is not up to date, nothing was published "
                          f"(dvc status: {', '.join(json.loads(out or '{}')) if rc == 0 else out})")

    folder = project / pub.champion_dir
    new, old = _champion(project / config.CHAMPION_DIR), _champion(folder)
    if new is None:
        raise StageFailed(f"publish: {config.CHAMPION_DIR}/card.json is missing; run evaluate first")
    if old and old["md5"] == new["md5"] and old["published"].get("run_id") == run_id:
        decision, old = "replaced", old["published"].get("previous")  # a retry of this run
    else:
        decision = decide(new["val_accuracy"], old and old["val_accuracy"],
                          pub.champion_margin, same_model=bool(old) and old["md5"] == new["md5"])
    if decision == "replaced":
        staged = project / WORKSPACES / "champion"
        _remove(staged)
        shutil.copytree(project / config.CHAMPION_DIR, staged)
        (staged / "published.json").write_text(json.dumps({
            "model": new["model"], "val_accuracy": new["val_accuracy"], "run_id": run_id,
            "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "previous": old and {k: old[k] for k in ("model", "val_accuracy")}}, indent=2) + "\n")
        _replace(staged, folder)
        _remove(staged)
    if decision == "replaced" or not folder.with_name(folder.name + ".dvc").exists():
        if dvc(project, "add", pub.champion_dir, what="publish")[0] != 0:
            raise StageFailed(f"publish: dvc add {pub.champion_dir} failed")
    verdict = _verdict(decision, new, old, pub.champion_margin)
    log.info("publish: %s", verdict)

    rc, out = dvc(project, "push", "--remote", pub.remote, what="publish")
    if rc != 0:
        raise TransientError(f"publish: dvc push to remote {pub.remote!r} failed (retried "
                             f"later)\n{error_lines(out, 'publish')}")
    metrics = json.loads((project / config.EVAL_METRICS).read_text())
    scores = "\n".join(f"{name}: val {m['val_accuracy']:.4f}, test {m['test_accuracy']:.4f}"
                       for name, m in metrics["models"].items())
    commit = record_run(project, pub.record_branch, f"retrain {run_id}: {verdict}\n\n{scores}\n",
                        run_id)
    if pub.git_remote:
        ref = f"refs/heads/{pub.record_branch}"
        proc = subprocess.run(["git", "push", pub.git_remote, f"{ref}:{ref}"], cwd=project,
                              capture_output=True, text=True, env=_env())
        if proc.returncode != 0:
            raise TransientError(f"publish: git push to {pub.git_remote!r} failed (retried "
                                 f"later)\n{proc.stderr.strip()}")
    log.info("publish: pushed to DVC remote %r; run recorded as %s on branch %s",
             pub.remote, commit[:10], pub.record_branch)
    champion = old if decision == "kept" else new
    return {"decision": decision, "verdict": verdict,
            "champion": {k: champion[k] for k in ("model", "val_accuracy")},
            "run_best": {k: new[k] for k in ("model", "val_accuracy")},
            "champion_dir": pub.champion_dir, "record_branch": pub.record_branch,
            "record_commit": commit, "remote": pub.remote, "run_id": run_id}


# --- command line -------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.orchestrate stage <name> | train <model> | publish``."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.orchestrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("stage", help="dvc repro one stage").add_argument("name")
    sub.add_parser("train", help="train one model in its own workspace").add_argument("model")
    sub.add_parser("publish", help="champion, dvc push, run record").add_argument(
        "--run-id", default="manual")
    parser.add_argument("--project", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.command == "stage":
            result = run_stage(args.project, args.name)
        elif args.command == "train":
            result = train(args.project, args.model)
        else:
            result = publish(args.project, args.run_id)
    except StageFailed as exc:
        print(f"orchestrate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 75 if isinstance(exc, TransientError) else 1  # 75 = EX_TEMPFAIL
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
