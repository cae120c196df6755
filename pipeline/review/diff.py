"""Compare the workspace with a git revision: params, metrics, reruns, pictures.

``python -m pipeline.review.diff --rev main [--out reports/diff] [--note TEXT ...]``
(``make diff REV=main``) writes ``<out>/report.md``; ``--base A --head B`` compares
two commits as committed (``checkout``: B in a clean clone, not the workspace).
The report: the changed params (``dvc params diff``), the four models' headline
metrics at both revisions with signed changes (``dvc metrics diff --all``),
McNemar's exact test of each changed model on the same test images (``evidence``: only significant changes
count as changed in the summary), per-class F1 of the models that changed,
whether both sides ran on the same kind of machine, the champion, the stages DVC reran, and static comparison images
(``curves.png``, ``confusion.png``) beside it, plus ``dvc plots diff``'s HTML
page under ``<out>/plots/``. The pull-request workflow
(``.github/workflows/pr-report.yml``) posts the same file as a comment.

"Which stages DVC reran" is read from ``dvc.lock``: a stage whose entry at the
revision differs from the workspace's ran again (its command, dependencies or
params changed, so ``dvc repro`` recorded new outputs). Stages whose inputs
changed *without* a rerun are found with ``dvc status`` and flagged, because
their metrics predate the change.

When there is nothing to compare (the same revision with a clean workspace, or
no committed ``metrics/evaluate.json`` on either side) the report says so in one
line instead of showing empty tables; that is not an error (exit 0).

This module runs git and DVC; ``comparison`` gives their output a shape,
``markdown`` turns it into Markdown and ``figures`` draws the PNGs.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline import config
from pipeline.review import checkout
from pipeline.review.comparison import (EVAL_METRICS, Comparison, champion, metric_pairs,
                                        parse_params_diff, stage_changes, stale_stages)
from pipeline.review.markdown import render, render_nothing

log = logging.getLogger("pipeline.review.diff")

DIFF_DIR = Path("reports/diff")
LOCK_FILE = "dvc.lock"

SAME_REVISION = ("Nothing to compare: the workspace and {rev} are the same revision "
                 "with no changes.")
NO_BASE_METRICS = ("Nothing to compare: {rev} has no committed metrics ({path}). "
                   "Run the pipeline there (`dvc repro`) and commit dvc.lock and metrics/, "
                   "or compare with another revision.")
NO_WORKSPACE_METRICS = ("Nothing to compare: the workspace has no metrics ({path}). "
                        "Run `dvc repro` (or `dvc pull` to restore a committed run) first.")


class DiffError(RuntimeError):
    """The comparison cannot run (unknown revision, dvc failed); one line for the user."""


# ---------------------------------------------------------------- git and dvc

def _run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        raise DiffError(f"`{' '.join(cmd[2:] if cmd[0] == sys.executable else cmd)}` "
                        f"failed: {tail[0]}")
    return proc


def git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["git", *args], cwd, check)


def dvc_json(*args: str, cwd: Path):
    # `python -m dvc` finds this interpreter's DVC even when its bin/ is not on PATH.
    out = _run([sys.executable, "-m", "dvc", *args, "--json"], cwd).stdout
    return json.loads(out or "{}")


def git_show(rev: str, path: str, cwd: Path) -> str | None:
    proc = git("show", f"{rev}:{path}", cwd=cwd, check=False)
    return proc.stdout if proc.returncode == 0 else None


def _describe(rev: str, cwd: Path) -> str:
    out = git("log", "-1", "--format=%h %s", rev, cwd=cwd).stdout.strip()
    sha, _, subject = out.partition(" ")
    return f"`{rev}` (`{sha}` {subject})" if subject else f"`{rev}` (`{sha}`)"


def _dirty(project: Path) -> bool:
    """Tracked files changed (params, code, dvc.lock, metrics); untracked files do not count."""
    return bool(git("status", "--porcelain", "--untracked-files=no", cwd=project).stdout.strip())


def _load_lock(text: str | None) -> dict | None:
    return yaml.safe_load(text) if text else None


def collect(rev: str, project: Path) -> Comparison:
    head_desc = _describe("HEAD", project)
    dirty = _dirty(project)
    lock_path = project / LOCK_FILE
    new_lock = _load_lock(lock_path.read_text() if lock_path.exists() else None)
    return Comparison(
        rev=rev, rev_desc=_describe(rev, project),
        new_desc=f"the workspace at {head_desc}" + (" with uncommitted changes" if dirty else ""),
        params=parse_params_diff(dvc_json("params", "diff", rev, cwd=project)),
        pairs=metric_pairs(dvc_json("metrics", "diff", rev, "--all", cwd=project)),
        stages=stage_changes(_load_lock(git_show(rev, LOCK_FILE, project)), new_lock,
                             _load_lock(git_show("HEAD", LOCK_FILE, project))),
        stale=stale_stages(dvc_json("status", cwd=project), new_lock),
        order=config.model_order(project))  # the workspace's models, in params.yaml order


def _curves(text_of, name: str) -> dict[str, tuple[list[float], list[float]]]:
    """dvclive's TSVs of one model -> ``{"eval/accuracy": (steps, values), ...}``."""
    curves = {}
    for part in ("train", "eval"):
        for metric in ("accuracy", "loss"):
            text = text_of(f"{config.TRAIN_LOG_DIR.as_posix()}/{name}/plots/metrics/"
                           f"{part}/{metric}.tsv")
            if text:
                rows = [line.split("\t") for line in text.strip().splitlines()[1:]]
                curves[f"{part}/{metric}"] = ([float(r[0]) for r in rows],
                                              [float(r[1]) for r in rows])
    return curves


