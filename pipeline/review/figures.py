"""Static comparison figures for ``pipeline.review.diff``: one row per changed model.

PNG, not Vega, because a pull-request comment shows images but not Vega specs
(``dvc plots diff``'s interactive HTML is linked beside them). Inputs are plain
lists so the figures can be drawn from any revision's committed files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OLD_STYLE = {"color": "0.55", "linestyle": "--"}  # the base revision: grey, dashed


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves(path: Path, models: dict[str, tuple[dict, dict]], old_label: str,
           new_label: str) -> None:
    """Validation accuracy and train/validation loss per check, base vs new.

    ``models``: ``{name: (old, new)}``, each ``{"eval/accuracy": (steps, values), ...}``.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(models), 2, figsize=(10, 3.2 * len(models)), squeeze=False)
    for (ax_acc, ax_loss), (name, (old, new)) in zip(axes, models.items()):
        for curves_, label, style in ((old, old_label, OLD_STYLE), (new, new_label, {})):
            if "eval/accuracy" in curves_:
                ax_acc.plot(*curves_["eval/accuracy"], label=f"{label} val",
                            **({"color": "tab:blue"} | style))
            for key, color in (("train/loss", "tab:blue"), ("eval/loss", "tab:orange")):
                if key in curves_:
                    part = "train" if key.startswith("train") else "val"
                    ax_loss.plot(*curves_[key], label=f"{label} {part}",
                                 **({"color": color} | style
                                    | ({"linestyle": ":"} if style and part == "val" else {})))
        ax_acc.set(title=f"{name}: validation accuracy", xlabel="validation check",
                   ylabel="accuracy")
        ax_loss.set(title=f"{name}: loss", xlabel="validation check", ylabel="cross-entropy")
        for ax in (ax_acc, ax_loss):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def matrix(pairs: list[tuple[int, int]], n: int) -> np.ndarray:
    """``(actual, predicted)`` pairs -> counts ``[actual, predicted]``."""
    a = np.asarray(pairs, dtype=int).reshape(-1, 2)
    return np.bincount(a[:, 0] * n + a[:, 1], minlength=n * n).reshape(n, n)


def confusions(path: Path, models: dict[str, tuple[list | None, list | None]],
               old_label: str, new_label: str) -> None:
    """Per model: base errors, new errors, and new minus base (red = more mistakes)."""
    plt = _pyplot()
    n = 1 + max((max(max(p) for p in pairs) for both in models.values() for pairs in both
                 if pairs), default=9)
    fig, axes = plt.subplots(len(models), 3, figsize=(11, 3.6 * len(models)), squeeze=False)
    for row, (name, (old, new)) in zip(axes, models.items()):
        cms = [matrix(p, n) if p else None for p in (old, new)]
        for ax, cm, label in zip(row[:2], cms, (old_label, new_label)):
            if cm is None:
                ax.set_axis_off()
                ax.set_title(f"{name} {label}: none")
                continue
            errors = cm.copy()
            np.fill_diagonal(errors, 0)  # the diagonal would swamp the mistakes
            ax.imshow(errors, cmap="Reds")
            for (i, j), v in np.ndenumerate(errors):
                if v:
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=6)
            ax.set_title(f"{name} {label}: {int(cm.trace())}/{int(cm.sum())} right", fontsize=9)
        ax = row[2]
        if cms[0] is None or cms[1] is None:
            ax.set_axis_off()
        else:
            change = cms[1] - cms[0]
            np.fill_diagonal(change, 0)
            lim = max(1, int(np.abs(change).max()))
            ax.imshow(change, cmap="RdBu_r", vmin=-lim, vmax=lim)
            for (i, j), v in np.ndenumerate(change):
                if v:
                    ax.text(j, i, f"{v:+d}", ha="center", va="center", fontsize=6)
            right = int(np.trace(cms[1]) - np.trace(cms[0]))
            ax.set_title(f"{name} change: {right:+d} right (red = more errors)", fontsize=9)
        for ax in row:
            if ax.axison:
                ax.set(xlabel="predicted", ylabel="actual", xticks=range(n), yticks=range(n))
                ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
