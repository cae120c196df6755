"""Stage ``evaluate``: test every checkpoint, pick the champion, write the report.

Params: ``evaluate`` (batch_size, throughput_repeats), ``models``,
``fetch.dataset`` and ``datasets`` (checksums for the model card; the dataset's
own ``references``, the only ones the report compares with).
Inputs: ``data/split/``, ``models/checkpoints/``, ``metrics/train/``, and
``reports/validation/profile.json`` (the data's drift profile, kept beside the
champion so the next run's validate can compare its data with the champion's).
Outputs: ``metrics/evaluate.json`` (per model: test accuracy and loss,
per-class precision/recall/F1, parameters, training wall time, throughput,
best epoch, the test accuracy's exact 95% interval; plus the champion and the
machine), ``reports/predictions.csv`` (every test image's label and each
model's prediction: the paired test of ``pipeline.review.diff`` reads it),
``reports/confusion/<model>.csv`` (for
``dvc plots``), ``reports/report.md`` and ``reports/figures/``, and
``models/best/`` (the champion's checkpoint, model card and data profile) and
``models/export/champion/1/`` (the champion as a TF Serving SavedModel that
takes raw pixels; see ``pipeline/serve/export.py``).

The champion is chosen by *validation* accuracy, never by test accuracy:
choosing on the test set would make its test number an optimistic estimate.
Both accuracies are computed here, by the same model in the same arithmetic:
the checkpoint as saved and exported (Keras' stock layers, fp32). The
validation accuracy that training recorded (``val_accuracy_training``) came
from the training kernels, bf16 products on some CPUs, and only picked the
checkpoint within each training.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipeline import config
from pipeline.serve import export
from pipeline.evaluation import report
from pipeline import runtime
from pipeline.data import arrays
from pipeline.evaluation import stats
from pipeline.runtime import StageError

log = logging.getLogger("pipeline.stages.evaluate")
# What computes every accuracy here: the checkpoint as train saved it (model.stock_copy).
ARITHMETIC = "fp32, Keras' stock recurrent layers (the checkpoint as saved and exported)"


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``[actual, predicted]``."""
    return np.bincount(y_true.astype(int) * num_classes + y_pred.astype(int),
                       minlength=num_classes ** 2).reshape(num_classes, num_classes)


def per_class_scores(cm: np.ndarray) -> dict[str, dict[str, float]]:
    tp = np.diag(cm).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(tp / cm.sum(axis=0))
        recall = np.nan_to_num(tp / cm.sum(axis=1))
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return {str(c): {"precision": round(float(precision[c]), 4),
                     "recall": round(float(recall[c]), 4), "f1": round(float(f1[c]), 4)}
            for c in range(len(cm))}


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y.astype(int)].mean())


def choose_champion(val_accuracy: dict[str, float]) -> str:
    """Highest validation accuracy; ties go to the model listed first."""
    return max(val_accuracy, key=lambda name: (val_accuracy[name], -list(val_accuracy).index(name)))


def _git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def val_accuracy(net, x: np.ndarray, y: np.ndarray, cfg: config.EvaluateConfig) -> float:
    """The validation accuracy that picks the champion, in the test's arithmetic."""
    logits = np.asarray(net.predict(x.astype("float32"), batch_size=cfg.batch_size, verbose=0))
    return round(float((logits.argmax(axis=1) == y).mean()), 6)


def evaluate_model(net, x: np.ndarray, y: np.ndarray, cfg: config.EvaluateConfig,
                   num_classes: int) -> tuple[dict, np.ndarray]:
    x = x.astype("float32")
    logits = np.asarray(net.predict(x, batch_size=cfg.batch_size, verbose=0))
    timings = []
    for _ in range(cfg.throughput_repeats):
        start = time.perf_counter()
        net.predict(x, batch_size=cfg.batch_size, verbose=0)
        timings.append(time.perf_counter() - start)
    pred = logits.argmax(axis=1)
    cm = confusion(y, pred, num_classes)
    low, high = stats.clopper_pearson(int((pred == y).sum()), len(y))
    return {"test_accuracy": round(float((pred == y).mean()), 6),
            "test_images": len(y), "test_accuracy_ci_low": round(low, 6),
            "test_accuracy_ci_high": round(high, 6),
            "test_loss": round(cross_entropy(logits, y), 6),
            "throughput_img_s": round(len(x) / min(timings), 1),
            "per_class": per_class_scores(cm)}, pred