def _confusion(text: str | None) -> list[tuple[int, int]] | None:
    if not text:
        return None
    return [tuple(int(v) for v in line.split(",")) for line in text.strip().splitlines()[1:]]


def _workspace_text(project: Path):
    def read(path: str) -> str | None:
        p = project / path
        return p.read_text() if p.exists() else None
    return read


def significance(rev: str, project: Path, c: Comparison) -> None:
    """Paired tests of the changed models and both sides' machines (``evidence``)."""
    from pipeline.review import evidence

    at_rev, here = (lambda path: git_show(rev, path, project)), _workspace_text(project)
    names = c.changed
    c.paired = evidence.paired_tests(evidence.load_predictions(at_rev, names),
                                       evidence.load_predictions(here, names), names)

    def machine(text: str | None) -> dict | None:
        try:
            return (json.loads(text) or {}).get("machine") if text else None
        except ValueError:
            return None
    c.machines = (machine(at_rev(EVAL_METRICS)), machine(here(EVAL_METRICS)))


def write_images(rev: str, project: Path, out_dir: Path, names: list[str],
                 old_label: str, new_label: str) -> list[tuple[str, str]]:
    """Comparison figures of the changed models, from both revisions' committed files."""
    from pipeline.review import figures

    def at_rev(path: str) -> str | None:
        return git_show(rev, path, project)

    def in_workspace(path: str) -> str | None:
        p = project / path
        return p.read_text() if p.exists() else None

    images = []
    curves = {n: (_curves(at_rev, n), _curves(in_workspace, n)) for n in names}
    if any(old or new for old, new in curves.values()):
        figures.curves(out_dir / "curves.png", curves, old_label, new_label)
        images.append((f"Training curves ({old_label} dashed, {new_label} solid)", "curves.png"))
    confusion = config.CONFUSION_DIR.as_posix()
    matrices = {n: (_confusion(at_rev(f"{confusion}/{n}.csv")),
                    _confusion(in_workspace(f"{confusion}/{n}.csv"))) for n in names}
    if any(old or new for old, new in matrices.values()):
        figures.confusions(out_dir / "confusion.png", matrices, old_label, new_label)
        images.append((f"Confusion matrices (test errors: {old_label}, {new_label}, change)",
                       "confusion.png"))
    return images


