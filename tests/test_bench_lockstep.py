"""bench/lockstep.py: the paths of a model take turns, one block at a time, so that
the machine's drifts hit them alike; a worker that dies stops the bench with its
own words; the clock times a window in blocks, pauses outside it, and a path's
speed is its fastest block."""

import sys

import pytest

from conftest import ROOT, bench_module

lockstep = bench_module("lockstep")
checkout, _, timing = bench_module("checkout"), bench_module("speed_table"), bench_module("timing")
bench_module("keras_paths")  # train_speed's other sibling, in import order
bench = bench_module("train_speed")

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
    seconds = [b["seconds"] for b in got["a"]["blocks"]]
    assert lockstep.whole(seconds, block=10) == pytest.approx(4 * 10 * 100 / 0.2)


def test_a_worker_that_dies_stops_the_bench_with_its_error(tmp_path):
    (tmp_path / "w.py").write_text(WORKER)
    (tmp_path / "bad.py").write_text("raise SystemExit('no op built here')\n")
    workers = {"good": ([sys.executable, str(tmp_path / "w.py")], {}),
               "bad": ([sys.executable, str(tmp_path / "bad.py")], {})}
    with pytest.raises(SystemExit, match="(?s)bad stopped.*no op built here"):
        session = lockstep.Session(workers)
        session.run(2)
    assert all(w.proc.poll() is not None for w in session.workers)  # none left waiting


def test_a_paths_speed_is_its_fastest_block_and_its_window_is_shown_too():
    """An interrupted block (3 s where the others take 2) does not move a path's
    speed; the whole windows' ratios, interruptions included, are kept beside it."""
    row = {"train_mflop_per_image": 10.0, "steps": 220,
           "reference": {"blocks": [[2.0, 3.0], [2.2, 2.2]]},
           "project": {"blocks": [[1.0, 1.5], [1.1, 1.0]]}}
    bench.derive(row, 110)
    assert row["reference"]["rounds"] == pytest.approx([5500, 5000])  # 11,000 images / 2 s
    assert row["reference"]["ratio_rounds"] == pytest.approx([2.0, 2.2])
    assert row["reference"]["window_ratio_rounds"] == pytest.approx([5 / 2.5, 4.4 / 2.1])
    assert row["project"]["images_per_s"] == pytest.approx(11000)


def test_the_clock_can_time_its_window_in_blocks_taking_turns():
    """With a block, the window is several blocks; ``pace`` is called after the
    warm-up and after each block, off the clock (a pause there is not timed)."""
    import time

    import keras
    import numpy as np

    calls = []

    def pace(payload):
        calls.append(payload)
        time.sleep(0.2)  # another path's turn
        return "go"
    x, y = np.zeros((80, 3), "float32"), np.zeros(80, "int64")
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    net.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                steps_per_execution=5)
    clock = timing.Clock(5, 15, block=5, pace=pace)
    start = time.perf_counter()
    net.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[clock.callback])
    took = time.perf_counter() - start
    assert calls[0] is None and [c["seconds"] for c in calls[1:]] == clock.blocks
    assert len(clock.blocks) == 3 and clock.seconds() == sum(clock.blocks)
    assert clock.seconds() < took - 0.8  # the four pauses are outside the window
