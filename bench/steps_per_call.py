"""Training steps per call into TensorFlow: side by side in one process.

Usage: python bench/steps_per_call.py MODEL [--calls 1 110] [--steps 220] [--rounds 8]

Why one process: on a shared virtual machine two fresh processes minutes apart
differ by up to 1.3x, more than the effect measured here. This builds the
project's model (``train.compiled``) once per value of ``--calls`` (Keras'
``steps_per_execution``) and alternates their ``fit``s of ``--steps`` steps,
``--rounds`` times, so every value sees the same moments of the machine. Prints
images/s per round and the median. Uses data/split (run ``dvc repro split``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--calls", type=int, nargs="+", default=[1, 110])
    ap.add_argument("--steps", type=int, default=220)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()

    import keras
    import numpy as np

    from pipeline import config
    from pipeline.rnn import inputs
    from pipeline import runtime
    from pipeline.stages import train

    params = config.load(ROOT / "params.yaml")
    with np.load(ROOT / "data" / "split" / "train.npz") as z:
        x, y = z["x"], z["y"]
    nets = {n: train.compiled(args.model, params, 10 ** 6, steps_per_call=n) for n in args.calls}
    data = inputs.training(x, y, params.train)
    last = {}

    class LastStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            last["t"] = time.perf_counter()

    for net in nets.values():  # tracing and warm-up
        net.fit(data, epochs=1, steps_per_epoch=max(args.calls), verbose=0)
    rates = {n: [] for n in nets}
    for _ in range(args.rounds):
        for n, net in nets.items():
            start, before = time.perf_counter(), int(net.optimizer.iterations)
            net.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0, callbacks=[LastStep()])
            rates[n].append((int(net.optimizer.iterations) - before) * 100 / (last["t"] - start))
    m = runtime.machine()
    print(f"{args.model} on {m['cpu_model']}, {m['cpu_count']} cores; images/s per round")
    for n, r in rates.items():
        print(f"steps per call {n:>4}: median {statistics.median(r):,.0f}  "
              f"({' '.join(f'{v:,.0f}' for v in r)})")


if __name__ == "__main__":
    main()