def run(rev: str = "main", out_dir: Path = DIFF_DIR, project: Path = Path("."),
        notes: list[str] | tuple[str, ...] = (), label: str = "workspace",
        html: bool = True) -> dict:
    """Compare the workspace of ``project`` with ``rev``; write ``out_dir/report.md``
    (and ``dvc plots diff``'s page, several MB, unless ``html`` is false).

    Returns ``{"status": "compared" | "same_revision" | "no_metrics", "report",
    "message", "changed_models", "params", "reran", "stale", "champion"}``.
    """
    project, out_dir = Path(project).resolve(), Path(out_dir).resolve()
    notes = list(notes)
    if git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", cwd=project,
           check=False).returncode != 0:
        raise DiffError(f"{rev}: not a git revision of {project}")
    for old in ("report.md", "curves.png", "confusion.png", "plots"):  # a previous run's
        target = out_dir / old
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    old_label = rev.rsplit("/", 1)[-1] if len(rev) < 40 else rev[:8]
    summary = {"report": out_dir / "report.md", "changed_models": [], "params": [],
               "reran": [], "stale": {}, "champion": (None, None)}

    message = None
    same_commit = (git("rev-parse", f"{rev}^{{commit}}", cwd=project).stdout
                   == git("rev-parse", "HEAD^{commit}", cwd=project).stdout)
    if same_commit and not _dirty(project):
        message, status = SAME_REVISION.format(rev=f"`{rev}`"), "same_revision"
    elif git_show(rev, EVAL_METRICS, project) is None:
        message, status = NO_BASE_METRICS.format(rev=f"`{rev}`", path=EVAL_METRICS), "no_metrics"
    elif not (project / EVAL_METRICS).exists():
        message, status = NO_WORKSPACE_METRICS.format(path=EVAL_METRICS), "no_metrics"
    if message:
        params = [] if status == "same_revision" else _params_if_any(rev, project)
        summary["report"].write_text(render_nothing(message, rev, params, notes, old_label, label))
        log.info("diff: %s", message)
        return {**summary, "status": status, "message": message, "params": params}

    c = collect(rev, project)
    c.notes = notes
    significance(rev, project, c)
    c.images = write_images(rev, project, out_dir, c.changed, old_label, label)
    plots = _run([sys.executable, "-m", "dvc", "plots", "diff", rev, "-o", str(out_dir / "plots")],
                 project, check=False) if html else None
    if plots and plots.returncode == 0 and (out_dir / "plots" / "index.html").exists():
        c.plots_html = "plots/index.html"
    elif html:
        log.warning("diff: dvc plots diff failed; the report links no HTML plots")
    summary["report"].write_text(render(c, old_label, label))
    log.info("diff: wrote %s (changed: %s)", summary["report"], ", ".join(c.changed) or "none")
    return {**summary, "status": "compared", "message": None, "changed_models": c.changed,
            "significant_models": c.real, "paired": c.paired,
            "params": c.params, "reran": [s["stage"] for s in c.stages["reran"]],
            "stale": c.stale, "champion": champion(c.pairs.get(EVAL_METRICS, {}))}


def _params_if_any(rev: str, project: Path) -> list[dict]:
    """The params diff, or none where ``rev`` predates params.yaml or dvc.yaml."""
    try:
        return parse_params_diff(dvc_json("params", "diff", rev, cwd=project))
    except DiffError as exc:
        log.warning("diff: no params diff: %s", exc)
        return []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.review.diff",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", "--base", dest="rev", default="main",
                        help="git revision to compare with (default: main)")
    parser.add_argument("--head", help="compare with this commit as committed (a clean clone) "
                                       "instead of the workspace: --base A --head B")
    parser.add_argument("--out", type=Path, default=DIFF_DIR,
                        help=f"folder for report.md and images (default: {DIFF_DIR})")
    parser.add_argument("--note", action="append", default=[],
                        help="a line to show at the top of the report (repeatable)")
    parser.add_argument("--no-html", dest="html", action="store_false",
                        help="no plots/ page (dvc plots diff): a report to commit")
    parser.add_argument("--label", help='name of the compared side in column headers (default: '
                                        'workspace, or --head; CI: "this PR")')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    label = args.label or args.head or "workspace"
    try:
        if args.head:  # both sides from git: the head in a clean clone of its own
            with checkout.committed(args.head, Path("."), base=args.rev) as (tree, base, note):
                result = run(base, args.out, project=tree, notes=[note, *args.note], label=label,
                             html=args.html)
        else:
            result = run(args.rev, args.out, notes=args.note, label=label, html=args.html)
    except (DiffError, checkout.CheckoutError) as exc:
        print(f"diff: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if result["message"]:
        print(result["message"])
    print(f"diff: report in {result['report']}")


if __name__ == "__main__":
    main()
