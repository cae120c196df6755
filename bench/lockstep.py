"""Lock-step timing: every path of a model in its own process, taking turns block by block.

Why: this VM's speed drifts by 5-20% over minutes, more than the effects measured.
Timed one after another, in windows minutes apart, two runs of the bench put
the same ratio 11% apart (reports/bench-agreement.md before this module). Here
the paths of a model (plain Keras, the project, PyTorch, the matmul peak) start
together, each warms up in its own process, and then the parent lets one run a
block of steps at a time while the others wait on a pipe, rotating the order
each cycle. A drift longer than a cycle (a few seconds) slows every path alike,
so it cancels from the ratios and from the shares of the peak, and the window
of each path is the sum of its blocks: the same steps as one long window, the
clock never running while another path works.

The worker's side is ``pace``: report the block just timed, then wait for the
parent's word. The parent's side is ``Session``. Plain Python and the standard
library only: PyTorch's venv imports this module too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

TAG = "@lockstep "  # a worker's message to the parent: one line on stdout
SETTLE_S = 0.2  # between two blocks: OpenMP's and Eigen's spinning threads go to sleep


def pace(payload: dict | None = None) -> str:
    """Worker side: tell the parent a block is done (``payload``, e.g. its seconds;
    None after the warm-up) and wait for its word: ``go`` (time the next block) or
    ``end`` (all blocks done)."""
    print(TAG + json.dumps(payload), flush=True)
    word = sys.stdin.readline().strip()
    if word not in ("go", "end"):
        raise SystemExit("lockstep: the parent is gone")
    return word


class Worker:
    """One path's process, started at once; its stderr kept in a file (TensorFlow
    logs there, and a full pipe would stop it)."""

    def __init__(self, name: str, argv: list[str], **popen):
        self.name, self.err = name, tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True, **popen)
        self.blocks: list[dict] = []

    def message(self) -> dict | None:
        """The worker's next message; its last words if it died instead."""
        for line in self.proc.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG):])
        self.proc.wait()
        self.err.seek(0)
        raise SystemExit(f"bench: {self.name} stopped (exit {self.proc.returncode}):\n"
                         f"{self.err.read()[-2000:]}")

    def say(self, word: str) -> None:
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def result(self) -> dict:
        """After ``end``: the JSON line the worker prints last."""
        out, _ = self.proc.communicate()
        if self.proc.returncode:
            self.err.seek(0)
            raise SystemExit(f"bench: {self.name} failed:\n{self.err.read()[-2000:]}")
        return json.loads(out.strip().splitlines()[-1])


class Session:
    """Start every worker, wait for each one's warm-up, then ``cycles`` cycles in
    which each times one block in turn (the first of cycle i is worker i mod n)."""

    def __init__(self, workers: dict[str, tuple[list[str], dict]]):
        self.workers = [Worker(name, argv, **popen) for name, (argv, popen) in workers.items()]

    def run(self, cycles: int, progress=None) -> dict[str, dict]:
        try:
            return self._run(cycles, progress)
        except BaseException:  # a worker died, or Ctrl-C: leave none waiting on its pipe
            for w in self.workers:
                w.proc.kill()
                w.proc.wait()
            raise

    def _run(self, cycles: int, progress) -> dict[str, dict]:
        for w in self.workers:
            w.message()  # warmed up
        for i in range(cycles):
            n = len(self.workers)
            for w in self.workers[i % n:] + self.workers[:i % n]:
                time.sleep(SETTLE_S)
                w.say("go")
                w.blocks.append(w.message())
            if progress:
                progress(i + 1, cycles)
        for w in self.workers:
            w.say("end")
        return {w.name: {**w.result(), "blocks": w.blocks} for w in self.workers}


def undisturbed(seconds: list[float], block: int, batch: int = 100) -> float:
    """Images/s of a path's fastest block: its speed when nothing interrupted it. On
    a shared VM an interruption (another tenant, a vCPU descheduled) only ever adds
    time, and it hits the paths unequally (plain Keras' and PyTorch's many small
    multi-threaded ops far more than the op), so the fastest block is the figure
    that repeats from round to round (timeit's documentation argues the same for
    its minimum)."""
    return block * batch / min(seconds)


def whole(seconds: list[float], block: int, batch: int = 100) -> float:
    """Images/s over every block: the window, interruptions included."""
    return len(seconds) * block * batch / sum(seconds)


def block_peak(got: dict, kind: str) -> float:
    """The matmul peak of a session: its fastest block's, as a path's speed is its
    fastest block's (an interruption only slows a product down)."""
    return max(b["gflops"][kind] for b in got["blocks"])
