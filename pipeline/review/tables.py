"""The tables the docs quote, generated from committed results so they cannot drift.

``rnn-tables`` (``python -m pipeline.review.tables``) rewrites what stands
between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in README.md from
``metrics/evaluate.json`` and the dataset's references in params.yaml, with the
machine that measured it (the same block in docs/results.md, with the run's
per-stage time and memory from ``metrics/runtime/`` between
``<!-- runtime:begin -->`` and ``<!-- runtime:end -->``), and, in any page of
docs/, what stands between ``<!-- report: reports/NAME.md -->`` and
``<!-- /report -->`` from that committed report (a bench's, which names its
machine and command), without its title; ``--check`` only says whether they are
current (tests/test_tables.py runs it, so a hand edit or a new run without
regenerating fails the suite).
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
RUNTIME_BEGIN, RUNTIME_END = "<!-- runtime:begin -->", "<!-- runtime:end -->"
RESULTS_DOC = Path("docs/results.md")
REPORT = re.compile(r"(<!-- report: (reports/[\w./-]+\.md) -->\n).*?(<!-- /report -->)", re.S)


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


def with_reports(project: Path, text: str) -> str:
    """``text`` with every ``<!-- report: ... -->`` block refilled from its report,
    the report's title left out (the page has its own headings)."""
    def fill(match):
        source = project / match.group(2)
        if not source.exists():
            raise SystemExit(f"{match.group(2)}: quoted by a page of docs/ but missing")
        body = [ln for ln in source.read_text().splitlines() if not ln.startswith("# ")]
        while body and not body[0].strip():
            body.pop(0)
        return match.group(1) + "\n" + "\n".join(body).rstrip() + "\n" + match.group(3)
    return REPORT.sub(fill, text)


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
    stale, pages = 0, {}
    for rel, block, begin, end in ((args.readme, results_block, BEGIN, END),
                                   (RESULTS_DOC, results_block, BEGIN, END),
                                   (RESULTS_DOC, runtime_block, RUNTIME_BEGIN, RUNTIME_END)):
        path = args.project / rel
        pages[path] = updated(pages.get(path) or path.read_text(), block(args.project), path,
                              begin, end)
    for path in sorted((args.project / "docs").glob("*.md")):
        pages[path] = with_reports(args.project, pages.get(path) or path.read_text())
    for path, new in pages.items():
        if new == path.read_text():
            continue
        if args.check:
            print(f"{path}: a generated table (results, runtime or a quoted report) is "
                  "out of date; run `rnn-tables`", file=sys.stderr)
            stale = 1
        else:
            path.write_text(new)
            print(f"{path}: table updated")
    return stale


if __name__ == "__main__":
    sys.exit(main())
