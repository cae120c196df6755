"""How bench/train_speed.py times every path alike, and the machine's peak.

Why its own module: the clock is what makes the project's and the baselines'
numbers comparable, so it is one piece of code that every path goes through
(tests/test_bench.py checks it at one and at several steps per call), apart
from what is measured.
"""

from __future__ import annotations

import time


class Clock:
    """Start and stop at the end of the steps ``warmup`` and ``warmup + steps`` of
    one ``fit``: the same two points for every path, after tracing, compilation and
    the conversion of the input (which ``fit`` does before its first step), and
    before the input pipeline's teardown (tf.data's autotune thread can hold the
    end of a plain ``fit`` for seconds). Keras calls ``on_train_batch_end`` with the
    index of the last step of each call, so with several steps per call both
    points must fall at the end of a call.

    With ``block``, the window is timed in blocks of that many steps and ``pace``
    (bench/lockstep.py's) is called at each block's end and after the warm-up,
    outside the clock: the process waits there while the other paths take their
    turn. ``seconds`` is then the sum of the blocks."""

    def __init__(self, warmup: int, steps: int, block: int | None = None, pace=None):
        import keras

        clock, block = self, block or steps
        self.marks: dict = {}
        self.blocks: list[float] = []

        class _Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                done = batch + 1  # steps finished in this fit
                if done < warmup or done > warmup + steps or (done - warmup) % block:
                    return
                now = time.perf_counter()
                clock.marks[done] = now
                if done > warmup:
                    clock.blocks.append(now - clock.start)
                if pace:
                    pace(None if done == warmup else {"seconds": clock.blocks[-1]})
                clock.start = time.perf_counter()
        self.callback, self.warmup, self.steps, self.block = _Callback(), warmup, steps, block

    def seconds(self) -> float:
        ends = {self.warmup + self.block * (i + 1) for i in range(self.steps // self.block)}
        missing = ({self.warmup, self.warmup + self.steps} | ends) - set(self.marks)
        if missing or self.steps % self.block:
            raise SystemExit(f"bench: no call ended at step(s) {sorted(missing)}: "
                             "--warmup and --steps must be multiples of the steps per call")
        return sum(self.blocks)


def peak(kind: str, n: int = 2048, repeats: int = 20) -> float:
    """Matrix-multiply GFLOP/s, best of ``repeats`` n x n products: ``numpy`` and
    ``tensorflow`` in fp32, ``bf16`` TensorFlow's in bfloat16 (oneDNN picks the
    CPU's fastest bf16 instructions, AMX where there is one)."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n)).astype("float32")
    if kind == "numpy":
        mm = lambda: a @ a  # noqa: E731
    else:
        import tensorflow as tf

        t = tf.constant(a, tf.bfloat16 if kind == "bf16" else tf.float32)
        mm = lambda: tf.matmul(t, t).numpy()  # noqa: E731
    mm()
    best = min(_timed(mm) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def serve_peak(kinds: list[str], repeats: int = 5) -> dict:
    """A lock-step worker (bench/lockstep.py) of the machine's peak: at each turn the
    best of ``repeats`` 2048 x 2048 products of every kind, so that a share of the
    peak is against the peak measured among the same blocks as the training."""
    from lockstep import pace

    word = pace(None) if all(peak(kind, repeats=1) for kind in kinds) else "end"  # warm
    while word == "go":
        word = pace({"gflops": {kind: peak(kind, repeats=repeats) for kind in kinds}})
    return {"kinds": kinds}
