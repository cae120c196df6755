"""Run N seeds of every model and say how much the results move: ``make seeds N=3``.

Params: ``train.seed`` (the first seed; the others are the next integers) and
the dataset's ``references`` (shown beside the summary).
Input: the project as committed plus the workspace's changes.
Outputs: one DVC experiment per seed (``seed-<n>``, ``dvc exp show`` lists them;
``dvc exp apply seed-43`` restores one), ``metrics/seeds.json`` (every seed's
validation and test accuracy per model, and per model their mean, standard
deviation and minimum) and ``reports/seeds.md`` (the same as tables, beside
the references). Commit both files.

One test-set accuracy is one draw: the same recipe with another seed lands a
few images higher or lower. The spread over seeds is the honest error bar of a
*recipe* (the report's intervals are those of one trained model).

Each seed is ``dvc exp run --temp -S train.seed=<n>``: the executor of DVC's
experiment queue (``dvc exp run --queue`` + ``dvc queue start``), run in a
temporary copy of the workspace, but one seed at a time and in the foreground,
because one training already keeps this machine's cores busy and a command that
returns before its results exist cannot write the summary. The seed equal to
``train.seed`` reproduces the committed run, so DVC restores it from its cache
instead of training.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

from pipeline import config
from pipeline import runtime
from pipeline.runtime import StageError

log = logging.getLogger("pipeline.review.seeds")
SEEDS_JSON = Path("metrics/seeds.json")
SEEDS_REPORT = Path("reports/seeds.md")


def seed_list(first: int, n: int) -> list[int]:
    return [first + i for i in range(n)]


def summarise(per_seed: dict[int, dict]) -> dict[str, dict]:
    """``{seed: evaluate.json}`` -> per model: mean, std (n-1) and min of val and test accuracy."""
    models: dict[str, dict] = {}
    for metrics in per_seed.values():
        for name, m in metrics["models"].items():
            for key in ("val_accuracy", "test_accuracy"):
                models.setdefault(name, {}).setdefault(key, []).append(m[key])
    out = {}
    for name, values in models.items():
        out[name] = {"seeds": len(values["test_accuracy"])}
        for key, xs in values.items():
            mean = sum(xs) / len(xs)
            std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
            out[name][key] = {"mean": round(mean, 6), "std": round(std, 6), "min": min(xs),
                              "max": max(xs)}
    return out


def _pm(stat: dict) -> str:
    return f"{100 * stat['mean']:.2f}% ± {100 * stat['std']:.2f}"


def render(summary: dict, per_seed: dict[int, dict], references: dict, dataset: str) -> str:
    refs = bool(references)
    header = ["model", "seeds", "val acc mean ± std (pp)", "val min",
              "test acc mean ± std (pp)", "test min"]
    if refs:
        header += ["reference val", "reference test"]
    lines = [f"# Seeds: {len(per_seed)} runs of every model ({dataset})", "",
             f"Seeds {', '.join(map(str, per_seed))} (`train.seed`), everything else as "
             "committed; made with `make seeds`. Std is the sample standard deviation over "
             "seeds.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, s in summary.items():
        row = [name, str(s["seeds"]), _pm(s["val_accuracy"]),
               f"{100 * s['val_accuracy']['min']:.2f}%", _pm(s["test_accuracy"]),
               f"{100 * s['test_accuracy']['min']:.2f}%"]
        if refs:
            ref = references.get(name)
            row += ["–" if ref is None or ref.val_accuracy is None else f"{100 * ref.val_accuracy:.2f}%",
                    "–" if ref is None else f"{100 * ref.test_accuracy:.2f}%"]
        lines.append("| " + " | ".join(row) + " |")
    if not refs:
        lines += ["", "This dataset has no published references in `params.yaml`."]
    names = list(summary)
    lines += ["", "## Every seed (test accuracy, validation in brackets)", "",
              "| seed | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for seed, metrics in per_seed.items():
        cells = [f"{100 * metrics['models'][n]['test_accuracy']:.2f}% "
                 f"({100 * metrics['models'][n]['val_accuracy']:.2f}%)" for n in names]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- dvc

def _env() -> dict:
    # the stages run `python -m pipeline.<stage>`: this interpreter's venv must come first
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(cmd: list[str], project: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=_env())
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise StageError(f"`{' '.join(cmd[2:])}` failed:\n{tail}")
    return proc


def _dvc(*args: str, project: Path, check: bool = True) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "dvc", *args], project, check)


def _exp_metrics(name: str, project: Path) -> dict:
    """metrics/evaluate.json of experiment ``name``: its git ref, found by name, so a
    commit made while the seeds run (the experiment's base is HEAD when it started)
    cannot hide it. ``run_seed`` removed any older experiment of that name first."""
    refs = _run(["git", "for-each-ref", "--sort=-committerdate", "--format=%(refname)",
                 "refs/exps/"], project).stdout.split()
    ref = next((r for r in refs if r.rsplit("/", 1)[-1] == name), None)
    if ref is None:
        raise StageError(f"seeds: experiment {name} left no git ref under refs/exps/")
    text = _run(["git", "show", f"{ref}:{config.EVAL_METRICS.as_posix()}"], project).stdout
    return json.loads(text)


def run_seed(seed: int, project: Path) -> dict:
    """One seed as experiment ``seed-<n>``; a seed trained before (DVC's run cache) is
    restored, not retrained."""
    name = f"seed-{seed}"
    _dvc("exp", "remove", name, project=project, check=False)  # a rerun replaces it
    log.info("seeds: dvc exp run --temp -S train.seed=%d (%s)", seed, name)
    _dvc("exp", "run", "--temp", "--name", name, "-S", f"train.seed={seed}", project=project)
    return _exp_metrics(name, project)


def run(n: int, project: Path = Path("."), first: int | None = None,
        json_path: Path = SEEDS_JSON, report_path: Path = SEEDS_REPORT) -> dict:
    project = Path(project).resolve()
    if n < 1:
        raise StageError("seeds: N must be at least 1")
    params = config.load_project(project)
    seeds = seed_list(params.train.seed if first is None else first, n)
    per_seed = {seed: run_seed(seed, project) for seed in seeds}
    summary = summarise(per_seed)
    summary = {n: summary[n] for n in [*params.models, *sorted(summary)] if n in summary}
    record = {"dataset": params.fetch.dataset, "seeds": seeds, "summary": summary,
              "per_seed": {str(s): {name: {k: m[k] for k in ("val_accuracy", "test_accuracy")}
                                    for name, m in metrics["models"].items()}
                           for s, metrics in per_seed.items()}}
    runtime.write_json(project / json_path, record)
    runtime.atomic_write_text(project / report_path, render(
        summary, per_seed, params.dataset.references, params.fetch.dataset))
    log.info("seeds: wrote %s and %s", json_path, report_path)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.review.seeds",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--n", type=int, default=3, help="number of seeds (default 3)")
    parser.add_argument("--first", type=int, default=None,
                        help="first seed (default: train.seed of params.yaml)")
    args = parser.parse_args(argv)
    runtime.stage_main("seeds", lambda: run(args.n, first=args.first))


if __name__ == "__main__":
    main()
