"""The tables the docs quote, generated from committed results so they cannot drift.

``rnn-tables`` (``python -m pipeline.review.tables``) rewrites what stands
between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in README.md from
``metrics/evaluate.json`` and the dataset's references in params.yaml, with the
machine that measured it (the same block in docs/results.md, with the run's
per-stage time and memory from ``metrics/runtime/`` between
``<!-- runtime:begin -->`` and ``<!-- runtime:end -->``), and between
``<!-- bench-train:begin -->`` and
``<!-- bench-train:end -->`` in docs/training-speed.md from the last
``make bench`` (reports/bench-train.md, which names its machine and command);
``--check`` only says whether they are current (tests/test_tables.py runs it,
so a hand edit or a new run without regenerating fails the suite).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from pipeline import config
from pipeline.evaluation import report

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
BENCH_BEGIN, BENCH_END = "<!-- bench-train:begin -->", "<!-- bench-train:end -->"
RUNTIME_BEGIN, RUNTIME_END = "<!-- runtime:begin -->", "<!-- runtime:end -->"
RESULTS_DOC = Path("docs/results.md")
BENCH_REPORT, BENCH_DOC = Path("reports/bench-train.md"), Path("docs/training-speed.md")


def machine_line(machine: dict) -> str:
    flags = machine.get("isa_flags", "")
    isa = ("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2")
    extras = [f for f in ("avx512_bf16", "amx_tile") if f in flags.split()]
    return (f"Measured on an {machine.get('cpu_model', 'unknown CPU')}, {machine.get('cpu_count', '?')} "
            f"cores ({isa}{', ' + ', '.join(extras) if extras else ''}; TensorFlow "
            f"{machine.get('tensorflow', '?')}, {machine.get('kernels', '')}).")


def results_block(project: Path) -> str:
    metrics = json.loads((project / config.EVAL_METRICS).read_text())
    params = config.load_project(project)
    lines = [BEGIN, machine_line(metrics.get("machine", {})), "",
             *report.results_table(metrics, params.dataset.references, "tutorial"), "",
             f"Champion: **{metrics['champion']}**. {metrics.get('arithmetic', '')}".rstrip(), END]
    return "\n".join(lines)


def runtime_block(project: Path) -> str:
    """Each stage's wall time and peak memory in the run, in pipeline order."""
    stages = ["fetch", "validate", "split",
              *(f"train-{m}" for m in config.model_order(project)), "evaluate"]
    rows, trainings = [], 0.0
    for stage in stages:
        rec = json.loads((project / "metrics" / "runtime" / f"{stage}.json").read_text())
        if stage.startswith("train-"):
            trainings += rec["wall_time_s"]
        name = stage.replace("train-", "train@")
        rows.append(f"| {name} | {rec['wall_time_s']:.1f} s | {rec['peak_rss_mib']:,.0f} MiB |")
    return "\n".join([RUNTIME_BEGIN, "| stage | wall time | peak memory |", "|---|---|---|",
                      *rows, f"| **the {len(stages) - 4} trainings** | **{trainings:.0f} s** | |",
                      RUNTIME_END])


def bench_block(project: Path) -> str:
    """The bench report without its title (the page has its own)."""
    body = (project / BENCH_REPORT).read_text().splitlines()
    return "\n".join([BENCH_BEGIN, *[line for line in body if not line.startswith("# ")],
                      BENCH_END]).replace("\n\n\n", "\n\n")


def updated(text: str, block: str, path: Path, begin: str = BEGIN, end: str = END) -> str:
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no {begin} ... {end} block to fill")
    return pattern.sub(lambda _: block, text, count=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rnn-tables", description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path("."), help="the checkout (default: here)")
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    ap.add_argument("--check", action="store_true", help="exit 1 if a table is out of date")
    args = ap.parse_args(argv)
    stale = 0
    for rel, block, begin, end in ((args.readme, results_block, BEGIN, END),
                                   (RESULTS_DOC, results_block, BEGIN, END),
                                   (RESULTS_DOC, runtime_block, RUNTIME_BEGIN, RUNTIME_END),
                                   (BENCH_DOC, bench_block, BENCH_BEGIN, BENCH_END)):
        path = args.project / rel
        text = path.read_text()
        new = updated(text, block(args.project), path, begin, end)
        if new == text:
            continue
        if args.check:
            print(f"{path}: the table between {begin} and {end} is out of date; "
                  "run `rnn-tables`", file=sys.stderr)
            stale = 1
        else:
            path.write_text(new)
            print(f"{path}: table updated")
    return stale


if __name__ == "__main__":
    sys.exit(main())
