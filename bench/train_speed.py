"""Training throughput: the project's path against plain Keras and PyTorch, in one run.

Usage: python bench/train_speed.py [--gflop 2000 | --steps N] [--warmup 110]
                                   [--models rnn lstm ...] [--no-torch] [--against DIR]
                                   [--out reports/bench-train]
       python bench/train_speed.py --agreement FIRST.json SECOND.json --out reports/bench-agreement

Every path is timed the same way, each measurement in a fresh process (so no
setting leaks between them): images/s over the steps ``warmup + 1 .. warmup +
steps`` (batch 100) of one training loop, the clock started at the end of step
``warmup`` and stopped at the end of the last step (``Clock``), so tracing,
compilation, start-up, the conversion of the input and the input pipeline's
teardown are outside every window. Both numbers are multiples of the stage's 110
steps per call, so the project's calls end exactly there. Every path of a model
times the same steps; by default each model's window holds the same arithmetic
(``--gflop``, 2,000 GFLOP: 2,310 steps of the RNN, 660 of the LSTM, 770 of the
GRU, 550 of the BiLSTM, 10-15 s of the project's path on the AVX-512 EPYC; the
bench's three rounds of four paths then take about 20 minutes), meant to be long
enough that two runs of the bench agree within 3% (``--agreement``,
reports/bench-agreement.md; 660 steps gave the RNN a 3.7 s window and two runs
17% apart):

- reference: the tutorial's architecture from stock Keras layers, plain
  ``model.fit`` on NumPy arrays (one step per call), Adam, stock TensorFlow settings;
- project: what ``pipeline.stages.train`` runs (``train.compiled``: params.yaml's
  kernel and precision, op determinism, the tf.data input pipeline, the stage's
  steps per call and glibc keeping freed memory, ``pipeline.rnn.heap``), on the
  same images as the other paths: ``train.augment``'s random changes, which no
  baseline makes, are off here (their cost is in the stage's fit times);
- torch: PyTorch's ``nn.RNN``/``nn.LSTM``/``nn.GRU`` in the same architecture and
  the same window, from a virtual environment this script creates in
  ``.bench/torch`` (PyTorch is not a dependency of the project); ``--no-torch``
  skips it;
- before (``--against DIR``): the project's path of another checkout (a git
  worktree of an older commit), measured by this script's clock in a child with
  DIR on ``PYTHONPATH``, so that it imports DIR's pipeline and reads DIR's params.

Also the machine's matrix-multiply peak (2048 x 2048: TensorFlow and NumPy in
fp32, TensorFlow in bf16 where the project's products are bf16), TensorFlow's
again at the start of every round, because this VM's speed drifts by more than
the effects measured: each round's share of the peak is taken against that
round's own peak in the precision the path's products use. GFLOP/s of every
training are 3 x the forward pass's multiply-adds x 2 (recurrent and input
products and the classifier). Writes ``<out>.md`` and ``<out>.json``. Uses
data/split when it exists, else random pixels.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
from pathlib import Path

from checkout import ROOT, child_env, command, own_pipeline  # siblings in bench/
from speed_table import agreement, write  # the reports
from timing import Clock, peak  # how every path is timed

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


SPLIT = ROOT / "data" / "split" / "train.npz"  # every path's images, where it exists
STEPS_PER_CALL = 110  # the stage's (pipeline.rnn.protocol): windows end at a call's end


def steps_for(mflop_per_image: float, gflop: float) -> int:
    """Timed steps (batch 100) holding at least ``gflop`` GFLOP of training, rounded
    up to whole calls of the stage's steps per call."""
    calls = -(-gflop * 1e3 // (mflop_per_image * 100 * STEPS_PER_CALL))
    return int(max(calls, 1)) * STEPS_PER_CALL


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


def measure_tf(impl: str, name: str, steps: int, warmup: int, code: Path = ROOT) -> dict:
    """One measurement in this process: images/s of ``impl`` training ``name``
    over the steps ``warmup + 1 .. warmup + steps`` of a single ``fit`` (``Clock``).
    ``code`` is the checkout whose pipeline and params.yaml are measured."""
    import keras

    from pipeline import config

    m = _modules()
    params = (config.load_project(code) if hasattr(config, "load_project")  # since the move
              else config.load())  # an older checkout's config reads its own params
    x, y, source = _data((steps + warmup) * 100)
    clock = Clock(warmup, steps)
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
    else:  # project (params.yaml as it is), fused (TensorFlow's ops), fp32 products or glibc
        if impl == "glibc":  # glibc's malloc as it comes: train.compiled's setting skipped
            m["heap"].keep_freed_memory = lambda: False
        if impl in ("fused", "fp32"):
            changed = {"kernel": "fused"} if impl == "fused" else {"precision": "fp32"}
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
    ap.add_argument("--gflop", type=float, default=2000,
                    help="each model's window holds this much training arithmetic; its "
                         "steps are the same for every path (default 2000)")
    ap.add_argument("--steps", type=int,
                    help="timed steps of every model instead (a multiple of the stage's "
                         "110 steps per call)")
    ap.add_argument("--warmup", type=int, default=110,
                    help="steps before the clock starts, the same for every path")
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
                    help="also measure the project's path with fp32 products, on "
                         "pipeline.rnn.fused's ops (no C++ op), with glibc's own malloc "
                         "settings; the reference with jit_compile (xla), mixed_bfloat16")
    ap.add_argument("--out", default="reports/bench-train")
    ap.add_argument("--agreement", nargs=2, type=Path, metavar=("FIRST", "SECOND"),
                    help="measure nothing: compare two runs' JSON reports of the same "
                         "command (one machine) and write <out>.md/.json; exit 1 if a "
                         "median differs by more than 3%%")
    ap.add_argument("--measure", nargs=2, metavar=("IMPL", "MODEL"), help=argparse.SUPPRESS)
    ap.add_argument("--peak", help=argparse.SUPPRESS)
    ap.add_argument("--code", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.agreement:
        first, second = (json.loads(p.read_text()) for p in args.agreement)
        sys.exit(0 if agreement(first, second, Path(args.out)) else 1)
    own_pipeline(args.code)
    if args.measure:
        print(json.dumps(measure_tf(*args.measure, args.steps, args.warmup, args.code)))
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
    mflop = {name: train_flops(params.models[name]) / 1e6 for name in names}
    steps = {name: args.steps or steps_for(mflop[name], args.gflop) for name in names}
    result = {"machine": runtime.machine(), "kernel": params.train.kernel,
              "command": command("train_speed.py"),
              "resolved": f"{chosen}, {'bf16' if bf16 else 'fp32'} recurrent products",
              "steps": steps, "gflop": None if args.steps else args.gflop,
              "warmup": args.warmup, "batch": 100, "repeats": args.repeats,
              "peak_gflops": {k: _child(str(me), "--peak", k)["gflops"]
                              for k in ("tensorflow", "numpy", "bf16")}, "models": {},
              "project_precision": "bf16" if bf16 else "fp32"}
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
    result["peak_rounds"], result["peak_rounds_bf16"] = [], []
    for rnd in range(args.repeats):
        result["peak_rounds"].append(_child(str(me), "--peak", "tensorflow")["gflops"])
        if bf16:
            result["peak_rounds_bf16"].append(_child(str(me), "--peak", "bf16")["gflops"])
        for name in names:
            common = ["--steps", str(steps[name]), "--warmup", str(args.warmup)]
            for impl in ("reference", "project", *args.variants, *extra):
                if impl == "torch":
                    data = ["--data", str(SPLIT)] if SPLIT.exists() else []
                    got = _child(str(ROOT / "bench" / "torch_rnns.py"), name, *common, *data,
                                 python=tpy)
                elif impl == "before":
                    got = _child(str(me), "--measure", "project", name, *common,
                                 "--code", str(args.against), root=args.against)
                else:
                    got = _child(str(me), "--measure", impl, name, *common)
                runs[name].setdefault(impl, []).append(got)
                print(f"round {rnd + 1}: {name:7s} {impl:9s} {got['images_per_s']:8.0f} images/s",
                      flush=True)
    for name in names:
        row = {"train_mflop_per_image": mflop[name], "steps": steps[name]}
        for impl, got in runs[name].items():
            rates = [g["images_per_s"] for g in got]  # in round order
            row[impl] = {**got[0], "images_per_s": statistics.median(rates),
                         "all": sorted(rates), "rounds": rates}
        result["models"][name] = row
    write(result, Path(args.out))


if __name__ == "__main__":
    main()
