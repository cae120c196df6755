"""The split's array files: one place that knows ``data/split/<part>.npz``.

``split`` writes them; ``train``, ``evaluate`` and ``publish`` read them. Each
file holds ``x`` uint8 ``(n, rows, cols)`` and ``y`` uint8 ``(n,)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PARTS = ("train", "val", "test")


def save(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    np.savez_compressed(path, x=x, y=y)


def load(split_dir: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(Path(split_dir) / f"{part}.npz") as data:
        return data["x"], data["y"]
