"""Training throughput: the project's path against plain Keras and PyTorch, in one run.

Usage: python bench/train_speed.py [--gflop 700 | --steps N] [--warmup 110]
                                   [--models rnn lstm ...] [--no-torch] [--against DIR]
                                   [--out reports/bench-train]
       python bench/train_speed.py --agreement FIRST.json SECOND.json --out reports/bench-agreement

Every path is timed the same way, each in a fresh process (so no setting leaks
between them): images/s over the steps ``warmup + 1 .. warmup + steps`` (batch
100) of one training loop, the clock started at the end of step ``warmup`` and
stopped at the end of the last step (``Clock``), so tracing, compilation,
start-up, the conversion of the input and the input pipeline's teardown are
outside every window. Both numbers are multiples of the stage's 110 steps per
call, so the project's calls end exactly there. Every path of a model times the
same steps; by default each model's window holds the same arithmetic
(``--gflop``, 700 GFLOP: 880 steps of the RNN, 220 of the LSTM, 330 of the
GRU, 220 of the BiLSTM). The paths of a model run in lock-step
(bench/lockstep.py): they start and warm up together, then take turns, one
block of 110 steps each, so that this VM's drifts (5-20% within minutes) slow
them alike; a path's window is the sum of its blocks, its speed its fastest
block's (``derive``). Each round is a fresh session of every model; the
default is 7 rounds (about 40 minutes on a 2-core VM). Why many short rounds
rather than a few long ones: each fresh process has its own undisturbed speed
(plain Keras' or PyTorch's up to 8-15% apart between processes of one run), so
a ratio's error falls with the number of processes, not with the window's
length; with 3 rounds of 2,000 GFLOP two runs put a ratio up to 6% apart
(reports/bench-agreement-3x2000.md). What rounds cannot remove is the machine
changing between runs: on a 2-vCPU Xeon two runs of 7 rounds put the LSTM's
ratio to plain Keras 7.4% apart, every round of the second run above the
first's median (reports/bench-agreement.md).

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
fp32, TensorFlow in bf16 where the project's products are bf16): once at the
start, and in every session as one more lock-step worker, so that each round's
share of the peak is against the peak measured among its own blocks, in the
precision the path's products use. GFLOP/s of every training are 3 x the forward
pass's multiply-adds x 2 (recurrent and input products and the classifier), less
the gradient of the data, which no path needs.
Writes ``<out>.md`` and ``<out>.json`` (every block's seconds too). Uses
data/split when it exists, else random pixels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from checkout import ROOT, child_env, command, own_pipeline  # siblings in bench/
from speed_table import agreement, write  # the reports
from keras_paths import SPLIT, measure_tf  # what runs in each measuring process
from lockstep import Session, block_peak, pace, undisturbed, whole  # turns
from timing import peak, serve_peak  # the machine's peak

TORCH_VENV = ROOT / ".bench" / "torch"
TORCH_PIN = "torch==2.13.0"
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
STEPS_PER_CALL = 110  # the stage's (pipeline.rnn.protocol): windows end at a call's end


def train_flops(m, steps: int = 28, features: int = 28, classes: int = 10) -> float:
    """Training FLOPs per image: 3 x the forward pass's matrix products (2 per
    multiply-add: forward, and two products backward for each), less the one no
    training needs: the gradient of the data, below each stack's first layer."""
    per_stack = sum(GATES[m.cell] * steps * ((features if i == 0 else m.units) + m.units)
                    * m.units for i in range(m.layers))
    stacks = 2 if m.bidirectional else 1
    head_in = (m.units * (2 if m.merge == "concat" else 1) if m.bidirectional
               else m.units * (m.layers if m.head == "all_states" else 1))
    d_data = GATES[m.cell] * steps * features * m.units
    return 2 * (3 * (stacks * per_stack + head_in * classes) - stacks * d_data)


