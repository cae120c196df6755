"""The README's results table, generated from the committed run so it cannot drift.

``rnn-tables`` (``python -m pipeline.review.tables``) rewrites what stands
between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in README.md from
``metrics/evaluate.json`` and the dataset's references in params.yaml, with the
machine that measured it; ``--check`` only says whether the README is current
(tests/test_tables.py runs it, so a hand edit or a new run without
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


def updated(text: str, block: str, path: Path) -> str:
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no {BEGIN} ... {END} block to fill")
    return pattern.sub(lambda _: block, text, count=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rnn-tables", description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path("."), help="the checkout (default: here)")
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    ap.add_argument("--check", action="store_true", help="exit 1 if the README is out of date")
    args = ap.parse_args(argv)
    readme = args.project / args.readme
    text = readme.read_text()
    new = updated(text, results_block(args.project), readme)
    if args.check:
        if new != text:
            print(f"{readme}: results table is out of date; run `rnn-tables`", file=sys.stderr)
            return 1
        return 0
    if new != text:
        readme.write_text(new)
        print(f"{readme}: results table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
