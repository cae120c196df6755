"""Human-facing outputs of ``evaluate``: the Markdown report, figures, model card.

Kept apart from the metric computation so the numbers can be tested without
matplotlib and the wording changed without touching the numbers. Figures are
static PNGs because pull-request comments and GitHub's Markdown show images,
not Vega specs; ``dvc plots`` still gets the raw CSV/TSV data.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline.evaluation import stats


def load_curve(log_dir: Path) -> dict[str, list[float]]:
    """dvclive's per-check TSVs -> {'train/accuracy': [...], 'eval/accuracy': [...], ...}."""
    curves = {}
    for tsv in sorted((Path(log_dir) / "plots" / "metrics").glob("*/*.tsv")):
        with open(tsv) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        key = f"{tsv.parent.name}/{tsv.stem}"
        curves[key] = [float(r[tsv.stem]) for r in rows]
    return curves


def write_confusion_csv(path: Path, y_true: np.ndarray, y_pred: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["actual", "predicted"])
        out.writerows(zip(y_true.tolist(), y_pred.tolist()))


def write_predictions_csv(path: Path, y_true: np.ndarray, preds: dict[str, np.ndarray]) -> None:
    """One row per test image, in test-set order: ``image,actual,<model>,...``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["image", "actual", *preds])
        columns = [p.tolist() for p in preds.values()]
        out.writerows([i, y, *row] for i, (y, *row) in enumerate(zip(y_true.tolist(), *columns)))


def read_predictions_csv(text: str) -> tuple[list[int], dict[str, list[int]]]:
    """``write_predictions_csv``'s text -> (labels, {model: predictions})."""
    rows = list(csv.reader(text.splitlines()))
    header, body = rows[0], rows[1:]
    labels = [int(r[1]) for r in body]
    return labels, {name: [int(r[j]) for r in body] for j, name in enumerate(header[2:], 2)}


def write_figures(out_dir: Path, curves: dict[str, dict], confusions: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for name, c in curves.items():
        line, = ax_acc.plot(range(1, len(c.get("eval/accuracy", [])) + 1),
                            c.get("eval/accuracy", []), label=f"{name} val")
        ax_loss.plot(range(1, len(c.get("train/loss", [])) + 1), c.get("train/loss", []),
                     color=line.get_color(), label=f"{name} train")
        ax_loss.plot(range(1, len(c.get("eval/loss", [])) + 1), c.get("eval/loss", []),
                     color=line.get_color(), linestyle="--", label=f"{name} val")
    ax_acc.set(title="validation accuracy", xlabel="validation check", ylabel="accuracy")
    ax_loss.set(title="loss", xlabel="validation check", ylabel="cross-entropy", yscale="log")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "curves.png", dpi=90)
    plt.close(fig)

    n = len(confusions)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 4.0), squeeze=False)
    for ax, (name, cm) in zip(axes[0], confusions.items()):
        errors = cm.copy()
        np.fill_diagonal(errors, 0)  # show the mistakes; the diagonal would swamp them
        ax.imshow(errors, cmap="Reds")
        for (i, j), v in np.ndenumerate(cm):
            if v and i != j:
                dark = v > errors.max() / 2
                ax.text(j, i, str(v), ha="center", va="center", fontsize=6,
                        color="white" if dark else "black")
        ax.set(title=f"{name}: {int(cm.trace())}/{int(cm.sum())} right", xlabel="predicted",
               ylabel="actual", xticks=range(len(cm)), yticks=range(len(cm)))
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "confusion.png", dpi=90)
    plt.close(fig)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def _duration(s: float | None) -> str:
    if s is None:
        return "–"
    whole = int(round(s))  # 59.6 s is "1 min 0 s", never "0 min 60 s"
    return f"{whole // 60} min {whole % 60} s"


def _ci(r: dict) -> str:
    lo, hi = r.get("test_accuracy_ci_low"), r.get("test_accuracy_ci_high")
    return "–" if lo is None or hi is None else f"{100 * lo:.2f}–{100 * hi:.2f}%"


def versus(r: dict, ref) -> str:
    """``above (p = 0.0003)``: our test accuracy against a reference's, exact binomial test."""
    n = r.get("test_images")
    if ref is None or not n:
        return "–"
    label, p = stats.versus_reference(round(r["test_accuracy"] * n), n, ref.test_accuracy)
    return f"{label} ({stats.p_text(p)})"


