"""The DAG's last task ``publish``: champion, tracked storage, run record.

Params: ``publish`` (champion_margin, champion_dir, remote, record_branch,
git_remote).
Inputs: the run's record (every stage's ``dvc.lock`` entry and uncached
outputs, from the upstream tasks), the DVC remote holding every stage's
outputs, and the published champion: ``<champion_dir>.dvc`` on
``record_branch`` of the run's git source, its files in the DVC remote.
Outputs: a new commit on ``record_branch`` of the git source that records
the run (``dvc.lock``, params, metrics, report, the champion's ``.dvc``
file), with the champion replaced only when this run's best beats it on
validation accuracy by ``champion_margin``. Not a DVC stage: it publishes
what the stages made.

Why it is safe on a cluster: it works in a private clone like every task,
and the champion changes in one step, when the record branch moves (a git
push that fails if another run moved it first: the loser of such a race
decides again on top of the winner's record). Its data is pushed to the
DVC remote before that, so a failure anywhere leaves the old champion whole.
A git source that does not answer is asked ``GIT_TRIES`` times, then the
task fails as ``RemoteUnavailable`` and Airflow retries it later.

``python -m pipeline.orchestration.publish --record run.json --run-id <id>`` runs it by hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pipeline.serve import champion
from pipeline.serve import registry
from pipeline.orchestration import workspace
from pipeline.serve.champion import decide
from pipeline.orchestration.failures import (PermanentError, RemoteUnavailable, StageFailed,
                                             TransientError, error_lines)
from pipeline.orchestration.orchestrate import (command_env, dvc, open_task_workspace, pull, push,
                                                stage_facts)

log = logging.getLogger("pipeline.orchestration.publish")

RACE_TRIES = 3     # a publish that another run beat to the record branch decides again, this often
GIT_TRIES = 3      # how often publish asks a git source that does not answer ...
GIT_WAIT_S = 2.0   # ... and how long it waits in between, before failing (retried later by Airflow)
# What `git push` says when another run moved the branch (or took the tag) first.
LOST_RACE = ("fetch first", "non-fast-forward", "already exists", "failed to update ref",
             "cannot lock ref", "incorrect old value", "stale info")


def git(project: Path, *args: str, env: dict | None = None, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=project, capture_output=True, text=True,
                          env={**command_env(), **(env or {})})
    if check and proc.returncode != 0:
        raise StageFailed(f"publish: git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip() if proc.returncode == 0 else ""


def record_run(ws: Path, previous: str | None, message: str) -> str:
    """A commit of the workspace as it ran; HEAD (the run's commit) stays checked out.

    Its tree is the run's commit plus every change git sees (dvc.lock,
    metrics/, reports/, the champion's .dvc file, ...). Its first parent is
    the previous run on the record branch, so ``dvc metrics diff
    <branch>~1 <branch>`` compares two runs; the code commit it ran from is
    the second parent.
    """
    env = {}
    if not git(ws, "config", "user.email", check=False):
        env.update(GIT_AUTHOR_NAME="retrain DAG", GIT_AUTHOR_EMAIL="retrain@localhost",
                   GIT_COMMITTER_NAME="retrain DAG", GIT_COMMITTER_EMAIL="retrain@localhost")
    head = git(ws, "rev-parse", "HEAD")
    git(ws, "add", "--all", ".")
    tree = git(ws, "write-tree")
    parents = [previous] if previous else []
    if not (previous and _is_ancestor(ws, head, previous)):
        parents.append(head)
    return git(ws, "commit-tree", tree, *[a for p in parents for a in ("-p", p)], "-m", message,
               env=env)


def _is_ancestor(project: Path, a: str, b: str) -> bool:
    return subprocess.run(["git", "merge-base", "--is-ancestor", a, b], cwd=project,
                          capture_output=True).returncode == 0


def _previous_run(ws: Path, branch: str) -> tuple[str | None, str]:
    """The record branch's tip on the git source (None on the first run) and its message."""
    try:
        tip = git(ws, "ls-remote", "--heads", "origin", branch).split()
    except StageFailed as exc:
        raise RemoteUnavailable(f"publish: the git source does not answer: {exc}") from None
    if not tip:
        return None, ""
    git(ws, "fetch", "--quiet", "origin", f"refs/heads/{branch}")
    return tip[0], git(ws, "log", "-1", "--format=%s", tip[0])


def _restore_champion(ws: Path, previous: str, dvc_file: str, remote: str) -> None:
    """The published champion's .dvc file from the previous record, its files from DVC."""
    if not git(ws, "ls-tree", "--name-only", previous, "--", dvc_file):
        return
    git(ws, "checkout", previous, "--", dvc_file)
    pull(ws, [dvc_file], remote, "publish")


def check_git_source(url: str, tries: int, wait_s: float) -> None:
    """Ask the git source for its branches, ``tries`` times; a clear failure if it never answers."""
    for attempt in range(1, tries + 1):
        proc = subprocess.run(["git", "ls-remote", "--heads", url], capture_output=True, text=True,
                              env=command_env(GIT_TERMINAL_PROMPT="0"))
        if proc.returncode == 0:
            return
        reason = " ".join(proc.stderr.split()) or f"git exited {proc.returncode}"
        if attempt < tries:
            log.warning("publish: the git source %s does not answer (%s); retrying in %.0f s "
                        "(try %d of %d)", url, reason, wait_s, attempt, tries)
            time.sleep(wait_s)
    raise RemoteUnavailable(f"publish: the git source {url} did not answer in {tries} tries "
                            f"({reason}); nothing was published (retried later)")


def run(record: dict, run_id: str = "manual", *, project: Path | str | None = None,
        bundle=None) -> dict:
    """Decide on the champion, push to the DVC remote, record the run on git.

    Only a complete run is published: the record holds every stage of
    dvc.yaml and ``dvc status`` of the restored workspace is clean. The
    champion changes only when this run's best model beats it by
    ``publish.champion_margin``. Safe to retry, and to run beside another
    publish: the one that moves the record branch second decides again.
    """
    project = Path(project).resolve() if project else None
    if (record or {}).get("git_url"):   # the run's git source, as every upstream task saw it
        check_git_source(record["git_url"], GIT_TRIES, GIT_WAIT_S)
    ws, source, params = open_task_workspace("publish", record, run_id=run_id, project=project,
                                             bundle=bundle)
    pub = params.publish
    order = stage_facts(ws, "evaluate")["order"]
    missing = [s for s in order if s not in (record or {}).get("stages", {})]
    if missing:
        raise StageFailed(f"publish: the run did not record {', '.join(missing)}; "
                          f"nothing was published")
    workspace.apply(ws, record, order)
    rc, out = dvc(ws, "pull", "--remote", pub.remote, what="publish")
    if rc != 0:
        raise RemoteUnavailable(f"publish: cannot pull the run's outputs from DVC remote "
                                f"{pub.remote!r} (retried later)\n{error_lines(out, 'publish')}")
    rc, out = dvc(ws, "status", "--json", what="publish", quiet=True)
    if rc != 0 or json.loads(out or "{}"):
        raise StageFailed(f"publish: the pipeline is not up to date, nothing was published "
                          f"(dvc status: {', '.join(json.loads(out or '{}')) if rc == 0 else out})")
    for attempt in range(1, RACE_TRIES + 1):
        summary = _publish_on_tip(ws, record, run_id, pub, source, attempt)
        if summary:
            shutil.rmtree(ws, ignore_errors=True)
            return summary
    raise TransientError(f"publish: lost the race to move {pub.record_branch} {RACE_TRIES} "
                         f"times in a row; nothing was published (retried later)")


def _publish_on_tip(ws: Path, record: dict, run_id: str, pub, source, attempt: int) -> dict | None:
    """Decide on top of the record branch's tip and push; None if another run moved it first."""
    from pipeline import config

    previous, subject = _previous_run(ws, pub.record_branch)
    dvc_file = f"{pub.champion_dir}.dvc"
    if previous and subject.startswith(f"retrain {run_id}:"):   # a retry of a finished publish
        log.info("publish: run %s is already recorded as %s", run_id, previous[:10])
        _restore_champion(ws, previous, dvc_file, pub.remote)
        return _summary(ws, pub, run_id, previous, subject, source)
    if previous:
        _restore_champion(ws, previous, dvc_file, pub.remote)
    folder = ws / pub.champion_dir
    new, old = champion.read(ws / config.CHAMPION_DIR), champion.read(folder)
    if new is None:
        raise StageFailed(f"publish: {config.CHAMPION_DIR}/card.json is missing; run evaluate first")
    decision = decide(new["val_accuracy"], old and old["val_accuracy"], pub.champion_margin,
                      same_model=bool(old) and old["md5"] == new["md5"])
    if decision == "replaced" and old and pub.require_significance:
        better, words = champion.paired_on_validation(ws, folder / "model.keras",
                                              ws / config.CHAMPION_DIR / "model.keras")
        log.info("publish: new vs published champion on the validation set: %s", words)
        decision = "replaced" if better else "kept"
    if decision == "replaced":
        champion.install(ws / config.CHAMPION_DIR, folder, new, old, run_id,
                 staging=ws / "tmp" / "champion")
    if decision == "replaced" or not (ws / dvc_file).exists():
        if dvc(ws, "add", pub.champion_dir, what="publish")[0] != 0:
            raise StageFailed(f"publish: dvc add {pub.champion_dir} failed")
    verdict = champion.verdict(decision, new, old, pub.champion_margin)
    log.info("publish: %s", verdict)
    push(ws, [], pub.remote, "publish")     # everything, the champion included, before git moves

    metrics = json.loads((ws / config.EVAL_METRICS).read_text())
    scores = "\n".join(f"{name}: val {m['val_accuracy']:.4f}, test {m['test_accuracy']:.4f}"
                       for name, m in metrics["models"].items())
    hosts = ", ".join(f"{name}@{e.get('host')}" for name, e in record["stages"].items())
    message = f"retrain {run_id}: {verdict}\n\n{scores}\n\nran on: {hosts}\n"
    if attempt > 1:
        message += f"\ndecided on try {attempt}: another run had published first\n"
    commit = record_run(ws, previous, message)
    refs, tags = [f"{commit}:refs/heads/{pub.record_branch}"], []
    if decision == "replaced":   # a new registry version, in production from now on
        test = metrics["models"][new["model"]]["test_accuracy"]
        try:
            reg = registry.register(ws, pub.champion_dir, {"model": new["model"], "val_accuracy":
                                    new["val_accuracy"], "test_accuracy": test}, run_id, ref=commit)
        except registry.RegistryError as exc:
            raise StageFailed(f"publish: registering the champion failed: {exc}") from None
        tags = reg["tags"]
        refs += [f"refs/tags/{tag}" for tag in tags]
    for target in ("origin", *([pub.git_remote] if pub.git_remote else [])):
        # --atomic: the record, the version and the stage tag move together or not at all
        proc = subprocess.run(["git", "push", "--quiet", "--atomic", target, *refs], cwd=ws,
                              capture_output=True, text=True, env=command_env())
        if "refusing to update checked out branch" in proc.stderr:
            raise PermanentError(f"publish: record_branch {pub.record_branch!r} is checked out "
                                 f"in {target}; give publish.record_branch a branch of its own "
                                 f"(not retried)")
        if (target == "origin" and proc.returncode != 0 and "rejected" in proc.stderr
                and any(words in proc.stderr for words in LOST_RACE)):
            log.warning("publish: lost a race: another run moved %s (or took %s) on the git "
                        "source first; deciding again on top of it (lost %d of %d tries)",
                        pub.record_branch, ", ".join(tags) or "no tag", attempt, RACE_TRIES)
            _forget(ws, pub, dvc_file, tags)
            return None
        if proc.returncode != 0:
            raise RemoteUnavailable(f"publish: git push of {pub.record_branch} to {target} "
                                    f"failed (retried later)\n{proc.stderr.strip()}")
    log.info("publish: pushed to DVC remote %r; run recorded as %s on branch %s of %s",
             pub.remote, commit[:10], pub.record_branch, source.git_url)
    return _summary(ws, pub, run_id, commit, message, source)


def _forget(ws: Path, pub, dvc_file: str, tags: list[str]) -> None:
    """Drop a lost try's champion and tags; fetch the winner's tags for the next decision."""
    for tag in tags:
        git(ws, "tag", "-d", tag, check=False)
    champion.remove_path(ws / pub.champion_dir)
    (ws / dvc_file).unlink(missing_ok=True)
    git(ws, "checkout", "HEAD", "--", dvc_file, check=False)   # the run's commit's, if any
    git(ws, "fetch", "--quiet", "--force", "origin", "+refs/tags/*:refs/tags/*", check=False)


def _summary(ws: Path, pub, run_id: str, commit: str, message: str, source) -> dict:
    """What the task returns and the asset event carries."""
    verdict = message.split(": ", 1)[-1].splitlines()[0]
    decision = next((d for d in ("replaced", "kept", "unchanged")
                     if verdict.startswith(f"champion {d}")), "unknown")
    published = champion.read(ws / pub.champion_dir) or {}
    return {"decision": decision, "verdict": verdict,
            "champion": {k: published.get(k) for k in ("model", "val_accuracy")},
            "champion_dir": pub.champion_dir, "record_branch": pub.record_branch,
            "record_commit": commit, "git_source": source.git_url, "remote": pub.remote,
            "run_id": run_id}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.orchestration.publish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", type=Path, required=True,
                        help="the run's record: JSON from `python -m pipeline.orchestration.orchestrate "
                             "evaluate --record FILE`")
    parser.add_argument("--run-id", default="manual", help="names the run in its record")
    parser.add_argument("--project", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        record = json.loads(args.record.read_text())
        print(json.dumps(run(record, args.run_id, project=args.project)))
    except (OSError, ValueError) as exc:
        print(f"publish: cannot read the record {args.record}: {exc}", file=sys.stderr)
        return 1
    except StageFailed as exc:
        print(f"publish: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 75 if isinstance(exc, TransientError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
