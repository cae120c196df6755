"""The drift page of the validation report: ``drift.md`` and ``drift.png`` beside the Data Docs.

Why a page and not a Great Expectations expectation: GX 1.x has no expectation
for per-class mean images, its KL-divergence expectation needs a partition
object per column and gives an infinite value for any empty bin, and the
false-alarm bench must run the same code hundreds of times, which a GX run per
comparison makes slow. So ``pipeline.data.drift`` decides, and this module
shows its result where the Data Docs are, with a picture: label shares,
the three distributions as cumulative curves (reference dashed, new solid), and
each class's mean-image difference (new minus reference).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data import drift


def markdown(block: dict, picture: str | None = "drift.png") -> str:
    """The page: verdict, reference, one row per statistic."""
    lines = ["# Data drift", ""]
    if not block.get("checked"):
        return "\n".join(lines + [f"Not checked: {block['reason']}.", ""])
    ref = block["reference"]
    verdict = ("**passed**" if block["passed"] else
               "**drift, flagged** (on_drift: flag; the run went on)" if block["flagged"]
               else "**drift: the run stopped** (on_drift: stop)")
    lines += [f"New training data against the data of the champion in `{ref['from']}` "
              f"(model {ref.get('model')}, run {ref.get('run_id') or 'not published'}, "
              f"{ref['images']:,} images): {verdict}.", "",
              "| statistic | test | value | threshold | result |", "|---|---|---|---|---|"]
    for name, r in block["statistics"].items():
        result = "pass" if r["passed"] else "**drift**"
        detail = f" ({r['detail']})" if "detail" in r else ""
        lines.append(f"| `{name}` | {r['test']} | {r['value']:.4f} | {r['threshold']:g} | "
                     f"{result}{detail} |")
    if picture:
        lines += ["", f"![reference (dashed) and new (solid) data]({picture})"]
    return "\n".join(lines + [""])


def figure(reference: dict, new: dict, path: Path) -> None:
    """Label shares, the cumulative curves of ink and centre, mean-image differences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = len(reference["labels"])
    fig = plt.figure(figsize=(max(12, classes * 1.2), 5.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.5, 1])
    axes = top.subplots(1, 1 + len(drift.CONTINUOUS))
    for offset, (label, prof) in zip((-0.2, 0.2), (("reference", reference), ("new", new))):
        shares = np.asarray(prof["labels"]) / max(1, sum(prof["labels"]))
        axes[0].bar(np.arange(classes) + offset, shares, width=0.4, label=label)
    axes[0].set(title="label shares", xticks=range(classes))
    axes[0].legend(fontsize=7)
    steps = (np.arange(drift.QUANTILES) + 0.5) / drift.QUANTILES
    for ax, stat in zip(axes[1:], drift.CONTINUOUS):
        ax.plot(reference["quantiles"][stat], steps, "k--", label="reference")
        ax.plot(new["quantiles"][stat], steps, "C1", label="new")
        ax.set(title=f"{stat} (cumulative)", ylabel="share of images below")
    bottom.suptitle("new minus reference mean image per class (red: more ink, blue: less)",
                    fontsize=9)
    for k, ax in enumerate(bottom.subplots(1, classes)):
        ax.set(xticks=[], yticks=[], title=f"class {k}")
        ref, cur = reference["mean_images"][k], new["mean_images"][k]
        missing = ref is None or cur is None
        shape = reference["shape"]
        ax.imshow(np.zeros(shape) if missing else np.asarray(cur) - np.asarray(ref),
                  cmap="RdBu_r", vmin=-128, vmax=128)
        if missing:
            ax.text(0.5, 0.5, "missing", ha="center", va="center", transform=ax.transAxes)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write(folder: Path, block: dict, reference: dict | None, new: dict | None) -> None:
    """``folder/drift.md``, and ``drift.png`` where drift was checked."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    drawn = bool(block.get("checked") and reference and new)
    if drawn:
        figure(reference, new, folder / "drift.png")
    (folder / "drift.md").write_text(markdown(block, "drift.png" if drawn else None))
