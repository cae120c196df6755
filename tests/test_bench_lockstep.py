"""bench/lockstep.py: the paths of a model take turns, one block at a time, so that
the machine's drifts hit them alike; a worker that dies stops the bench with its
own words."""

import sys

import pytest

from conftest import ROOT, bench_module

lockstep = bench_module("lockstep")

WORKER = f"""
import sys, time
sys.path.insert(0, {str(ROOT / 'bench')!r})
from lockstep import pace
word = pace(None)
while word == "go":
    start = time.time()
    time.sleep(0.05)
    word = pace({{"seconds": 0.05, "start": start, "end": time.time()}})
print('{{"done": true}}')
"""


def test_the_paths_take_turns_one_block_at_a_time(tmp_path):
    (tmp_path / "w.py").write_text(WORKER)
    workers = {n: ([sys.executable, str(tmp_path / "w.py")], {}) for n in "abc"}
    got = lockstep.Session(workers).run(4)
    spans = sorted((b["start"], b["end"], n) for n, r in got.items() for b in r["blocks"])
    assert all(end <= nxt for (_, end, _), (nxt, _, _) in zip(spans, spans[1:]))  # never two
    assert "".join(n for _, _, n in spans) == "abc" "bca" "cab" "abc"  # first place rotates
    assert all(r["done"] and len(r["blocks"]) == 4 for r in got.values())
    assert lockstep.rate(got["a"], steps=10) == pytest.approx(10 * 100 / 0.2)


def test_a_worker_that_dies_stops_the_bench_with_its_error(tmp_path):
    (tmp_path / "w.py").write_text(WORKER)
    (tmp_path / "bad.py").write_text("raise SystemExit('no op built here')\n")
    workers = {"good": ([sys.executable, str(tmp_path / "w.py")], {}),
               "bad": ([sys.executable, str(tmp_path / "bad.py")], {})}
    with pytest.raises(SystemExit, match="(?s)bad stopped.*no op built here"):
        session = lockstep.Session(workers)
        session.run(2)
    assert all(w.proc.poll() is not None for w in session.workers)  # none left waiting
