"""The whole pipeline on another CPU kernel path, beside this checkout's run.

Usage: python bench/kernel_path.py [--env TF_ENABLE_ONEDNN_OPTS=0 ONEDNN_MAX_CPU_ISA=AVX2
                                          PIPELINE_NATIVE_MARCH=x86-64-v3]
                                   [--worktree ../kernel-path] [--out reports/kernel-path.md]
       python bench/kernel_path.py --report-only   (the table from an existing worktree run)

Why: an AVX2-only CPU (the project's AMD machines without AVX-512) makes
TensorFlow run Eigen's kernels instead of oneDNN's, which round differently, and
the recipe's accuracy must hold there too. Where no such machine is at hand, the
default ``--env`` makes this one take the same path: oneDNN off (as TensorFlow
decides by default on a CPU without VNNI/BF16/AMX), oneDNN's remaining
uses (its matrix products inside Eigen) capped at AVX2, and the recurrent
layers' C++ op built for AVX2 (``pipeline.rnn.native``), hence with fp32 products. The speed of that run says
nothing about an AVX2 machine's speed; its accuracy is the recipe's on that path.

Runs ``dvc repro -f`` of this checkout's HEAD in a git worktree (sharing
``.venv``, the worktree on ``PYTHONPATH`` so its stages import its own code) with
``--env`` set, then writes a table: per model, best epoch,
validation and test accuracy of both runs, the tutorial's test accuracy, and on
how many test images the two runs' predictions differ. The runtime records name
each run's kernels (``pipeline.runtime.kernels``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from checkout import ROOT, child_env, mmss  # siblings in bench/


def run(worktree: Path, env: dict) -> None:
    if not worktree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree),
                        "HEAD"], check=True)
    if not (worktree / ".venv").exists():
        (worktree / ".venv").symlink_to(ROOT / ".venv")
    mirror = ROOT.parent / "shared" / "data" / "mnist"
    # The worktree's own pipeline (PYTHONPATH), not the shared venv's editable install.
    full = child_env(worktree, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
                     GX_ANALYTICS_ENABLED="false", **env)
    if "DATA_MIRROR_DIR" not in full and mirror.is_dir():
        full["DATA_MIRROR_DIR"] = str(mirror)
    print(f"dvc repro -f in {worktree} with {env}: log {worktree / 'kernel-path.log'}",
          flush=True)
    with open(worktree / "kernel-path.log", "w") as log:
        subprocess.run(["dvc", "repro", "-f"], cwd=worktree, env=full, stdout=log,
                       stderr=subprocess.STDOUT, check=True)


def _predictions(run: Path) -> dict[str, list[str]]:
    with open(run / "reports" / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    return {k: [r[k] for r in rows] for k in rows[0] if k not in ("image", "actual")}


def table(base: Path, other: Path) -> str:
    from pipeline import config

    refs = config.load_project(base).dataset.references
    runs = {}
    for run in (base, other):
        ev = json.loads((run / "metrics" / "evaluate.json").read_text())
        rt = json.loads((run / "metrics" / "runtime" / "train-lstm.json").read_text())
        runs[run] = (ev, rt["machine"], _predictions(run))
    (b_ev, b_m, b_pred), (o_ev, o_m, o_pred) = runs[base], runs[other]
    if b_m["cpu_model"] != o_m["cpu_model"] or b_m["isa_flags"] != o_m["isa_flags"]:
        raise SystemExit("kernel_path: the two runs come from different machines")
    lines = [
        "# The pipeline on two CPU kernel paths, one machine",
        "",
        f"Machine: **{b_m['cpu_model']}**, {b_m['cpu_count']} cores, ISA: {b_m['isa_flags']}; "
        f"TensorFlow {b_m['tensorflow']}. Command: "
        f"`{' '.join(['python', 'bench/kernel_path.py', *sys.argv[1:]])}`.",
        f"A = this checkout's run, kernels: {b_m.get('kernels', '?')}. "
        f"B = the same commit in a worktree, kernels: {o_m.get('kernels', '?')} "
        "(the path an AVX2-only CPU takes by default).",
        "",
        "| model | A best epoch | A val | A test | B best epoch | B val | B test | tutorial test "
        "| test images predicted differently |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, a in b_ev["models"].items():
        b = o_ev["models"][name]
        differ = sum(x != y for x, y in zip(b_pred[name], o_pred[name]))
        tut = refs.get(name).test_accuracy if refs.get(name) else None
        lines.append(
            f"| {name} | {a['best_epoch']:g} | {a['val_accuracy']:.2%} | {a['test_accuracy']:.2%} "
            f"| {b['best_epoch']:g} | {b['val_accuracy']:.2%} | {b['test_accuracy']:.2%} | "
            f"{f'{tut:.2%}' if tut else '-'} | {differ} |")
    return "\n".join(lines + ["", *times(base, other, refs)]) + "\n"


def _clock(seconds) -> str:
    return "-" if seconds is None else mmss(seconds)


def times(base: Path, other: Path, refs) -> list[str]:
    """Per model and run: the fit's training time, its time per epoch and the time until
    validation first reached the tutorial's val accuracy (``metrics/train/MODEL``)."""
    lines = ["Training time (Keras' `fit`), per epoch, and until the validation accuracy "
             "first reached the tutorial's best validation accuracy:", "",
             "| model | tutorial val | A fit | A per epoch | A to tutorial val "
             "| B fit | B per epoch | B to tutorial val |", "|---|---|---|---|---|---|---|---|"]
    total = {base: 0.0, other: 0.0}
    names = json.loads((base / "metrics" / "evaluate.json").read_text())["models"]
    for name in names:
        row = [name, f"{refs[name].val_accuracy:.2%}" if name in refs else "-"]
        for run in (base, other):
            m = json.loads((run / "metrics" / "train" / name / "metrics.json").read_text())
            total[run] += m["wall_time_s"]
            row += [_clock(m["wall_time_s"]), f"{m.get('seconds_per_epoch', '-')} s",
                    _clock(m.get("seconds_to_reference_val"))]
        lines.append("| " + " | ".join(row) + " |")
    lines.append(f"| **all four** | | **{_clock(total[base])}** ({total[base]:.1f} s) | | "
                 f"| **{_clock(total[other])}** ({total[other]:.1f} s) | | |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", nargs="*", default=["TF_ENABLE_ONEDNN_OPTS=0",
                                                 "ONEDNN_MAX_CPU_ISA=AVX2",
                                                 "PIPELINE_NATIVE_MARCH=x86-64-v3"])
    ap.add_argument("--worktree", type=Path, default=ROOT.parent / "kernel-path")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "kernel-path.md")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if not args.report_only:
        run(args.worktree.resolve(), dict(kv.split("=", 1) for kv in args.env))
    text = table(ROOT, args.worktree.resolve())
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
