"""Training on the C++ op against training on Keras' stock layers: the same accuracy?

Usage: python bench/op_vs_keras.py [--models rnn ...] [--arithmetics bf16 fp32 fp32-avx2]
       [--steps 550] [--train-samples 55000] [--split-dir data/split] [--out ...] [--note TEXT]

Why: tests/test_op_numerics.py shows that one step's logits and gradients agree
with Keras' to rounding (bf16 products: to bf16 rounding). Rounding differences
grow over a training, as any two runs' do; what must hold is the end result, in
every arithmetic the op has: bf16 and fp32 products of the ``-march=native``
build, and fp32 of the AVX2 build (``x86-64-v3``, what an AVX2-only CPU runs).

For each model (params.yaml's, and ``rnn_tanh``: ``models.rnn`` with tanh), the
training stage's compiled model (``train.compiled``: seeds, deterministic ops,
cosine decay over the run, batch parts) is trained ``--steps`` steps with
``train.kernel: keras`` and once per arithmetic with ``native``, all from the same
initial weights on the same batches. Each build trains in a process of its own
(one process cannot load two builds of the op), the AVX2 build's with
``BUILDS["avx2"]``'s environment (bench/kernel_path.py's AVX2 path: TensorFlow on
Eigen, oneDNN capped at AVX2) and a Keras run of its own. Each model is evaluated
as the pipeline evaluates a checkpoint (Keras' layers, fp32) on the validation
images; the op's and its process's Keras model's paired predictions go to
McNemar's exact test (``stats.paired``): p >= 0.05 = within noise. Under the
table, each model's two Keras runs (one per build's process): how far the
kernels' rounding alone moves it. Writes ``--out`` (Markdown) and a JSON beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline import config
from pipeline import runtime
from pipeline.evaluation import stats

ROOT = Path(__file__).resolve().parents[1]
# The op's builds: the environment of the process that trains on each.
BUILDS = {"native": {},
          "avx2": {"PIPELINE_NATIVE_MARCH": "x86-64-v3", "ONEDNN_MAX_CPU_ISA": "AVX2",
                   "TF_ENABLE_ONEDNN_OPTS": "0"}}
ARITHMETICS = {"bf16": ("native", "bf16"), "fp32": ("native", "fp32"),
               "fp32-avx2": ("avx2", "fp32")}  # name: (build, train.precision)
EXTRA_MODELS = {"rnn_tanh": ("rnn", "tanh")}  # name: (params.yaml's model, activation)


def compare(y, keras_pred, op_pred) -> dict:
    """Both accuracies and McNemar's exact test on the paired predictions
    (``fixed``: the op right where Keras was wrong; ``broken``: the reverse)."""
    pair, n = stats.paired(y, keras_pred, op_pred), len(y)
    keras_right = sum(int(p == t) for p, t in zip(keras_pred, y))
    return {"images": n, "keras_correct": keras_right, "native_correct": keras_right + pair.net,
            "keras_val_accuracy": keras_right / n, "native_val_accuracy": (keras_right + pair.net) / n,
            "difference_images": pair.net, "fixed": pair.fixed, "broken": pair.broken,
            "p_value": pair.p_value, "within_noise": not pair.significant, "words": pair.words()}


def rows(y_val, children: dict, arithmetics, models) -> list[dict]:
    """One row per (arithmetic, model): the op's run against the Keras run of the
    same process (``children``: each build's process's output)."""
    out = []
    for arith in arithmetics:
        build = children[ARITHMETICS[arith][0]]
        for name in models:
            op, keras = build["models"][name][arith], build["models"][name]["keras"]
            out.append({"arithmetic": arith, "model": name,
                        "native": {k: op[k] for k in ("how", "train_s")},
                        "keras": {k: keras[k] for k in ("how", "train_s")},
                        "comparison": compare(y_val, keras["pred"], op["pred"])})
    return out


def _pct(share: float) -> str:
    return f"{100 * share:.2f}%"


def render(result: dict) -> str:
    """The report: what ran where, and one table."""
    m = result["machine"]
    builds = "; ".join(f"**{b}**: TensorFlow kernels {c['kernels']}, op library "
                       f"`{c.get('op_library') or 'none'}`" for b, c in result["builds"].items())
    lines = [
        "# Training on the C++ op vs on Keras' stock layers",
        "",
        f"Command: `{result['command']}`. Date: {result['date']}.",
        f"Machine: **{m['cpu_model']}**, {m['cpu_count']} cores, ISA: {m['isa_flags']}; "
        f"TensorFlow {m['tensorflow']}. C++ compiler: `{result['cxx']}`. Builds of the op, "
        f"each trained in a process of its own with its own Keras reference: {builds}."
        f"{' ' + result['note'] if result.get('note') else ''}",
        f"Each model: {result['steps']:,} steps of batch {result['batch_size']} on the first "
        f"{result['train_samples']:,} training images (seed {result['seed']}, cosine decay "
        f"over the run), per kernel from the same initial weights and batches; "
        f"validation accuracy on {result['val_images']:,} images, evaluated with Keras' "
        f"layers in fp32 as the pipeline evaluates a checkpoint. Difference = images the "
        f"op's model gets right minus the Keras model's (same process); McNemar's exact "
        f"test on the paired predictions, p >= 0.05 = within noise. Training times are "
        f"wall times on a shared machine, for orientation only.",
        "",
        "| arithmetic | model | op run | op val acc | Keras val acc | difference (images) "
        "| op right, Keras wrong | Keras right, op wrong | McNemar p | verdict "
        "| op train s | Keras train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        c = r["comparison"]
        diff = f"{c['difference_images']:+d}" if c["difference_images"] else "0"
        lines.append(
            f"| {r['arithmetic']} | {r['model']} | {r['native']['how']} "
            f"| {_pct(c['native_val_accuracy'])} | {_pct(c['keras_val_accuracy'])} | {diff} "
            f"| {c['fixed']} | {c['broken']} | {stats.fmt_p(c['p_value'])} | "
            f"{'within noise' if c['within_noise'] else 'significant'} "
            f"| {r['native']['train_s']:.0f} | {r['keras']['train_s']:.0f} |")
    keras = {}  # model: {build: its process's Keras run's val accuracy}: the kernels' own effect
    for r in result["rows"]:
        keras.setdefault(r["model"], {})[ARITHMETICS[r["arithmetic"]][0]] = _pct(
            r["comparison"]["keras_val_accuracy"])
    if each := [f"{m} {' / '.join(by[b] for b in result['builds'])}" for m, by in keras.items()
                if len(by) == len(result["builds"]) > 1]:
        lines += ["", f"Keras alone, from the same weights on the same batches, in each build's "
                  f"process ({' / '.join(result['builds'])}): {', '.join(each)}."]
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path) -> None:  # the report and its JSON
    runtime.atomic_write_text(Path(out), render(result))
    runtime.write_json(Path(out).with_suffix(".json"), result)


def with_models(params: config.Params, models) -> config.Params:
    """params with the extra models (``EXTRA_MODELS``) that ``models`` names."""
    extra = {name: dataclasses.replace(params.models[base], activation=act)
             for name, (base, act) in EXTRA_MODELS.items() if name in models}
    return dataclasses.replace(params, models={**params.models, **extra})


# ------------------------------------------------ in each build's process

def _train(name: str, params: config.Params, kernel: str, precision: str, x, y, x_val,
           steps: int, weights) -> dict:
    """The stage's model on ``kernel``, trained from ``weights``: how it ran, its training
    seconds and its classes of ``x_val`` as evaluate computes them (Keras' stock layers)."""
    from pipeline.rnn import inputs
    from pipeline.rnn import kernels
    from pipeline.rnn import model
    from pipeline.rnn import protocol
    from pipeline.stages import train

    params = dataclasses.replace(params, train=dataclasses.replace(
        params.train, kernel=kernel, precision=precision))
    net = train.compiled(name, params, total_steps=steps,
                         steps_per_call=protocol.steps_per_call(steps))
    net.set_weights(weights)
    start = time.perf_counter()
    net.fit(inputs.training(x, y, params.train), epochs=1, steps_per_epoch=steps, verbose=0)
    seconds = time.perf_counter() - start
    assert int(net.optimizer.iterations) == steps
    c = kernels.choose(params.models[name], params.train)
    stock = model.stock_copy(getattr(net, "inner", net), params.models[name])  # SideBySide's
    return {"how": f"{c.kernel}, {'bf16' if c.bf16 else 'fp32'} products, {c.n_parts} part(s)",
            "train_s": round(seconds, 1), "pred": stock.predict(
                x_val.astype("float32"), batch_size=1000, verbose=0).argmax(axis=1).tolist()}


def _pin_the_op() -> str:
    """One build of the op for the whole process, from a copy of its sources (were
    they edited during the run, a second library would register the op twice, and
    TensorFlow aborts); the library's file name, or "" where it does not build."""
    import shutil

    from pipeline.rnn import native

    copy = Path(tempfile.mkdtemp(prefix="op-vs-keras-")) / "native"
    shutil.copytree(native.SOURCE.parent, copy)  # every header the source includes
    native.SOURCE = copy / native.SOURCE.name
    native.HEADERS = tuple(copy / h.name for h in native.HEADERS)
    if native.load() is None:
        return ""
    native.bf16_supported()  # the same library: built once, opened once
    return native.build().name


def _initial_weights(name: str, params: config.Params):
    """Seeded initial weights of the stock model (what ``train.compiled`` draws)."""
    import keras

    from pipeline.rnn import model

    keras.utils.set_random_seed(params.train.seed)
    return model.build(params.models[name], params.dataset.image_shape,
                       params.dataset.num_classes, name, kernel="keras").get_weights()


def child(args, params: config.Params) -> dict:
    """This build's runs: per model, Keras and each of its arithmetics."""
    from pipeline.data import arrays
    from pipeline.rnn import side_by_side

    side_by_side.set_threads(2)  # before TensorFlow's first op: both kernels alike
    library = _pin_the_op()
    x, y = arrays.load(args.split_dir, "train")
    x, y = x[: args.train_samples], y[: args.train_samples]
    x_val = arrays.load(args.split_dir, "val")[0]
    mine = [a for a in args.arithmetics if ARITHMETICS[a][0] == args.child]
    plan = {"keras": ("keras", "fp32"), **{a: ("native", ARITHMETICS[a][1]) for a in mine}}
    out = {"machine": runtime.machine(), "op_library": library, "train_samples": len(x),
           "models": {}}
    for name in args.models:
        init = _initial_weights(name, params)  # every run starts here
        out["models"][name] = runs = {}
        for run, (kernel, precision) in plan.items():
            runs[run] = _train(name, params, kernel, precision, x, y, x_val, args.steps, init)
            print(f"{args.child} {name} {run}: {runs[run]['train_s']:.0f} s", file=sys.stderr,
                  flush=True)
    return out


# ------------------------------------------------------------ the whole run

def run(args, argv: list[str], params: config.Params) -> dict:
    """Each build's process in turn, then one table of all rows."""
    from pipeline.data import arrays
    from pipeline.rnn import native

    builds = list(dict.fromkeys(ARITHMETICS[a][0] for a in args.arithmetics))
    children = {}
    with tempfile.TemporaryDirectory() as tmp:
        for build in builds:
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **BUILDS[build]}
            if build != "native":  # beside the default build's cache, as the tests'
                env["PIPELINE_NATIVE_CACHE"] = str(native.cache_dir().with_name(
                    f"native-{BUILDS[build]['PIPELINE_NATIVE_MARCH']}"))
            out = Path(tmp) / f"{build}.json"
            done = subprocess.run([sys.executable, __file__, *argv, "--child", build,
                                   "--child-out", str(out)], env=env, cwd=ROOT)
            if done.returncode:
                raise runtime.StageError(f"the {build} build's process exited {done.returncode}")
            children[build] = json.loads(out.read_text())
    y_val = arrays.load(args.split_dir, "val")[1].tolist()
    first = children[builds[0]]
    return {"command": "python bench/op_vs_keras.py " + shlex.join(argv),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": first["machine"], "cxx": os.environ.get("CXX", "g++"),
            "builds": {b: {"kernels": c["machine"]["kernels"], "op_library": c["op_library"]}
                       for b, c in children.items()},
            "steps": args.steps, "train_samples": first["train_samples"],
            "batch_size": params.train.batch_size, "seed": params.train.seed,
            "val_images": len(y_val), "note": args.note,
            "rows": rows(y_val, children, args.arithmetics, args.models)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", help="default: params.yaml's, and rnn_tanh")
    ap.add_argument("--arithmetics", nargs="+", default=list(ARITHMETICS), choices=ARITHMETICS)
    ap.add_argument("--steps", type=int, default=550, help="training steps per run (550 = an epoch)")
    ap.add_argument("--train-samples", type=int, default=55_000)
    ap.add_argument("--split-dir", type=Path, default=ROOT / config.SPLIT_DIR)
    ap.add_argument("--params", type=Path, default=None, help="default: this checkout's")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "op-vs-keras.md")
    ap.add_argument("--note", default="", help="a sentence for the report, e.g. why so few steps")
    ap.add_argument("--child", choices=BUILDS, help=argparse.SUPPRESS)  # a build's process
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    missing = [p for p in ("train", "val") if not (args.split_dir / f"{p}.npz").exists()]
    if missing:
        print(f"op_vs_keras: no {args.split_dir}/{missing[0]}.npz: create the split with "
              f"`dvc repro split`", file=sys.stderr)
        return 1
    params = config.load(args.params) if args.params else config.load_project(ROOT)
    args.models = args.models or [*params.models, *EXTRA_MODELS]
    params = with_models(params, args.models)
    unknown = [m for m in args.models if m not in params.models]
    if unknown:
        print(f"op_vs_keras: --models: no {unknown[0]} in {args.params or 'params.yaml'}", file=sys.stderr)
        return 1
    try:
        if args.child:
            runtime.write_json(args.child_out, child(args, params))
            return 0
        result = run(args, argv, params)
    except runtime.StageError as exc:
        print(f"op_vs_keras: {exc}", file=sys.stderr)
        return 1
    write(result, args.out)
    print(f"wrote {args.out} and {args.out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