def steps_for(mflop_per_image: float, gflop: float) -> int:
    """Timed steps (batch 100) holding at least ``gflop`` GFLOP of training, rounded
    up to whole calls of the stage's steps per call."""
    calls = -(-gflop * 1e3 // (mflop_per_image * 100 * STEPS_PER_CALL))
    return int(max(calls, 1)) * STEPS_PER_CALL


def in_checkout(root: Path) -> dict:
    """How a child runs so that it imports ``root``'s pipeline (its own checkout's,
    not the editable install's) and reads ``root``'s params.yaml."""
    return {"env": child_env(root), "cwd": root}


def _child(*args: str) -> dict:
    """One measurement in a fresh process of this checkout, printing one JSON line."""
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                         **in_checkout(ROOT))
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


def session(name: str, impls: list[str], steps: int, args, kinds: list[str],
            tpy: str | None) -> dict:
    """One round of one model: every path and the peak as lock-step workers, in
    blocks of one call of the stage (110 steps), ``steps // 110`` turns each."""
    me, block = str(Path(__file__).resolve()), STEPS_PER_CALL
    common = ["--steps", str(steps), "--warmup", str(args.warmup), "--block", str(block),
              "--serve"]
    mine = in_checkout(ROOT)
    workers = {}
    for impl in impls:
        if impl == "torch":
            data = ["--data", str(SPLIT)] if SPLIT.exists() else []
            workers[impl] = ([tpy, str(ROOT / "bench" / "torch_rnns.py"), name, *common,
                              *data], mine)
        elif impl == "before":
            workers[impl] = ([sys.executable, me, "--measure", "project", name, *common,
                              "--code", str(args.against)], in_checkout(args.against))
        else:
            workers[impl] = ([sys.executable, me, "--measure", impl, name, *common], mine)
    workers["peak"] = ([sys.executable, me, "--serve-peak", *kinds], mine)
    turns = steps // block
    shown = lambda i, n: print(f"  {name}: turn {i}/{n}", end="\n" if i == n else "\r",  # noqa: E731
                               flush=True)
    return Session(workers).run(turns, progress=shown)


def tally(runs: list[dict], mflop: float, steps: int) -> dict:
    """A model's row from its rounds: every path's blocks and every round's peaks
    (``derive`` reads them)."""
    row = {"train_mflop_per_image": mflop, "steps": steps,
           "peak_rounds": [{k: block_peak(r["peak"], k) for k in r["peak"]["kinds"]}
                           for r in runs],
           "peak_blocks": [[b["gflops"] for b in r["peak"]["blocks"]] for r in runs]}
    for impl in (k for k in runs[0] if k != "peak"):
        row[impl] = {**{k: v for k, v in runs[0][impl].items() if k != "blocks"},
                     "blocks": [[b["seconds"] for b in r[impl]["blocks"]] for r in runs]}
    return derive(row, STEPS_PER_CALL)


