"""Training throughput: the project's path against plain Keras and PyTorch, in one run.

Usage: python bench/train_speed.py [--steps 150] [--warmup 30] [--models rnn lstm ...]
                                   [--no-torch] [--against DIR] [--out reports/bench-train]

Per model of params.yaml, each measurement in a fresh process (so no setting leaks
between them), images/s over ``--steps`` training steps of batch 100 after
``--warmup`` steps, to the end of the last step (tracing, compilation, start-up and
the input pipeline's teardown excluded; the teardown used to add up to 10.23 s to
a 150-step window, which made several models report the same 1,465 images/s):

- reference: the tutorial's architecture from stock Keras layers, plain
  ``model.fit`` on NumPy arrays, Adam, stock TensorFlow settings;
- project: what ``pipeline.stages.train`` runs (``train.compiled``: params.yaml's
  kernel and precision, op determinism, the tf.data input pipeline, the stage's
  steps per call and glibc keeping freed memory, ``pipeline.rnn.heap``); the window
  is whole calls, so it may be a few steps longer than ``--steps``;
- torch: PyTorch's ``nn.RNN``/``nn.LSTM``/``nn.GRU`` in the same architecture,
  from a virtual environment this script creates in ``.bench/torch`` (PyTorch is
  not a dependency of the project); ``--no-torch`` skips it;
- before (``--against DIR``): the project's path of another checkout (a git
  worktree of an older commit), through that checkout's own bench script, run
  in DIR with DIR on ``PYTHONPATH`` so that it imports DIR's pipeline.

Also the machine's fp32 matrix-multiply peak (2048 x 2048, with TensorFlow and
with NumPy; TensorFlow's again at the start of every round, because this VM's
speed drifts by more than the effects measured: each round's share of the peak
is taken against that round's own peak), GFLOP/s of every training (3 x the
forward pass's multiply-adds x 2, recurrent and input products and the
classifier), and the machine. Writes
``<out>.md`` and ``<out>.json``. Uses data/split when it exists, else random pixels.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from checkout import ROOT, child_env, own_pipeline  # siblings in bench/
from speed_table import write  # the report

TORCH_VENV = ROOT / ".bench" / "torch"
TORCH_PIN = "torch==2.13.0"
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}


def train_flops(m, steps: int = 28, features: int = 28, classes: int = 10) -> float:
    """Training FLOPs per image: 3 x the forward pass's matrix products (2 per multiply-add)."""
    per_stack = sum(GATES[m.cell] * steps * ((features if i == 0 else m.units) + m.units)
                    * m.units for i in range(m.layers))
    stacks = 2 if m.bidirectional else 1
    head_in = (m.units * (2 if m.merge == "concat" else 1) if m.bidirectional
               else m.units * (m.layers if m.head == "all_states" else 1))
    return 3 * 2 * (stacks * per_stack + head_in * classes)


def _data(n: int):
    import numpy as np

    split = ROOT / "data" / "split" / "train.npz"
    if split.exists():
        with np.load(split) as z:
            return z["x"][:n], z["y"][:n], "data/split (MNIST)"
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, 28, 28), dtype="uint8"),
            rng.integers(0, 10, n).astype("int64"), "random pixels")


def measure_tf(impl: str, name: str, steps: int, warmup: int) -> dict:
    """One measurement in this process: images/s of ``impl`` training ``name``."""
    import keras

    from pipeline import config
    from pipeline.rnn import inputs
    from pipeline.rnn import model
    from pipeline.rnn import protocol
    from pipeline.stages import train

    params = config.load_project(ROOT)
    x, y, source = _data((steps + warmup) * 100)
    last = {}

    class LastStep(keras.callbacks.Callback):
        """When the last step ended: the input pipeline's teardown after it is not
        steady state (tf.data's autotune thread can hold a plain ``fit`` for seconds)."""
        def on_train_batch_end(self, batch, logs=None):
            last["t"] = time.perf_counter()

    if impl in ("reference", "xla", "bf16"):  # stock layers, plain fit on NumPy
        if impl == "bf16":
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        net = model.build(params.models[name], kernel="keras")
        net.compile(optimizer=keras.optimizers.Adam(0.001),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"], jit_compile=impl == "xla")
        xf = x.astype("float32")
        net.fit(xf[: warmup * 100], y[: warmup * 100], batch_size=100, epochs=1, verbose=0)
        start = time.perf_counter()
        net.fit(xf[warmup * 100:], y[warmup * 100:], batch_size=100, epochs=1, verbose=0,
                callbacks=[LastStep()])
    else:  # project (params.yaml as it is), fused (TensorFlow's ops), fp32 products or glibc
        if impl == "glibc":  # glibc's malloc as it comes: train.compiled's setting skipped
            from pipeline.rnn import heap
            heap.keep_freed_memory = lambda: False
        if impl in ("fused", "fp32"):
            changed = {"kernel": "fused"} if impl == "fused" else {"precision": "fp32"}
            params = dataclasses.replace(
                params, train=dataclasses.replace(params.train, **changed))
        per_call = protocol.plan(params.train, 55_000)["steps_per_call"]  # as the stage's
        net = train.compiled(name, params, total_steps=10 ** 6, steps_per_call=per_call)
        ds = inputs.training(x, y, params.train)
        net.fit(ds, epochs=1, steps_per_epoch=warmup, verbose=0)
        start, before = time.perf_counter(), int(net.optimizer.iterations)
        net.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[LastStep()])
        steps = int(net.optimizer.iterations) - before  # whole calls of per_call steps
    seconds = last["t"] - start
    return {"images_per_s": steps * 100 / seconds, "params": net.count_params(), "data": source}


