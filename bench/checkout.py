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
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout this bench/ belongs to

# Settings that make this CPU take another's path (the AVX2 one on an AVX-512 CPU): part
# of a bench's command, so a report says how it was made and --agreement refuses a mix.
CAPS = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "PIPELINE_NATIVE_MARCH",
        "MKL_ENABLE_INSTRUCTIONS", "OPENBLAS_CORETYPE")


def command(script: str) -> str:
    """This process's command line as typed, with the caps set in its environment first."""
    return " ".join([*(f"{k}={os.environ[k]}" for k in CAPS if k in os.environ),
                     "python", f"bench/{script}", *sys.argv[1:]])


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


def mmss(seconds: float) -> str:
    """A duration as the reports write it: whole seconds, never a sixtieth."""
    minutes, secs = divmod(round(seconds), 60)  # 299.6 s is 5 min 00 s, not 4 min 60 s
    return f"{minutes} min {secs:02d} s"