def derive(row: dict, block: int) -> dict:
    """What a model's blocks say: each path's images/s per round from its fastest
    block (``undisturbed``; median and range of the rounds) and over its whole
    window; the project's ratio to each baseline per round, both ways."""
    paths = [k for k, v in row.items() if isinstance(v, dict) and "blocks" in v]
    for impl in paths:
        got = row[impl]
        fast = [undisturbed(b, block) for b in got["blocks"]]
        got.update(images_per_s=statistics.median(fast), all=sorted(fast), rounds=fast,
                   window_rounds=[whole(b, block) for b in got["blocks"]])
    for impl in (k for k in paths if k in ("reference", "torch", "before")):
        for mine, theirs in (("ratio_rounds", "rounds"), ("window_ratio_rounds", "window_rounds")):
            row[impl][mine] = [p / q for p, q in zip(row["project"][theirs], row[impl][theirs])]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gflop", type=float, default=700,
                    help="each model's window holds this much training arithmetic; its "
                         "steps are the same for every path (default 700)")
    ap.add_argument("--steps", type=int,
                    help="timed steps of every model instead (a multiple of the stage's "
                         "110 steps per call)")
    ap.add_argument("--warmup", type=int, default=110,
                    help="steps before the clock starts, the same for every path")
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--repeats", type=int, default=7,
                    help="rounds; each round is a fresh lock-step session of every path "
                         "of every model; the median is reported")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--against", type=Path, metavar="DIR",
                    help="also measure the project's path of the checkout DIR (a git worktree "
                         "of another commit, with data/split), as 'before'")
    ap.add_argument("--variants", nargs="*", default=[],
                    choices=["fp32", "fused", "whole", "glibc", "xla", "bf16"],
                    help="also measure the project's path with fp32 products, on "
                         "pipeline.rnn.fused's ops (no C++ op), in whole batches "
                         "(batch_parts 1), with glibc's own malloc "
                         "settings; the reference with jit_compile (xla), mixed_bfloat16")
    ap.add_argument("--out", default="reports/bench-train")
    ap.add_argument("--agreement", nargs=2, type=Path, metavar=("FIRST", "SECOND"),
                    help="measure nothing: compare two runs' JSON reports of the same "
                         "command (one machine) and write <out>.md/.json; exit 1 if a "
                         "ratio or share of the peak differs by more than 3%%")
    ap.add_argument("--table", type=Path, metavar="RUN.json",
                    help="measure nothing: write <out>.md/.json again from the blocks a run "
                         "recorded (after a change to how they are read)")
    ap.add_argument("--measure", nargs=2, metavar=("IMPL", "MODEL"), help=argparse.SUPPRESS)
    ap.add_argument("--block", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--peak", help=argparse.SUPPRESS)
    ap.add_argument("--serve-peak", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--code", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.agreement:
        first, second = (json.loads(p.read_text()) for p in args.agreement)
        sys.exit(0 if agreement(first, second, Path(args.out)) else 1)
    if args.table:  # the tables again from a run's recorded blocks
        result = json.loads(args.table.read_text())
        for row in result["models"].values():
            derive(row, result.get("block", STEPS_PER_CALL))
        result["table_command"] = command("train_speed.py")
        write(result, Path(args.out))
        return
    if args.serve_peak:
        print(json.dumps(serve_peak(args.serve_peak)))
        return
    own_pipeline(args.code)
    if args.measure:
        print(json.dumps(measure_tf(*args.measure, args.steps, args.warmup, args.code,
                                    args.block, pace if args.serve else None)))
        return
    if args.peak:
        print(json.dumps({"gflops": peak(args.peak)}))
        return

    from pipeline import config, runtime
    from pipeline.rnn import kernels, native

    params = config.load_project(ROOT)
    chosen = "native" if native.load() is not None else "TensorFlow ops"
    bf16 = chosen == "native" and kernels.precision(params.train.precision, "native")
    names = args.models or list(params.models)
    mflop = {name: train_flops(params.models[name]) / 1e6 for name in names}
    steps = {name: args.steps or steps_for(mflop[name], args.gflop) for name in names}
    kinds = ["tensorflow", "numpy", *(["bf16"] if bf16 else [])]
    result = {"machine": runtime.machine(), "kernel": params.train.kernel,
              "command": command("train_speed.py"),
              "resolved": f"{chosen}, {'bf16' if bf16 else 'fp32'} recurrent products",
              "steps": steps, "gflop": None if args.steps else args.gflop,
              "warmup": args.warmup, "batch": 100, "repeats": args.repeats,
              "timing": "lockstep", "block": STEPS_PER_CALL,
              "peak_gflops": {k: _child(__file__, "--peak", k)["gflops"]
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
    impls = ["reference", "project", *args.variants, *(["before"] if args.against else []),
             *(["torch"] if tpy else [])]
    runs: dict = {name: [] for name in names}
    for rnd in range(args.repeats):
        for name in names:
            got = session(name, impls, steps[name], args, kinds, tpy)
            runs[name].append(got)
            print(f"round {rnd + 1}: {name:7s} " + "  ".join(
                f"{impl} {whole([b['seconds'] for b in got[impl]['blocks']], STEPS_PER_CALL):,.0f}"
                for impl in impls)
                + " images/s", flush=True)
    for name in names:
        result["models"][name] = tally(runs[name], mflop[name], steps[name])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    write(result, Path(args.out))  # the table, and the JSON again


if __name__ == "__main__":
    main()
