"""Stage ``split``: train / validation / test arrays for the trainers.

Params: ``split`` (method, val_size, seed), ``fetch.dataset`` and ``datasets``.
Inputs: ``data/raw/`` and ``metrics/validate.json`` (the split refuses data
whose validation failed, even when run by hand).
Output: ``data/split/{train,val,test}.npz`` (compressed; ``x`` uint8
``(n, rows, cols)``, ``y`` uint8 ``(n,)``).

The default reproduces the tutorial exactly (its validation set is the first
5,000 training images) so our numbers are comparable with its table; a seeded
stratified draw is there for datasets whose file order is not random.
Pixels stay uint8: scaling belongs to the model input, and uint8 keeps the
files four times smaller.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from pipeline import config
from pipeline.data import arrays as split_arrays, idx
from pipeline import runtime
from pipeline.runtime import StageError

log = logging.getLogger("pipeline.stages.split")
PARTS = split_arrays.PARTS


def head_split(n: int, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): the first ``val_size`` items validate."""
    order = np.arange(n)
    return order[val_size:], order[:val_size]


def stratified_split(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with each class's share of ``val`` matching the whole."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * val_size / len(labels)
    take = np.floor(exact).astype(int)
    # Largest remainders get the leftover places so the total is exactly val_size.
    take[np.argsort(exact - take)[::-1][: val_size - take.sum()]] += 1
    val = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k]
                          for c, k in zip(classes, take)])
    val = np.sort(val)
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return train, val


def _require_valid(summary_path: Path) -> None:
    try:
        summary = json.loads(Path(summary_path).read_text())
    except FileNotFoundError:
        raise StageError(f"{summary_path}: missing; run the validate stage first") from None
    if not summary.get("success", False):
        raise StageError(f"{summary_path}: the data failed validation; refusing to split it")


def run(params: config.Params, raw_dir: Path = config.RAW_DIR,
        out_dir: Path = config.SPLIT_DIR,
        validation_summary: Path | None = config.VALIDATION_METRICS) -> dict:
    if validation_summary is not None:
        _require_valid(validation_summary)
    x_train, y_train = idx.load_split(raw_dir, params.dataset, "train")
    x_test, y_test = idx.load_split(raw_dir, params.dataset, "test")
    cfg = params.split
    if cfg.method == "head":
        train, val = head_split(len(y_train), cfg.val_size)
    else:
        train, val = stratified_split(y_train, cfg.val_size, cfg.seed)
    arrays = {"train": (x_train[train], y_train[train]), "val": (x_train[val], y_train[val]),
              "test": (x_test, y_test)}

    # Write all three into a scratch folder first, then move them in together.
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".split-") as scratch:
        for part, (x, y) in arrays.items():
            split_arrays.save(Path(scratch) / f"{part}.npz", x, y)
        for part in PARTS:
            (Path(scratch) / f"{part}.npz").replace(out_dir / f"{part}.npz")
    summary = {part: len(y) for part, (_, y) in arrays.items()}
    log.info("split (%s): %s", cfg.method, summary)
    return summary



def main() -> None:
    runtime.stage_main("split", lambda: run(config.load()))


if __name__ == "__main__":
    main()