def results_table(metrics: dict, references: dict, reference_name: str = "reference") -> list[str]:
    """Our models, with 95% intervals, beside the dataset's references: Markdown rows.

    ``references`` are the run's own dataset's (``datasets.<name>.references``);
    where it has none the reference columns are left out, never borrowed. The
    README's results table is this table (pipeline.review.tables).
    """
    refs = bool(references)
    header = ["model", "val acc", "test acc", "95% CI (test)"]
    if refs:
        header[2:2] = [f"{reference_name} val"]
        header += [f"{reference_name} test", "Δ test", f"vs {reference_name}"]
    header += ["train time"] + ([f"{reference_name} time"] if refs else [])
    header += ["params", "best epoch", "inference img/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in metrics["models"].items():
        ref = references.get(name)
        row = [name, _pct(r["val_accuracy"])]
        if refs:
            row.append(_pct(ref.val_accuracy if ref else None))
        row += [_pct(r["test_accuracy"]), _ci(r)]
        if refs:
            delta = "–" if ref is None else f"{100 * (r['test_accuracy'] - ref.test_accuracy):+.2f} pp"
            row += [_pct(ref.test_accuracy if ref else None), delta, versus(r, ref)]
        row.append(_duration(r["train_wall_time_s"]))
        if refs:
            row.append(_duration(ref.wall_time_s if ref else None))
        row += [f"{r['params']:,}", str(r["best_epoch"]), f"{r['throughput_img_s']:,.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def render(metrics: dict, references: dict, figures: str = "figures",
           reference_name: str = "reference") -> str:
    """evaluate's report: the results table, how to read it, per-class F1, pictures."""
    refs = bool(references)
    lines = ["# Results", "",
             f"Champion (best validation accuracy): **{metrics['champion']}**", "",
             *results_table(metrics, references, reference_name)]
    lines += ["", "95% CI: exact (Clopper-Pearson) confidence interval of the test accuracy "
              "over the test images.", ""]
    if refs:
        lines += [f"Reference: this dataset's published results (`datasets.<name>.references` "
                  f"in `params.yaml`; for MNIST, the tutorial's). vs {reference_name}: exact two-sided binomial test of our right answers "
                  f"against the reference's test accuracy taken as fixed (its per-image "
                  "predictions are not available, so no paired test); *above* / *below* when "
                  "p < 0.05, which is exactly when the interval excludes that accuracy, "
                  "*within noise* otherwise.", ""]
    else:
        lines += ["This dataset has no published references in `params.yaml` "
                  "(`datasets.<name>.references`), so none are shown.", ""]
    lines += ["Test accuracy is measured on the checkpoint with the best validation "
              "accuracy, as in the tutorial.", "",
              f"Arithmetic: validation and test accuracy (and so the champion) come from "
              f"the same model in the same arithmetic: {metrics.get('arithmetic', 'not recorded')}. "
              "Training ran " + "; ".join(sorted({f"{r.get('training_arithmetic', 'not recorded')}"
                                                  for r in metrics["models"].values()}))
              + "; its own validation accuracy only picked each model's checkpoint.", "",
              "## Per-class F1 (test)", "",
              "| model | " + " | ".join(next(iter(metrics["models"].values()))["per_class"]) + " |",
              "|---|" + "---|" * len(next(iter(metrics["models"].values()))["per_class"])]
    for name, r in metrics["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{s['f1']:.3f}" for s in r["per_class"].values())
                     + " |")
    lines += ["", "## Training curves", "", f"![curves]({figures}/curves.png)", "",
              "## Confusion matrices (test, errors only)", "",
              f"![confusion]({figures}/confusion.png)", ""]
    return "\n".join(lines)


def model_card(card: dict) -> str:
    m = card["metrics"]
    arch = ", ".join(f"{k}={v}" for k, v in card["architecture"].items())
    sums = "\n".join(f"- `{role}`: `{sha}`" for role, sha in card["data"]["sha256"].items())
    return (f"# Model card: {card['model']}\n\n"
            f"Champion of this run, chosen by validation accuracy.\n\n"
            f"- validation accuracy: {_pct(m['val_accuracy'])}\n"
            f"- test accuracy: {_pct(m['test_accuracy'])} (loss {m['test_loss']:.4f})\n"
            f"- parameters: {m['params']:,}\n"
            f"- training time: {_duration(m['train_wall_time_s'])}, best epoch {m['best_epoch']}\n"
            f"- inference: {m['throughput_img_s']:,.0f} images/s (CPU)\n"
            f"- architecture: {arch}\n"
            f"- git revision: `{card['git_revision']}`\n\n"
            f"Input: uint8 images of shape (28, 28), read as 28 time steps of 28 pixels. "
            f"Output: 10 logits.\n\n## Data ({card['data']['dataset']})\n\n{sums}\n")
