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
    points must fall at the end of a call."""

    def __init__(self, warmup: int, steps: int):
        import keras

        clock = self
        self.marks: dict = {}

        class _Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                done = batch + 1  # steps finished in this fit
                if done in (warmup, warmup + steps):
                    clock.marks[done] = time.perf_counter()
        self.callback, self.warmup, self.steps = _Callback(), warmup, steps

    def seconds(self) -> float:
        missing = {self.warmup, self.warmup + self.steps} - set(self.marks)
        if missing:
            raise SystemExit(f"bench: no call ended at step(s) {sorted(missing)}: "
                             "--warmup and --steps must be multiples of the steps per call")
        return self.marks[self.warmup + self.steps] - self.marks[self.warmup]


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
