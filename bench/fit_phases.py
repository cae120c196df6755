"""Where one ``fit``'s wall time goes: before its first step, its steps, after its last.

Usage: python bench/fit_phases.py [MODEL] [STEPS] [REPEATS]   (default lstm 150 6)

Runs REPEATS fits of STEPS steps (the project's path, ``train.compiled`` and
``inputs.training``, random pixels) in one process after a warm-up fit and prints
each phase. This is how the wait for tf.data's autotune thread at the end of a
``fit`` was found (README, Training speed); with the wait back, some fits end
exactly 10.23 s after they began, whatever the model.
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

    name, steps, reps = (sys.argv[1:] + ["lstm", "150", "6"][len(sys.argv) - 1:])[:3]
    steps, reps = int(steps), int(reps)
    params = config.load(ROOT / "params.yaml")
    net = train.compiled(name, params, total_steps=10 ** 6)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, ((steps + 30) * 100, 28, 28), dtype="uint8")
    ds = inputs.training(x, rng.integers(0, 10, len(x)), params.train)
    t: dict = {}

    class Phases(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            t["begin"], t["steps"] = time.perf_counter(), []

        def on_train_batch_end(self, batch, logs=None):
            t["steps"].append(time.perf_counter())

    m = runtime.machine()
    print(f"{name}, {steps} steps: {m['cpu_model']}, {m['cpu_count']} cores, "
          f"TensorFlow {m['tensorflow']}")
    net.fit(ds, epochs=1, steps_per_epoch=30, verbose=0)
    for r in range(reps):
        start = time.perf_counter()
        net.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[Phases()])
        end = time.perf_counter()
        last = t["steps"][-1]
        print(f"fit {r}: {end - start:.2f} s = before {t['begin'] - start:.2f} + steps "
              f"{last - t['begin']:.2f} + after {end - last:.2f}; "
              f"{steps * 100 / (end - start):.0f} images/s", flush=True)


if __name__ == "__main__":
    main()