def run(params: config.Params, split_dir: Path = config.SPLIT_DIR,
        models_dir: Path = config.MODELS_DIR, train_log_dir: Path = config.TRAIN_LOG_DIR,
        metrics_path: Path = config.EVAL_METRICS, confusion_dir: Path = config.CONFUSION_DIR,
        report_path: Path = config.REPORT_FILE, champion_dir: Path = config.CHAMPION_DIR,
        export_root: Path = config.EXPORT_DIR,
        predictions_path: Path = config.PREDICTIONS_FILE,
        profile_path: Path = config.VALIDATION_DOCS_DIR / "profile.json") -> dict:
    from pipeline.rnn import model as model_lib

    x_test, y_test = arrays.load(split_dir, "test")
    x_val, y_val = arrays.load(split_dir, "val")
    ds = params.dataset
    results, preds = {}, {}
    for name in params.models:
        ckpt = Path(models_dir) / "checkpoints" / f"{name}.keras"
        summary_path = Path(train_log_dir) / name / "metrics.json"
        if not ckpt.exists():
            raise StageError(f"{ckpt}: checkpoint is missing; run train@{name} first")
        if not summary_path.exists():
            raise StageError(f"{summary_path}: training summary is missing; rerun train@{name}")
        trained = json.loads(summary_path.read_text())
        net = model_lib.load(ckpt)
        scores, preds[name] = evaluate_model(net, x_test, y_test, params.evaluate, ds.num_classes)
        results[name] = {"val_accuracy": val_accuracy(net, x_val, y_val, params.evaluate),
                         "val_accuracy_training": trained["best_val_accuracy"], **scores,
                         "params": trained["params"], "train_wall_time_s": trained["wall_time_s"],
                         "best_epoch": trained["best_epoch"],
                         "training_arithmetic": trained.get("arithmetic", "not recorded")}
        log.info("evaluate: %s test accuracy %.4f, val %.4f (in training: %.4f)", name,
                 scores["test_accuracy"], results[name]["val_accuracy"], trained["best_val_accuracy"])

    champion = choose_champion({n: r["val_accuracy"] for n, r in results.items()})
    metrics = {"champion": champion, "arithmetic": ARITHMETIC, "models": results,
               "machine": runtime.machine()}
    curves = {name: report.load_curve(Path(train_log_dir) / name) for name in params.models}

    # Everything is written into a scratch folder first, then moved into place.
    with tempfile.TemporaryDirectory(prefix=".evaluate-", dir=".") as scratch:
        scratch = Path(scratch)
        for name, pred in preds.items():
            report.write_confusion_csv(scratch / "confusion" / f"{name}.csv", y_test, pred)
        report.write_predictions_csv(scratch / "predictions.csv", y_test, preds)
        report.write_figures(scratch / "figures", curves,
                             {n: confusion(y_test, p, ds.num_classes) for n, p in preds.items()})
        card = {"model": champion, "metrics": results[champion],
                "architecture": asdict(params.models[champion]),
                "train": asdict(params.train),
                "data": {"dataset": params.fetch.dataset,
                         "sha256": {ds.file_name(r): ds.sha256(r) for r in config.FILE_ROLES}},
                "git_revision": _git_revision()}
        best = scratch / "best"
        best.mkdir()
        shutil.copyfile(Path(models_dir) / "checkpoints" / f"{champion}.keras", best / "model.keras")
        (best / "card.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
        (best / "card.md").write_text(report.model_card(card))
        if Path(profile_path).exists():   # the data the champion was trained on
            shutil.copyfile(profile_path, best / "profile.json")
        export.from_checkpoint(best / "model.keras", scratch / "export")
        (scratch / "report.md").write_text(
            report.render(metrics, ds.references, "figures"))

        _replace_dir(scratch / "confusion", Path(confusion_dir))
        _replace_dir(scratch / "figures", Path(report_path).parent / "figures")
        _replace_dir(best, Path(champion_dir))
        _replace_dir(scratch / "export", Path(export_root))
        runtime.atomic_write_text(Path(report_path), (scratch / "report.md").read_text())
        runtime.atomic_write_text(Path(predictions_path), (scratch / "predictions.csv").read_text())
    runtime.write_json(Path(metrics_path), metrics)
    log.info("evaluate: champion %s (val %.4f)", champion, results[champion]["val_accuracy"])
    return metrics


def _replace_dir(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    shutil.move(str(src), dest)
    shutil.rmtree(old, ignore_errors=True)


def main() -> None:
    runtime.stage_main("evaluate", lambda: run(config.load()))


if __name__ == "__main__":
    main()
