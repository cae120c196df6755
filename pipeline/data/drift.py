"""Data drift: a small profile of a set of digit images, and how far two profiles are apart.

Why: a retraining run spends its hours on whatever data arrived. Before it
does, ``validate`` compares the new training data with the data the champion
was trained on, whose profile (this module's ``profile``, a JSON file of about
50 KB) travels beside the champion's model, and stops the run where the data
moved beyond a stated threshold. The same functions serve the stage, the
false-alarm bench (``bench/drift_false_alarms.py``) and the tests, so the
measured false-alarm rate is that of the check the pipeline runs.

The statistics (their thresholds are ``validate.drift`` in params.yaml):

- ``labels``: Jensen-Shannon distance (base 2, 0 to 1) between the label shares;
- ``ink`` (mean intensity of an image), ``centre_row`` and ``centre_col`` (its
  centre of mass): Wasserstein-1 distance between the reference's and the new
  distribution divided by the reference's standard deviation ("Wasserstein
  distance (normed)", Evidently's default for large samples), computed from
  200 quantiles of each;
- ``mean_images``: per class, ``||new mean image - reference mean image|| /
  ||reference mean image||`` (L2 over pixels), the largest over the classes;
  1.0 where a class is missing on one side.

Distances, not p-values: at 60,000 images every test rejects differences far
too small to matter, so a p-value would flag any new batch. numpy only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline import config

QUANTILES = 200             # the distributions are kept as 200 quantiles (midpoints)
CONTINUOUS = ("ink", "centre_row", "centre_col")
STATISTICS = ("labels", *CONTINUOUS, "mean_images")
TESTS = {
    "labels": "Jensen-Shannon distance of the label shares",
    "ink": "Wasserstein distance / reference std of the mean intensity per image",
    "centre_row": "Wasserstein distance / reference std of the centre of mass (row)",
    "centre_col": "Wasserstein distance / reference std of the centre of mass (column)",
    "mean_images": "largest relative L2 distance between a class's mean images",
}


def limits(cfg: config.DriftConfig) -> dict[str, float]:
    """Each statistic's threshold from ``validate.drift`` (``centre`` holds for row and column)."""
    return {"labels": cfg.labels, "ink": cfg.ink, "centre_row": cfg.centre,
            "centre_col": cfg.centre, "mean_images": cfg.mean_images}


def per_image(images: np.ndarray) -> dict[str, np.ndarray]:
    """Ink (0-1) and centre of mass (row, column, in pixels) of each of ``(n, rows, cols)``."""
    n, rows, cols = images.shape
    by_row = images.sum(axis=2, dtype=np.int64)     # (n, rows): ink in each row
    by_col = images.sum(axis=1, dtype=np.int64)     # (n, cols)
    mass = by_row.sum(axis=1).astype(np.float64)    # (n,)
    blank = mass == 0                               # no ink: call its centre the middle
    safe = np.where(blank, 1.0, mass)
    return {"ink": mass / (rows * cols * 255.0),
            "centre_row": np.where(blank, (rows - 1) / 2, by_row @ np.arange(rows) / safe),
            "centre_col": np.where(blank, (cols - 1) / 2, by_col @ np.arange(cols) / safe)}


def _quantiles(values: np.ndarray) -> np.ndarray:
    return np.quantile(values, (np.arange(QUANTILES) + 0.5) / QUANTILES)


