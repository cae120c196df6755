"""The DAG's last task ``publish``: champion, tracked storage, run record.

Params: ``publish`` (champion_margin, champion_dir, remote, record_branch,
git_remote).
Inputs: a pipeline that is up to date (``dvc status`` clean), ``models/best/``
(this run's best model and its card, from ``evaluate``), ``metrics/evaluate.json``
and the published champion in ``publish.champion_dir``.
Outputs: the champion folder (replaced only when this run's best beats it on
validation accuracy by ``champion_margin``) tracked as ``<champion_dir>.dvc``,
everything pushed to the DVC remote, and a commit on ``record_branch`` that
records the run. Not a DVC stage: it publishes what the stages made.

``python -m pipeline.publish --run-id <id>`` runs it by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from pipeline.orchestrate import (WORKSPACES, ParamsError, PermanentError, StageFailed,
                                  TransientError, dvc, error_lines, remove_path, replace_path,
                                  command_env)

log = logging.getLogger("pipeline.publish")


def git(project: Path, *args: str, env: dict | None = None, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=project, capture_output=True, text=True,
                          env={**command_env(), **(env or {})})
    if check and proc.returncode != 0:
        raise StageFailed(f"publish: git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip() if proc.returncode == 0 else ""


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
    if git(project, "symbolic-ref", "--quiet", "--short", "HEAD", check=False) == branch:
        raise PermanentError(f"publish: record_branch {branch!r} is the checked-out branch; "
                             f"give publish.record_branch a branch of its own (not retried)")
    previous = git(project, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}",
                   check=False)
    if previous and git(project, "log", "-1", "--format=%s", previous).startswith(
            f"retrain {run_id}:"):
        return previous
    head = git(project, "rev-parse", "--verify", "--quiet", "HEAD", check=False)
    index = Path(project, git(project, "rev-parse", "--git-path", f"retrain-{os.getpid()}.index"))
    env = {"GIT_INDEX_FILE": str(index)}
    if not git(project, "config", "user.email", check=False):
        env.update(GIT_AUTHOR_NAME="retrain DAG", GIT_AUTHOR_EMAIL="retrain@localhost",
                   GIT_COMMITTER_NAME="retrain DAG", GIT_COMMITTER_EMAIL="retrain@localhost")
    try:
        if head:
            git(project, "read-tree", head, env=env)
        git(project, "add", "--all", ".", env=env)
        tree = git(project, "write-tree", env=env)
    finally:
        index.unlink(missing_ok=True)
    parents = [previous] if previous else []
    if head and not (previous and _is_ancestor(project, head, previous)):
        parents.append(head)
    commit = git(project, "commit-tree", tree, *[a for p in parents for a in ("-p", p)],
                 "-m", message, env=env)
    git(project, "update-ref", "-m", f"retrain {run_id}", f"refs/heads/{branch}", commit,
        previous or "0" * 40)
    return commit


def _is_ancestor(project: Path, a: str, b: str) -> bool:
    return subprocess.run(["git", "merge-base", "--is-ancestor", a, b], cwd=project,
                          capture_output=True).returncode == 0


def _champion(folder: Path) -> dict | None:
    """Model, val accuracy and checkpoint checksum of models/best or the published champion."""
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


def run(project: Path | str, run_id: str = "manual") -> dict:
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

    folder, dvc_file = project / pub.champion_dir, project / f"{pub.champion_dir}.dvc"
    if dvc_file.exists() and not folder.exists():  # e.g. a fresh checkout
        if dvc(project, "pull", str(dvc_file.relative_to(project)), what="publish")[0] != 0:
            raise TransientError(f"publish: cannot restore the champion {pub.champion_dir} "
                                 f"from the DVC remote (retried later)")
    new, old = _champion(project / config.CHAMPION_DIR), _champion(folder)
    if new is None:
        raise StageFailed(f"publish: {config.CHAMPION_DIR}/card.json is missing; run evaluate first")
    if old and old["md5"] == new["md5"] and old["published"].get("run_id") == run_id:
        decision, old = "replaced", old["published"].get("previous")  # a retry of this run
    else:
        decision = decide(new["val_accuracy"], old and old["val_accuracy"],
                          pub.champion_margin, same_model=bool(old) and old["md5"] == new["md5"])
        if decision == "replaced":
            _install(project / config.CHAMPION_DIR, folder, new, old, run_id,
                     staging=project / WORKSPACES / "champion")
    if decision == "replaced" or not dvc_file.exists():
        if dvc(project, "add", pub.champion_dir, what="publish")[0] != 0:
            raise StageFailed(f"publish: dvc add {pub.champion_dir} failed")
    verdict = _verdict(decision, new, old, pub.champion_margin)
    log.info("publish: %s", verdict)

    rc, out = dvc(project, "push", "--remote", pub.remote, what="publish")
    if rc != 0 and "config file error" in out:
        raise PermanentError(f"publish: DVC remote {pub.remote!r} is not configured (not "
                             f"retried; see `dvc remote list`)\n{error_lines(out, 'publish')}")
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
                              capture_output=True, text=True, env=command_env())
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


def _install(best: Path, folder: Path, new: dict, old: dict | None, run_id: str,
             staging: Path) -> None:
    """Make ``best`` the published champion, swapped in with one rename."""
    remove_path(staging)
    shutil.copytree(best, staging)
    (staging / "published.json").write_text(json.dumps({
        "model": new["model"], "val_accuracy": new["val_accuracy"], "run_id": run_id,
        "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "previous": old and {k: old[k] for k in ("model", "val_accuracy")}}, indent=2) + "\n")
    replace_path(staging, folder)
    remove_path(staging)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.publish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-id", default="manual", help="names the run in its record")
    parser.add_argument("--project", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        print(json.dumps(run(args.project, args.run_id)))
    except StageFailed as exc:
        print(f"publish: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 75 if isinstance(exc, TransientError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
