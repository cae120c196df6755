"""The champion: which model is published, and how its folder is replaced.

Why a module of its own: ``publish`` decides in one place and acts in
another (git, DVC); keeping the decision pure (``decide``) makes it testable
without either. The champion folder holds ``model.keras``, the model card
(``card.json``, ``card.md``) and ``published.json`` (which run published it,
and what it replaced).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path


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


def read(folder: Path) -> dict | None:
    """Model, val accuracy and checkpoint checksum of models/best or the published champion."""
    try:
        card = json.loads((folder / "card.json").read_text())
    except (OSError, ValueError):
        return None
    published = folder / "published.json"
    return {"model": card["model"], "val_accuracy": card["metrics"]["val_accuracy"],
            "md5": md5(folder / "model.keras"),
            "published": json.loads(published.read_text()) if published.exists() else {}}


def md5(path: Path) -> str | None:
    return hashlib.md5(path.read_bytes()).hexdigest() if path.exists() else None


def verdict(decision: str, new: dict, old: dict | None, margin: float) -> str:
    def show(c):
        return f"{c['model']} (val accuracy {c['val_accuracy']:.4f})"
    if decision == "replaced":
        return f"champion replaced: {show(new)} " + (
            f"beats {show(old)} by at least {margin}" if old else "is the first champion")
    if decision == "kept":
        return (f"champion kept: {show(old)}; this run's best, {show(new)}, "
                f"is not better by {margin}")
    return f"champion unchanged: {show(new)} is already the published one"


def paired_on_validation(ws: Path, old_model: Path, new_model: Path) -> tuple[bool, str]:
    """McNemar's exact test of the two models on the same validation images
    (``publish.require_significance``): is the new one right on significantly more?"""
    from pipeline.rnn import model as model_lib

    from pipeline.data import arrays
    from pipeline.evaluation import stats

    x_val, y_val = arrays.load(ws / "data" / "split", "val")
    old_pred, new_pred = (model_lib.load(path).predict(
        x_val.astype("float32"), batch_size=1000, verbose=0).argmax(1)
        for path in (old_model, new_model))
    return (stats.significantly_better(y_val, old_pred, new_pred),
            stats.paired(y_val, old_pred, new_pred).words())


def install(best: Path, folder: Path, new: dict, old: dict | None, run_id: str,
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


def replace_path(src: Path, dest: Path) -> None:
    """Put a copy of ``src`` at ``dest`` in one rename, so readers never see half of it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = dest.with_name(f".{dest.name}.incoming")
    remove_path(staged)
    shutil.copytree(src, staged) if src.is_dir() else shutil.copy2(src, staged)
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
