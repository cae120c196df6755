"""The model registry: champion versions and the ``prod`` stage as GTO git tags.

Not a stage and no params. DVC's registry, GTO, keeps versions and stages as
annotated git tags, so the registry travels with the repository and any
consumer resolves it with git alone:

- ``champion@v0.0.2``  registers version v0.0.2 of artifact ``champion`` on the
  commit whose ``models/champion.dvc`` points at that model; the tag message
  holds the run id and metrics (first line readable, last line JSON);
- ``champion#prod#3``  (the 3rd stage assignment) moves ``prod`` to a version.

The artifact is declared in ``dvc.yaml`` (``artifacts: champion: path:
models/champion``), so a consumer needs one command for the production model:
``dvc artifacts get <repo-url> champion --stage prod`` (see docs/serving.md).

How ``publish`` calls it (the lead wires it; nothing here pushes)::

    from pipeline.serve import registry
    # after the champion was replaced ("replaced"), dvc-added, pushed to the DVC
    # remote, and record_run() made `commit` (its tree holds models/champion.dvc):
    reg = registry.register(project, pub.champion_dir,
                            {"model": new["model"], "val_accuracy": new["val_accuracy"],
                             "test_accuracy": metrics["models"][new["model"]]["test_accuracy"]},
                            run_id, ref=commit)
    # reg == {"registered": True, "artifact": "champion", "version": "v0.0.2",
    #         "version_tag": "champion@v0.0.2", "stage_tag": "champion#prod#2",
    #         "commit": "<sha>", "tags": ["champion@v0.0.2", "champion#prod#2"]}
    # then push the tags with the record branch, if a git remote is set:
    #   git push <git_remote> refs/tags/champion@v0.0.2 refs/tags/champion#prod#2

A run whose model is not better ("kept", "unchanged") does not call it. If it
is called anyway, or a retried run calls it again, a champion already
registered (same ``.dvc`` content) gets no new tag: ``registered`` is False
and the existing version is returned (with ``prod`` re-assigned if it was not).

    python -m pipeline.serve.registry show                # versions, metrics, prod
    python -m pipeline.serve.registry register --run-id R # by hand: HEAD's champion
    python -m pipeline.serve.registry rollback v0.0.1     # prod back to v0.0.1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ARTIFACT = "champion"
PROD = "prod"


class RegistryError(RuntimeError):
    """The registry cannot do what was asked; the message is one line."""


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RegistryError(f"registry: git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _outs_at(repo: Path, rev: str, dvc_file: str) -> list | None:
    """The ``outs`` of a ``.dvc`` file at ``rev`` (what identifies the model), or None."""
    proc = subprocess.run(["git", "show", f"{rev}:{dvc_file}"], cwd=repo, capture_output=True,
                          text=True)
    return yaml.safe_load(proc.stdout).get("outs") if proc.returncode == 0 else None


def _declared_path(repo: Path, rev: str) -> str | None:
    proc = subprocess.run(["git", "show", f"{rev}:dvc.yaml"], cwd=repo, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        return None
    spec = (yaml.safe_load(proc.stdout) or {}).get("artifacts", {}).get(ARTIFACT) or {}
    return spec.get("path")


def _identity(repo: Path) -> dict:
    """GTO writes tags as the git user; a scheduler's worker may have none configured."""
    proc = subprocess.run(["git", "config", "user.email"], cwd=repo, capture_output=True)
    return {} if proc.stdout.strip() else {"author": "retrain DAG",
                                           "author_email": "retrain@localhost"}


def _next_second(repo: Path) -> None:
    """Wait until the clock is past the newest champion tag's second.

    GTO orders tags by their time, in whole seconds; two in the same second
    (a registration right after a rollback, in a test) would tie.
    """
    newest = _git(repo, "for-each-ref", "--sort=-creatordate", "--count=1",
                  "--format=%(creatordate:unix)", f"refs/tags/{ARTIFACT}*")
    if newest:
        time.sleep(max(0.0, int(newest) + 1.05 - time.time()))


def _message(metrics: dict, run_id: str) -> str:
    shown = ", ".join(f"{k} {v}" for k, v in metrics.items())
    return f"{ARTIFACT} from run {run_id}: {shown}\n\n" + json.dumps(
        {"run_id": run_id, "metrics": metrics}, sort_keys=True)


def show(repo: Path | str) -> list[dict]:
    """Every registered version, newest first: version, commit, stages, run id, metrics."""
    from gto import api
    from gto.exceptions import ArtifactNotFound

    try:
        versions = api.show(str(repo), ARTIFACT)
    except ArtifactNotFound:
        return []
    rows = []
    for v in versions:
        if not v["registrations"]:
            continue
        reg = v["registrations"][-1]
        try:
            record = json.loads(reg["message"].strip().splitlines()[-1])
        except (ValueError, IndexError):
            record = {}
        rows.append({"version": v["version"], "tag": reg["tag"], "commit": v["commit_hexsha"],
                     "created_at": str(reg["created_at"]),
                     "stages": [s["stage"] for s in v["stages"]],
                     "run_id": record.get("run_id"), "metrics": record.get("metrics", {})})
    return rows


