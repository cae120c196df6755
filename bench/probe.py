"""Probes of one training knob, side by side in one process: where a maintainer
changing it looks first.

Usage: python bench/probe.py steps-per-call MODEL [--calls 1 110] [--steps 220] [--rounds 8]
       python bench/probe.py fit-phases [MODEL] [--steps 150] [--repeats 6]
       python bench/probe.py input-pipeline [--batches 1100] [--rounds 4]

Both build the project's model as the stage does (``train.compiled``,
``inputs.training``) on data/split when it exists, else random pixels, and
print to the terminal; neither writes a report.

- ``steps-per-call``: images/s per value of Keras' ``steps_per_execution``
  (``protocol.STEPS_PER_CALL`` caps the stage's), one model per value, their
  ``fit``s of ``--steps`` steps alternated ``--rounds`` times. One process,
  because on a shared virtual machine two fresh processes minutes apart differ by
  up to 1.3x, more than the effect.
- ``fit-phases``: where one ``fit``'s wall time goes: before its first step, its
  steps, after its last. This is how the wait for tf.data's autotune thread at
  the end of a ``fit`` was found (docs/training-speed.md); with that wait back,
  some fits end exactly 10.23 s after they began, whatever the model.
- ``input-pipeline``: CPU seconds of this process per ``--batches`` batches of
  ``inputs.training`` (image numbers shuffled, each batch gathered) against the
  pipeline it replaced (the images themselves shuffled and batched), alternated.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from checkout import ROOT, own_pipeline  # sibling in bench/


def _setup(model: str, steps: int):
    """params, the split's (or random) pixels and labels for ``steps`` steps and more."""
    import numpy as np

    from pipeline import config

    params = config.load_project(ROOT)
    split = ROOT / "data" / "split" / "train.npz"
    if split.exists():
        with np.load(split) as z:
            return params, z["x"], z["y"], "data/split"
    rng = np.random.default_rng(0)
    n = (steps + 30) * params.train.batch_size  # inputs.training repeats it endlessly
    return (params, rng.integers(0, 256, (n, 28, 28), dtype="uint8"),
            rng.integers(0, 10, n).astype("int64"), "random pixels")


def _header(what: str, source: str) -> None:
    from pipeline import runtime

    m = runtime.machine()
    print(f"{what} on {source}: {m['cpu_model']}, {m['cpu_count']} cores, {m['kernels']}, "
          f"TensorFlow {m['tensorflow']}", flush=True)


def steps_per_call(args) -> None:
    import keras

    from pipeline.rnn import inputs
    from pipeline.stages import train

    params, x, y, source = _setup(args.model, args.steps)
    batch = params.train.batch_size
    nets = {n: train.compiled(args.model, params, 10 ** 6, steps_per_call=n) for n in args.calls}
    data = inputs.training(x, y, params.train)
    last = {}

    class LastStep(keras.callbacks.Callback):  # the input pipeline's teardown is not a step
        def on_train_batch_end(self, batch, logs=None):
            last["t"] = time.perf_counter()

    for net in nets.values():  # tracing and warm-up
        net.fit(data, epochs=1, steps_per_epoch=max(args.calls), verbose=0)
    rates: dict = {n: [] for n in nets}
    for _ in range(args.rounds):
        for n, net in nets.items():
            start, before = time.perf_counter(), int(net.optimizer.iterations)
            net.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0, callbacks=[LastStep()])
            rates[n].append((int(net.optimizer.iterations) - before) * batch / (last["t"] - start))
    _header(f"{args.model}, images/s per round", source)
    for n, r in rates.items():
        print(f"steps per call {n:>4}: median {statistics.median(r):,.0f}  "
              f"({' '.join(f'{v:,.0f}' for v in r)})")


def fit_phases(args) -> None:
    import keras

    from pipeline.rnn import inputs
    from pipeline.stages import train

    params, x, y, source = _setup(args.model, args.steps)
    net = train.compiled(args.model, params, total_steps=10 ** 6)
    ds = inputs.training(x, y, params.train)
    t: dict = {}

    class Phases(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            t["begin"], t["steps"] = time.perf_counter(), []

        def on_train_batch_end(self, batch, logs=None):
            t["steps"].append(time.perf_counter())

    _header(f"{args.model}, {args.steps} steps per fit", source)
    net.fit(ds, epochs=1, steps_per_epoch=30, verbose=0)  # tracing and warm-up
    for r in range(args.repeats):
        start = time.perf_counter()
        net.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0, callbacks=[Phases()])
        end = time.perf_counter()
        last = t["steps"][-1]
        print(f"fit {r}: {end - start:.2f} s = before {t['begin'] - start:.2f} + steps "
              f"{last - t['begin']:.2f} + after {end - last:.2f}; "
              f"{args.steps * params.train.batch_size / (end - start):.0f} images/s", flush=True)


def input_pipeline(args) -> None:
    import tensorflow as tf

    from pipeline.rnn import inputs

    params, x, y, source = _setup("rnn", args.batches)
    cfg = params.train
    _header("input-pipeline", source)

    def images_shuffled():  # the pipeline before f0996df
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        ds = ds.shuffle(len(x), seed=cfg.seed, reshuffle_each_iteration=True)
        ds = ds.batch(cfg.batch_size).repeat().map(lambda a, b: (tf.cast(a, tf.float32), b))
        return inputs.no_autotune(ds.prefetch(2))

    plain = dataclasses.replace(cfg, augment=type(cfg.augment)())  # the pipelines alone
    paths = {"numbers shuffled": lambda: inputs.training(x, y, plain),
             "images shuffled": images_shuffled}
    seconds = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, make in paths.items():
            batches = iter(make())
            next(batches)  # the shuffle buffer filled outside the count
            start = time.process_time()
            for _ in range(args.batches):
                next(batches)
            seconds[name].append(time.process_time() - start)
    for name, s in seconds.items():
        print(f"{name}: {statistics.median(s):.2f} s of CPU per {args.batches} batches "
              f"(median of {args.rounds}; {min(s):.2f}-{max(s):.2f})", flush=True)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="probe", required=True)
    calls = sub.add_parser("steps-per-call", help="images/s per value of steps_per_execution")
    calls.add_argument("model")
    calls.add_argument("--calls", type=int, nargs="+", default=[1, 110])
    calls.add_argument("--steps", type=int, default=220)
    calls.add_argument("--rounds", type=int, default=8)
    calls.set_defaults(run=steps_per_call)
    phases = sub.add_parser("fit-phases", help="a fit's time before, during and after its steps")
    phases.add_argument("model", nargs="?", default="lstm")
    phases.add_argument("--steps", type=int, default=150)
    phases.add_argument("--repeats", type=int, default=6)
    phases.set_defaults(run=fit_phases)
    feed = sub.add_parser("input-pipeline", help="CPU per batch of the training input pipeline")
    feed.add_argument("--batches", type=int, default=1100)
    feed.add_argument("--rounds", type=int, default=4)
    feed.set_defaults(run=input_pipeline)
    return ap


def main() -> None:
    args = parser().parse_args()
    own_pipeline()
    args.run(args)


if __name__ == "__main__":
    main()
