"""Which checkout's ``pipeline`` a bench measures: its own in-process, another's in a child.

Why: the package is installed editable from one checkout, and the worktrees that
``--against``, kernel_path.py and recipe.sh use share that checkout's ``.venv``.
A bench script run from a worktree would therefore import the main checkout's
``pipeline`` and measure the wrong code without a word. Nothing here edits
``sys.path``: a script refuses to run on a ``pipeline`` that is not its own
(``own_pipeline``), and a child process gets its checkout on ``PYTHONPATH``,
which Python searches before the editable install (``child_env``).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout this bench/ belongs to


def child_env(root: Path, **extra: str) -> dict:
    """The environment for a child that must import ``root``'s pipeline."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(Path(root).resolve()),
            **extra}


def own_pipeline(root: Path = ROOT) -> None:
    """Stop unless the imported ``pipeline`` is ``root``'s (the script's own checkout)."""
    import pipeline

    found = Path(pipeline.__file__).resolve().parent
    if found != Path(root).resolve() / "pipeline":
        raise SystemExit(f"bench: this script belongs to {root} but imports {found}; "
                         f"run it as PYTHONPATH={root} python ...")
