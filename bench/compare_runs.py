"""Two full runs side by side: per model, training time, best epoch and test accuracy.

Usage: python bench/compare_runs.py BASE_DIR HEAD_DIR [--pauses FILE] [--out FILE.md]

Each directory is a checkout after `dvc repro` (bench/recipe.sh makes them: the old
recipe's commit in a worktree, then this checkout, one after the other on one
machine). Training time is each `train@<model>` stage's wall time from
`metrics/runtime/train-<model>.json`. ``--pauses`` lists intervals (``start end``,
Unix seconds, one per line) during which a run was stopped with SIGSTOP; the part
of each that falls inside a stage is subtracted from that stage's time, and the
table says so.

The header names the machine (from the runtime records; commits older than those
records have none) and when each run's trainings ran. Runs whose records name
different machines are refused: their times cannot be compared.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from checkout import mmss  # sibling in bench/


def stage_time(run: Path, model: str, pauses: list[tuple[float, float]]) -> tuple[float, float]:
    """(wall time of train@model minus paused seconds inside it, the paused seconds)."""
    record = run / "metrics" / "runtime" / f"train-{model}.json"
    wall = json.loads(record.read_text())["wall_time_s"]
    end = record.stat().st_mtime
    start = end - wall
    paused = sum(max(0.0, min(end, b) - max(start, a)) for a, b in pauses)
    return wall - paused, paused


def row(run: Path, model: str, pauses) -> dict:
    evaluated = json.loads((run / "metrics" / "evaluate.json").read_text())["models"][model]
    trained = json.loads((run / "metrics" / "train" / model / "metrics.json").read_text())
    seconds, paused = stage_time(run, model, pauses)
    return {"time_s": seconds, "paused_s": paused, "best_epoch": trained["best_epoch"],
            "epochs_run": trained.get("epochs_run", trained.get("checks_run")),
            "val": evaluated["val_accuracy"], "test": evaluated["test_accuracy"]}


def machine(run: Path, models: list[str]) -> dict | None:
    """The machine a run's trainings recorded (None for a commit older than the records)."""
    kinds = {json.dumps(json.loads((run / "metrics" / "runtime" / f"train-{m}.json").read_text())
                        .get("machine"), sort_keys=True) for m in models}
    if len(kinds) > 1:
        raise SystemExit(f"{run}: the trainings ran on different machines: {sorted(kinds)}")
    return json.loads(kinds.pop())


def window(run: Path, models: list[str]) -> str:
    """When the run's trainings ran, from the first start to the last end (UTC)."""
    import datetime as dt

    spans = [stage_time(run, m, [])[0] for m in models]
    ends = [(run / "metrics" / "runtime" / f"train-{m}.json").stat().st_mtime for m in models]
    start, end = min(e - s for e, s in zip(ends, spans)), max(ends)
    fmt = lambda t: dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")  # noqa: E731
    return f"{fmt(start)}-{fmt(end)[-5:]} UTC"


def header(base: Path, head: Path, models: list[str]) -> str:
    """What was compared, on which machine, when: refuses runs from two machines."""
    mb, mh = machine(base, models), machine(head, models)
    if mb and mh and mb != mh:
        raise SystemExit(f"{base} and {head} ran on different machines ({mb['cpu_model']} vs "
                         f"{mh['cpu_model']}); their times cannot be compared")
    m = mh or mb
    where = (f"{m['cpu_model']}, {m['cpu_count']} cores ({m['isa_flags']}), "
             f"TensorFlow {m['tensorflow']}" if m else "machine not recorded")
    return (f"Machine: {where}. Old recipe ({base}): trainings {window(base, models)}; "
            f"new recipe ({head}): trainings {window(head, models)}. Train time = the "
            "`train@<model>` stage's wall time (`metrics/runtime/train-<model>.json`), "
            "start-up and saving included.\n\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", type=Path)
    ap.add_argument("head", type=Path)
    ap.add_argument("--pauses", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--reference", type=Path, metavar="PROJECT", default=Path.cwd(),
                    help="the checkout whose params give the tutorial's results "
                         "(datasets.<name>.references; default: the current directory)")
    args = ap.parse_args()
    pauses = []
    if args.pauses:
        pauses = [tuple(map(float, line.split()[:2]))
                  for line in args.pauses.read_text().splitlines() if line.strip()]
    from pipeline import config

    refs = config.load_project(args.reference).dataset.references
    models = list(refs)
    base = {m: row(args.base, m, pauses) for m in models}
    head = {m: row(args.head, m, pauses) for m in models}
    lines = ["| model | old recipe: train time | best epoch (run) | test acc "
             "| new recipe: train time | best epoch (run) | test acc | tutorial test "
             "| time new / old |", "|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        b, h = base[m], head[m]
        lines.append(
            f"| {m} | {mmss(b['time_s'])} | {b['best_epoch']:g} ({b['epochs_run']:g}) | "
            f"{100 * b['test']:.2f}% | {mmss(h['time_s'])} | {h['best_epoch']:g} "
            f"({h['epochs_run']:g}) | {100 * h['test']:.2f}% | "
            f"{100 * refs[m].test_accuracy:.2f}% | {h['time_s'] / b['time_s']:.2f} |")
    tb, th = sum(b["time_s"] for b in base.values()), sum(h["time_s"] for h in head.values())
    lines.append(f"| **all four** | **{mmss(tb)}** | | | **{mmss(th)}** | | | "
                 f"| **{th / tb:.2f}** |")
    paused = [f"{label} {m} {v['paused_s']:.0f} s" for label, run in (("old", base), ("new", head))
              for m, v in run.items() if v["paused_s"]]
    if paused:
        lines += ["", "Stopped (SIGSTOP) while other measurements ran, and subtracted: "
                  + ", ".join(paused) + "."]
    text = header(args.base, args.head, models) + "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