def production(repo: Path | str) -> dict | None:
    """The version that ``prod`` points at now, or None."""
    return next((row for row in show(repo) if PROD in row["stages"]), None)


def register(repo: Path | str, champion_path: str, metrics: dict, run_id: str,
             ref: str = "HEAD") -> dict:
    """Register the champion recorded at ``ref`` as a new version and move ``prod`` to it.

    ``ref`` is the commit whose tree holds ``<champion_path>.dvc`` for the new
    champion (publish: the record commit). Creates two annotated tags on that
    commit and pushes nothing. A champion already registered gets no new version.
    """
    from gto import api

    repo = Path(repo).resolve()
    commit = _git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}")
    dvc_file = f"{champion_path}.dvc"
    outs = _outs_at(repo, commit, dvc_file)
    if outs is None:
        raise RegistryError(f"registry: {dvc_file} is not in commit {commit[:10]}; "
                            f"commit the champion before registering it")
    if _declared_path(repo, commit) != champion_path:
        raise RegistryError(f"registry: dvc.yaml at {commit[:10]} does not declare artifact "
                            f"{ARTIFACT!r} with path {champion_path!r}")
    who = _identity(repo)
    for row in show(repo):
        if _outs_at(repo, row["commit"], dvc_file) == outs:  # already registered
            stage_tag = None
            if PROD not in row["stages"]:
                _next_second(repo)
                stage_tag = api.assign(str(repo), ARTIFACT, PROD, version=row["version"],
                                       message=f"run {run_id}: prod", force=True, **who).tag
            return {"registered": False, "artifact": ARTIFACT, "version": row["version"],
                    "version_tag": row["tag"], "stage_tag": stage_tag, "commit": row["commit"],
                    "tags": [stage_tag] if stage_tag else []}
    _next_second(repo)
    reg = api.register(str(repo), ARTIFACT, commit, message=_message(metrics, run_id), **who)
    _next_second(repo)
    stage = api.assign(str(repo), ARTIFACT, PROD, version=reg.version,
                       message=f"run {run_id}: {reg.version} to {PROD}", **who)
    return {"registered": True, "artifact": ARTIFACT, "version": reg.version,
            "version_tag": reg.tag, "stage_tag": stage.tag, "commit": commit,
            "tags": [reg.tag, stage.tag]}


def rollback(repo: Path | str, version: str) -> str:
    """Move ``prod`` back to an earlier ``version``; returns the new stage tag.

    Same as ``gto assign champion --version <v> --stage prod --force`` (GTO
    wants ``--force`` to assign a stage a version has held before).
    """
    from gto import api

    repo = Path(repo).resolve()
    known = {row["version"]: row for row in show(repo)}
    if version not in known:
        raise RegistryError(f"registry: {ARTIFACT} has no version {version} "
                            f"(have {', '.join(known) or 'none'})")
    if PROD in known[version]["stages"]:
        raise RegistryError(f"registry: {version} is already in {PROD}")
    _next_second(repo)
    return api.assign(str(repo), ARTIFACT, PROD, version=version, force=True,
                      message=f"rollback: {version} to {PROD}", **_identity(repo)).tag


def table(rows: list[dict]) -> str:
    keys = sorted({k for r in rows for k in r["metrics"]})
    head = ["version", "stage", *keys, "run", "created_at", "commit"]
    body = [[r["version"], ",".join(r["stages"]), *[str(r["metrics"].get(k, "")) for k in keys],
             str(r["run_id"] or ""), r["created_at"][:19], r["commit"][:10]] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in [head, *body])


def _card_metrics(folder: Path) -> dict:
    """What a by-hand registration records: the model card's model and accuracies."""
    try:
        card = json.loads((folder / "card.json").read_text())
        return {"model": card["model"], **{k: card["metrics"][k] for k in (
            "val_accuracy", "test_accuracy") if k in card["metrics"]}}
    except (OSError, ValueError, KeyError) as exc:
        raise RegistryError(f"registry: {folder}/card.json is unreadable ({exc})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.serve.registry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path("."))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="every version with its metrics; the prod one marked")
    reg = sub.add_parser("register", help="register the champion committed at --ref")
    reg.add_argument("--run-id", required=True)
    reg.add_argument("--ref", default="HEAD")
    reg.add_argument("--champion", default="models/champion", help="the DVC-tracked folder")
    back = sub.add_parser("rollback", help="move prod to an earlier version")
    back.add_argument("version", help="e.g. v0.0.1 (see `show`)")
    args = parser.parse_args(argv)
    try:
        if args.command == "show":
            rows = show(args.repo)
            print(table(rows) if rows else f"registry: no version of {ARTIFACT} is registered")
        elif args.command == "register":
            metrics = _card_metrics(args.repo / args.champion)
            print(json.dumps(register(args.repo, args.champion, metrics, args.run_id, args.ref)))
        else:
            print(f"registry: {PROD} is now {args.version} ({rollback(args.repo, args.version)}); "
                  f"push it with: git push <remote> --tags")
    except RegistryError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
