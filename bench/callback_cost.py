"""What Keras' TerminateOnNaN costs a training: fits with and without it, alternated.

Usage: python bench/callback_cost.py [MODEL] [STEPS] [ROUNDS]   (default lstm 150 3)

TerminateOnNaN reads every step's loss, so Keras must wait for each step's result
before it queues the next one. ``pipeline/stages/train.py`` used to replace it with a
once-per-check test because it seemed to cost a tenth of the step time; that was
tf.data's autotune wait. This measures the callback alone: the project's path
(``train.compiled``, ``inputs.training``, random pixels), one process, a warm-up fit,
then ROUNDS pairs of STEPS-step fits, whole ``fit`` timed (no per-step hook of ours).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import keras
    import numpy as np

    from pipeline import config
    from pipeline.rnn import inputs
    from pipeline import runtime
    from pipeline.stages import train

    name, steps, rounds = (sys.argv[1:] + ["lstm", "150", "3"][len(sys.argv) - 1:])[:3]
    steps, rounds = int(steps), int(rounds)
    params = config.load(ROOT / "params.yaml")
    net = train.compiled(name, params, total_steps=10 ** 6)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, ((steps + 30) * 100, 28, 28), dtype="uint8")
    ds = inputs.training(x, rng.integers(0, 10, len(x)), params.train)
    m = runtime.machine()
    print(f"{name}, {steps} steps of batch {params.train.batch_size}: {m['cpu_model']}, "
          f"{m['cpu_count']} cores, {m['kernels']}, TensorFlow {m['tensorflow']}")
    net.fit(ds, epochs=1, steps_per_epoch=30, verbose=0)
    rates: dict = {"without": [], "TerminateOnNaN": []}
    for _ in range(rounds):
        for label, callbacks in (("without", []), ("TerminateOnNaN", [keras.callbacks.TerminateOnNaN()])):
            start = time.perf_counter()
            net.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=callbacks)
            rates[label].append(steps * params.train.batch_size / (time.perf_counter() - start))
    for label, got in rates.items():
        print(f"{label:15s} images/s: " + ", ".join(f"{r:,.0f}" for r in got)
              + f" (median {sorted(got)[len(got) // 2]:,.0f})")


if __name__ == "__main__":
    main()
