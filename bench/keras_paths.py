"""The Keras paths that bench/train_speed.py times: plain Keras, the project's, and variants.

Why its own module: it is what runs inside each measuring process (a lock-step
worker, bench/lockstep.py), as torch_rnns.py is for PyTorch; train_speed.py
decides what to measure and writes the tables. Run by train_speed.py
(``--measure IMPL MODEL``), never on its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from checkout import ROOT  # siblings in bench/
from timing import Clock

SPLIT = ROOT / "data" / "split" / "train.npz"  # every path's images, where it exists


def _data(n: int):
    import numpy as np

    split = SPLIT
    if split.exists():
        with np.load(split) as z:  # repeated where the window is longer than an epoch
            take = np.arange(n) % len(z["y"])
            return z["x"][take], z["y"][take], "data/split (MNIST)"
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, 28, 28), dtype="uint8"),
            rng.integers(0, 10, n).astype("int64"), "random pixels")


def _modules():
    """The measured checkout's modules, under their names before and after the
    move into subpackages, so that ``--against`` an older checkout is timed by
    this script's clock, not by that checkout's own bench."""
    import importlib

    def one(*names):
        for n in names:
            try:
                return importlib.import_module(n)
            except ImportError:
                continue
        raise SystemExit(f"bench: none of {names} importable")
    return {n: one(f"pipeline.{pkg}.{n}", f"pipeline.{n}") for n, pkg in
            (("inputs", "rnn"), ("model", "rnn"), ("protocol", "rnn"), ("heap", "rnn"),
             ("train", "stages"))}


def measure_tf(impl: str, name: str, steps: int, warmup: int, code: Path = ROOT,
               block: int | None = None, pace=None) -> dict:
    """One measurement in this process: images/s of ``impl`` training ``name``
    over the steps ``warmup + 1 .. warmup + steps`` of a single ``fit`` (``Clock``),
    in blocks of ``block`` steps with ``pace`` between them where given (a lock-step
    worker). ``code`` is the checkout whose pipeline and params.yaml are measured."""
    import keras

    from pipeline import config

    m = _modules()
    params = (config.load_project(code) if hasattr(config, "load_project")  # since the move
              else config.load())  # an older checkout's config reads its own params
    x, y, source = _data((steps + warmup) * 100)
    clock = Clock(warmup, steps, block, pace)
    if impl in ("reference", "xla", "bf16"):  # stock layers, plain fit on NumPy
        if impl == "bf16":
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        net = m["model"].build(params.models[name], kernel="keras")
        net.compile(optimizer=keras.optimizers.Adam(0.001),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"], jit_compile=impl == "xla")
        net.fit(x.astype("float32"), y, batch_size=100, epochs=1, verbose=0,
                callbacks=[clock.callback])
        per_call = 1
    else:  # project (params.yaml as it is), fused (TensorFlow's ops), fp32 products,
        # whole batches (one part) or glibc
        if impl == "glibc":  # glibc's malloc as it comes: train.compiled's setting skipped
            m["heap"].keep_freed_memory = lambda: False
        if impl in ("fused", "fp32", "whole"):
            changed = {"fused": {"kernel": "fused"}, "fp32": {"precision": "fp32"},
                       "whole": {"batch_parts": 1}}[impl]
            params = dataclasses.replace(
                params, train=dataclasses.replace(params.train, **changed))
        if hasattr(params.train, "augment"):  # the same images as every other path's
            params = dataclasses.replace(params, train=dataclasses.replace(
                params.train, augment=type(params.train.augment)()))
        per_call = m["protocol"].plan(params.train, 55_000)["steps_per_call"]  # as the stage's
        net = m["train"].compiled(name, params, total_steps=10 ** 6, steps_per_call=per_call)
        net.fit(m["inputs"].training(x, y, params.train), epochs=1,
                steps_per_epoch=warmup + steps, verbose=0, callbacks=[clock.callback])
    return {"images_per_s": steps * 100 / clock.seconds(), "params": net.count_params(),
            "data": source, "steps_per_call": per_call}