def peak(kind: str, n: int = 2048, repeats: int = 20) -> float:
    """fp32 matrix-multiply GFLOP/s, best of ``repeats`` n x n products."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n)).astype("float32")
    if kind == "numpy":
        mm = lambda: a @ a  # noqa: E731
    else:
        import tensorflow as tf

        t = tf.constant(a)
        mm = lambda: tf.matmul(t, t).numpy()  # noqa: E731
    mm()
    best = min(_timed(mm) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _child(*args: str, python: str = sys.executable, root: Path = ROOT) -> dict:
    """One measurement in a fresh process that imports ``root``'s pipeline (its own
    checkout's, not the editable install's) and prints one JSON line."""
    out = subprocess.run([python, *args], capture_output=True, text=True, env=child_env(root),
                         cwd=root)
    if out.returncode:
        raise SystemExit(f"bench: {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_python() -> str:
    """The PyTorch venv's python, created on first use (pip takes the pinned CPU build)."""
    py = TORCH_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TORCH_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", TORCH_PIN, "numpy"], check=True)
    return str(py)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--repeats", type=int, default=3,
                    help="rounds; each round measures every model and implementation once, "
                         "so drifts in machine speed hit all alike; the median is reported")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--against", type=Path, metavar="DIR",
                    help="also measure the project's path of the checkout DIR (a git worktree "
                         "of another commit, with data/split), as 'before'")
    ap.add_argument("--variants", nargs="*", default=[],
                    choices=["fp32", "fused", "glibc", "xla", "bf16"],
                    help="also measure: fp32 = the project's path with train.precision fp32; "
                         "fused = every cell on pipeline.rnn.fused's TensorFlow ops (no C++ op) "
                         "in the project's path; glibc = the project's path with glibc's own "
                         "malloc settings (no pipeline.rnn.heap); xla = the reference with "
                         "jit_compile; bf16 = "
                         "the reference with Keras' mixed_bfloat16 policy")
    ap.add_argument("--out", default="reports/bench-train")
    ap.add_argument("--measure", nargs=2, metavar=("IMPL", "MODEL"), help=argparse.SUPPRESS)
    ap.add_argument("--peak", help=argparse.SUPPRESS)
    args = ap.parse_args()
    own_pipeline()
    if args.measure:
        print(json.dumps(measure_tf(*args.measure, args.steps, args.warmup)))
        return
    if args.peak:
        print(json.dumps({"gflops": peak(args.peak)}))
        return

    from pipeline import config
    from pipeline.rnn import kernels
    from pipeline.rnn import native
    from pipeline import runtime

    params = config.load_project(ROOT)
    chosen = "native" if native.load() is not None else "TensorFlow ops"
    bf16 = chosen == "native" and kernels.precision(params.train.precision, "native")
    names = args.models or list(params.models)
    me = Path(__file__).resolve()
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    result = {"machine": runtime.machine(), "kernel": params.train.kernel,
              "command": " ".join(["python", "bench/train_speed.py", *sys.argv[1:]]),
              "resolved": f"{chosen}, {'bf16' if bf16 else 'fp32'} recurrent products",
              "steps": args.steps, "warmup": args.warmup, "batch": 100, "repeats": args.repeats,
              "peak_gflops": {k: _child(str(me), "--peak", k)["gflops"]
                              for k in ("tensorflow", "numpy")}, "models": {}}
    if args.against:
        args.against = args.against.resolve()  # the child runs in it, so not relative
        if not (args.against / "data" / "split" / "train.npz").exists():
            print(f"bench: {args.against}/data/split/train.npz missing: 'before' trains on "
                  "random pixels (link this checkout's data/split there)", file=sys.stderr)
        result["before"] = subprocess.run(["git", "-C", str(args.against), "log", "-1",
                                           "--format=%h"], capture_output=True,
                                          text=True).stdout.strip() or str(args.against)
    tpy = None if args.no_torch else torch_python()
    runs: dict = {name: {} for name in names}
    extra = (("before",) if args.against else ()) + (("torch",) if tpy else ())
    result["peak_rounds"] = []
    for rnd in range(args.repeats):
        result["peak_rounds"].append(_child(str(me), "--peak", "tensorflow")["gflops"])
        for name in names:
            for impl in ("reference", "project", *args.variants, *extra):
                if impl == "torch":
                    got = _child(str(ROOT / "bench" / "torch_rnns.py"), name, *common, python=tpy)
                elif impl == "before":
                    got = _child(str(args.against / "bench" / "train_speed.py"), "--measure",
                                 "project", name, *common, root=args.against)
                else:
                    got = _child(str(me), "--measure", impl, name, *common)
                runs[name].setdefault(impl, []).append(got)
                print(f"round {rnd + 1}: {name:7s} {impl:9s} {got['images_per_s']:8.0f} images/s",
                      flush=True)
    for name in names:
        row = {"train_mflop_per_image": train_flops(params.models[name]) / 1e6}
        for impl, got in runs[name].items():
            rates = [g["images_per_s"] for g in got]  # in round order
            row[impl] = {**got[0], "images_per_s": statistics.median(rates),
                         "all": sorted(rates), "rounds": rates}
        result["models"][name] = row
    write(result, Path(args.out))


if __name__ == "__main__":
    main()
