"""A commit as a clean folder of its own, so that two commits compare as committed.

``rnn-diff --rev A`` compares A with the working tree, uncommitted edits
included. What a pull request did is its base against its head, both as
committed (``rnn-diff --base A --head B``): ``committed`` clones the repository
into a temporary folder and checks B out there, so the comparison reads exactly
B's params, dvc.lock, metrics and reports, and the user's checkout (files,
branch, index) is never touched. The clone shares the repository's objects
(``git clone --shared``) and has its branches and tags, so A resolves there as
it does in the checkout; a relative name (``HEAD~1``) is replaced by its commit.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class CheckoutError(RuntimeError):
    """A revision is unknown or git failed; one line for the user."""


def _git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        raise CheckoutError(f"`git {' '.join(args)}` failed: {tail[0]}")
    return proc.stdout.strip()


def commit_of(rev: str, project: Path) -> str:
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", cwd=project)
    except CheckoutError:
        raise CheckoutError(f"{rev}: not a git revision of {project.resolve()}") from None


@contextlib.contextmanager
def committed(head: str, project: Path, base: str) -> Iterator[tuple[Path, str, str]]:
    """``(folder with head checked out, base as named there, a note for the report)``."""
    project = Path(project).resolve()
    head_sha, base_sha = commit_of(head, project), commit_of(base, project)
    with tempfile.TemporaryDirectory(prefix="rnn-diff-head-") as tmp:
        tree = Path(tmp) / "head"
        _git("clone", "-q", "--shared", "--no-checkout", str(project), str(tree), cwd=project)
        _git("fetch", "-q", "--update-head-ok", "origin",
             "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*", cwd=tree)
        _git("checkout", "-q", "--detach", head_sha, cwd=tree)
        same = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"],
                              cwd=tree, capture_output=True, text=True).stdout.strip() == base_sha
        note = (f"Both sides as committed: `{head}` (`{head_sha[:7]}`) checked out clean in a "
                "temporary clone, which \"the workspace\" means here; nothing uncommitted counts.")
        yield tree, base if same else base_sha, note