def profile(images: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """What drift is measured on: label counts, quantiles, per-class mean images (plain JSON)."""
    images, labels = np.asarray(images), np.asarray(labels).astype(np.int64)
    stats = per_image(images)
    means = []
    for k in range(num_classes):                    # (rows, cols) per class; None if absent
        members = images[labels == k]
        means.append(np.round(members.mean(axis=0, dtype=np.float64), 2).tolist()
                     if len(members) else None)
    return {"images": int(len(images)), "shape": list(images.shape[1:]),
            "labels": np.bincount(labels, minlength=num_classes)[:num_classes].tolist(),
            "quantiles": {s: np.round(_quantiles(v), 5).tolist() for s, v in stats.items()},
            "std": {s: round(float(v.std()), 6) for s, v in stats.items()},
            "mean_images": means}


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance, base 2 (0 = same shares, 1 = no class in common)."""
    p, q = np.asarray(p, float) / np.sum(p), np.asarray(q, float) / np.sum(q)
    m = (p + q) / 2

    def kl(a):
        inside = a > 0
        return float(np.sum(a[inside] * np.log2(a[inside] / m[inside])))
    return float(np.sqrt(max(0.0, (kl(p) + kl(q)) / 2)))


def wasserstein_normed(reference: list[float], new: list[float], std: float) -> float:
    """W1 between two distributions given as equal-count quantiles, over the reference's std."""
    distance = float(np.mean(np.abs(np.asarray(reference) - np.asarray(new))))
    return distance / std if std > 0 else (0.0 if distance == 0 else float("inf"))


def mean_image_distances(reference: list, new: list) -> list[float]:
    """Per class: relative L2 distance of the mean images (1.0 where one side lacks the class)."""
    out = []
    for ref, cur in zip(reference, new):
        if ref is None or cur is None:
            out.append(0.0 if ref is cur else 1.0)
            continue
        ref, cur = np.asarray(ref), np.asarray(cur)
        norm = float(np.linalg.norm(ref))
        out.append(float(np.linalg.norm(cur - ref)) / norm if norm else 1.0)
    return out


def compare(reference: dict, new: dict, thresholds: dict[str, float]) -> dict[str, dict]:
    """Every statistic of ``STATISTICS``: test, value, threshold, passed (value <= threshold)."""
    if reference["shape"] != new["shape"] or len(reference["labels"]) != len(new["labels"]):
        raise ValueError(f"the profiles differ in image shape or classes ({reference['shape']}, "
                         f"{len(reference['labels'])} classes vs {new['shape']}, "
                         f"{len(new['labels'])})")
    values = {"labels": (js_distance(reference["labels"], new["labels"]), "")}
    for s in CONTINUOUS:
        values[s] = (wasserstein_normed(reference["quantiles"][s], new["quantiles"][s],
                                        reference["std"][s]), "")
    per_class = mean_image_distances(reference["mean_images"], new["mean_images"])
    worst = int(np.argmax(per_class))
    missing = [k for k, d in enumerate(per_class) if d == 1.0 and
               (reference["mean_images"][k] is None or new["mean_images"][k] is None)]
    values["mean_images"] = (per_class[worst], f"classes missing on one side: {missing}"
                             if missing else f"largest for class {worst}")
    return {s: {"test": TESTS[s], "value": round(v, 6), "threshold": thresholds[s],
                "passed": bool(v <= thresholds[s]), **({"detail": d} if d else {})}
            for s, (v, d) in values.items()}


def failures(statistics: dict[str, dict]) -> str:
    """The drifted statistics in a few words: ``labels 0.23 > 0.05, ...``."""
    return ", ".join(f"{s} {r['value']:.4g} > {r['threshold']:g}"
                     + (f" ({r['detail']})" if "detail" in r else "")
                     for s, r in statistics.items() if not r["passed"])


def find_reference(folders) -> tuple[Path, dict] | None:
    """The first champion folder with a ``profile.json``: the published one, then models/best."""
    for folder in map(Path, folders):
        try:
            return folder, json.loads((folder / "profile.json").read_text())
        except (OSError, ValueError):
            continue
    return None


def _champion(folder: Path) -> dict:
    """Which model and run the reference belongs to (its card and publication record)."""
    def read(name: str) -> dict:
        return json.loads((folder / name).read_text()) if (folder / name).exists() else {}
    return {"model": read("card.json").get("model"), "run_id": read("published.json").get("run_id")}


def block(cfg: config.DriftConfig, new: dict, found: tuple[Path, dict] | None) -> dict:
    """``metrics/validate.json``'s ``drift``: per statistic value, threshold, passed; overall."""
    if found is None:
        return {"checked": False, "reason": "no champion yet: drift not checked"}
    folder, ref = found
    if (ref.get("dataset"), ref.get("shape"), len(ref.get("labels", ()))) != (
            new["dataset"], new["shape"], len(new["labels"])):
        return {"checked": False, "reason": f"the champion in {folder} was trained on other data "
                f"({ref.get('dataset')}): drift not checked"}
    stats = compare(ref, new, limits(cfg))
    passed = all(r["passed"] for r in stats.values())
    return {"checked": True, "passed": passed, "flagged": not passed and cfg.on_drift == "flag",
            "on_drift": cfg.on_drift, "statistics": stats,
            "reference": {"from": str(folder), **_champion(folder), "images": ref["images"]}}
