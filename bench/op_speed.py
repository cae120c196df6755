"""The C++ op against the op of another commit, side by side in one process.

Usage: python bench/op_speed.py --against REV [--cells lstm gru relu] [--rounds 10]
                                [--calls 100] [--out reports/bench-op]

Why: on this project's VMs the speed of the machine drifts by more than a change
to the op moves it, between processes minutes apart and within one. So both ops
load into one process (REV's sources from git: ``pipeline/rnn/native/``, or
``pipeline/native/`` for a commit of the flat layout; its ops renamed
``...Before``, built with the same command as ``pipeline.rnn.native``) and take turns, round by
round, on the same inputs: two stacked layers of a batch part (50 x 28 steps,
28 then 100 features, 100 units), forward and backward, on one thread, bf16
products where the build has them. Reports each op's median time per call, the
ratio per round, and whether the two ops' outputs are bit-identical (if not, the
numerics changed: a new full run is due).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from checkout import ROOT, command, own_pipeline  # siblings in bench/
import speed_table  # its save()

GATES = {"relu": 1, "tanh": 1, "lstm": 4, "gru": 3}
# Where the op's sources live: pipeline/rnn/native/ since the packages by job,
# pipeline/native/ in the flat layout before them.
SOURCE_DIRS = ("pipeline/rnn/native", "pipeline/native")


def _git(*args: str, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)


def before_sources(rev: str, root: Path = ROOT) -> dict[str, str]:
    """REV's op sources (``fused_rnn.cc`` and every header beside it), ops renamed
    ``...Before`` so that both ops load into one process."""
    for folder in SOURCE_DIRS:
        listed = _git("ls-tree", "--name-only", f"{rev}:{folder}", root=root)
        names = [n for n in listed.stdout.split() if n.endswith((".cc", ".h"))]
        if not listed.returncode and "fused_rnn.cc" in names:
            break
    else:
        raise SystemExit(f"op_speed: {rev} has no fused_rnn.cc in {' or '.join(SOURCE_DIRS)}")
    sources = {}
    for name in names:
        text = _git("show", f"{rev}:{folder}/{name}", root=root).stdout
        for op in ("FusedRnnForward", "FusedRnnBackward", "fused_rnn_has_bf16"):
            text = text.replace(op, op + ("_before" if op.islower() else "Before"))
        sources[name] = text
    return sources


def build_before(rev: str, out_dir: Path) -> Path:
    """REV's op with its ops renamed, built as pipeline.rnn.native builds this checkout's."""
    import os

    from pipeline.rnn import native

    for name, text in before_sources(rev).items():
        (out_dir / name).write_text(text)
    lib = out_dir / "before.so"
    cxx = os.environ.get("CXX", "g++")  # as pipeline.rnn.native builds
    done = subprocess.run(native._command(cxx, out_dir / "fused_rnn.cc", lib),
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"op_speed: building {rev}'s op failed:\n{done.stderr[-2000:]}")
    return lib


def calls(ops: dict, cell: str, bf16: bool):
    """One tf.function per op: two layers, forward and backward, on fixed inputs."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    g, layers = GATES[cell], []
    for f in (28, 100):
        mk = lambda *s: tf.constant((0.1 * rng.standard_normal(s)).astype("float32"))  # noqa: E731
        layers.append((10 * mk(50, 28, f), mk(f, g * 100), mk(g * 100), mk(100, g * 100),
                       mk(g * 100 if cell == "gru" else 0)))

    def make(forward, backward):
        @tf.function
        def step():
            out = []
            for x, w, b, u, b_rec in layers:
                hs, saved = forward(x, w, b, u, b_rec, cell=cell, bf16=bf16)
                out += [hs, *backward(hs * 0.01, x, w, hs, saved, u, cell=cell, bf16=bf16)]
            return out
        return step

    return {k: make(*fns) for k, fns in ops.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", required=True, metavar="REV")
    ap.add_argument("--cells", nargs="*", default=["lstm", "gru", "relu"], choices=list(GATES))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=100, help="calls per op and round")
    ap.add_argument("--out", default="reports/bench-op")
    args = ap.parse_args()

    own_pipeline()  # "now" is this checkout's op, not the editable install's
    from pipeline.rnn import heap
    from pipeline.rnn import native
    from pipeline import runtime
    heap.keep_freed_memory()  # as train.compiled does
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    now = native.load()
    if now is None:
        raise SystemExit(f"op_speed: this checkout's op did not build: {native.why_not()}")
    bf16 = native.bf16_supported()
    with tempfile.TemporaryDirectory() as tmp:
        before = tf.load_op_library(str(build_before(args.against, Path(tmp))))
    ops = {"before": (before.fused_rnn_forward_before, before.fused_rnn_backward_before),
           "now": (now.fused_rnn_forward, now.fused_rnn_backward)}
    result = {"machine": runtime.machine(), "against": args.against, "bf16": bf16,
              "command": command("op_speed.py"), "cells": {}}
    for cell in args.cells:
        fns = calls(ops, cell, bf16)
        first = {k: [t.numpy() for t in f()] for k, f in fns.items()}
        same = all(np.array_equal(a, b) for a, b in zip(first["before"], first["now"]))
        times: dict = {k: [] for k in fns}
        for rnd in range(args.rounds):  # alternate who goes first
            for k in (("before", "now") if rnd % 2 == 0 else ("now", "before")):
                start = time.perf_counter()
                for _ in range(args.calls):
                    fns[k]()
                times[k].append((time.perf_counter() - start) / args.calls * 1e6)
        ratios = [n / b for b, n in zip(times["before"], times["now"])]
        result["cells"][cell] = {"us": times, "ratios": ratios, "bit_identical": same}
        print(f"{cell}: now/before {statistics.median(ratios):.3f}", flush=True)
    write(result, Path(args.out))


def write(result: dict, out: Path) -> None:
    m = result["machine"]
    lines = ["# The C++ op against an older commit's, in one process", "",
             f"Machine: **{m['cpu_model']}**, {m['cpu_count']} cores, ISA: {m['isa_flags']}; "
             f"TensorFlow {m['tensorflow']}. Products in {'bf16' if result['bf16'] else 'fp32'}. "
             f"Command: `{result['command']}`.", "",
             "Two stacked layers of one batch part (50 x 28 steps, 28 then 100 features, "
             "100 units), forward and backward, one thread; each round times each op once, "
             "in alternating order.", "",
             f"| cell | before ({result['against']}) µs/call | now µs/call | now / before, "
             "median of rounds (range) | outputs bit-identical |", "|---|---|---|---|---|"]
    for cell, r in result["cells"].items():
        b, n = (statistics.median(r["us"][k]) for k in ("before", "now"))
        rs = r["ratios"]
        lines.append(f"| {cell} | {b:,.0f} | {n:,.0f} | {statistics.median(rs):.3f} "
                     f"({min(rs):.2f}-{max(rs):.2f}) | {'yes' if r['bit_identical'] else 'no'} |")
    speed_table.save(out, lines, result)


if __name__ == "__main__":
    main()
