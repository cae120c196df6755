"""The fault table: each fault test writes one row of what it did and saw.

Why: a claim like "a worker killed mid-training loses nothing" is only worth
what the run behind it measured. Every fault test (tests/test_cluster.py,
tests/test_publish_race.py) calls ``record`` once its assertions have passed,
so a row exists only for a fault that was survived; with ``FAULTS_LOG`` set
the rows go to that JSON-lines file. ``make cluster-faults`` runs those tests
with it and then ``python tests/fault_table.py LOG OUT.md`` turns the rows
into the committed table (reports/cluster-faults.md), with the machine, the
commit and the command that produced it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

LOG_ENV = "FAULTS_LOG"
COLUMNS = ("fault", "done", "run", "duration_s", "tries", "retried", "lost", "test")
HEADERS = ("fault", "what was done", "run", "run took", "tries per task", "what was retried",
           "what was lost")


def record(fault: str, done: str, run: str, duration_s: float | None, tries: dict[str, int],
           retried: str, lost: str, test: str) -> dict:
    """One row; appended to ``$FAULTS_LOG`` when it is set. Returns the row."""
    row = dict(zip(COLUMNS, (fault, done, run, duration_s and round(duration_s, 1), tries,
                             retried, lost, test)))
    row["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    row["load"] = round(os.getloadavg()[1], 1)   # 5-minute load: other work skews the times
    if os.environ.get(LOG_ENV):
        with open(os.environ[LOG_ENV], "a") as log:
            log.write(json.dumps(row) + "\n")
    return row


def show_tries(tries: dict[str, int]) -> str:
    """``{"fetch": 1, "train[gru]": 2}`` -> ``train[gru] 2, every other task 1``."""
    more = {task: n for task, n in tries.items() if n != 1}
    ones = len(tries) - len(more)
    shown = [f"{task} {n}" for task, n in more.items()]
    if ones:
        shown.append("every other task 1" if more else "every task 1")
    return ", ".join(shown) or "-"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def render(rows: list[dict], command: str) -> str:
    root = Path(__file__).resolve().parent.parent
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                            capture_output=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                           text=True, capture_output=True).stdout.strip()
    lines = [
        "# Faults the cluster survived",
        "",
        "Machine-written by `tests/fault_table.py` from the rows the fault tests recorded "
        "(docs/airflow.md, \"Faults\"). A row exists only for a test whose assertions passed.",
        "",
        f"- machine: {machine()}",
        f"- commit: {commit}{' with uncommitted changes' if dirty else ''}",
        f"- command: `{command}`",
        f"- finished: {max((r['at'] for r in rows), default='-')} (UTC)",
        f"- load average (5 min) when each row was written: "
        f"{', '.join(str(r['load']) for r in rows if 'load' in r) or 'not recorded'}",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    for row in rows:
        took = f"{row['duration_s']:.0f} s" if row.get("duration_s") else "-"
        cells = (row["fault"], row["done"], f"`{row['run']}`", took, show_tries(row["tries"]),
                 row["retried"], row["lost"])
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    tests = sorted({row["test"] for row in rows})
    lines += ["", "Tests: " + ", ".join(f"`{t}`" for t in tests) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python tests/fault_table.py ROWS.jsonl OUT.md 'COMMAND'", file=sys.stderr)
        return 2
    log, out, command = Path(argv[0]), Path(argv[1]), argv[2]
    try:
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        print(f"fault_table: cannot read {log}: {exc}", file=sys.stderr)
        return 1
    if not rows:
        print(f"fault_table: {log} holds no row: did the fault tests run?", file=sys.stderr)
        return 1
    out.write_text(render(rows, command))
    print(f"fault_table: {len(rows)} rows -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
