"""Training on the C++ op against training on Keras' stock layers: the same accuracy?

Usage: python bench/op_vs_keras.py [--models rnn lstm gru bilstm] [--steps 550]
                                   [--train-samples 55000] [--split-dir data/split]
                                   [--out reports/op-vs-keras.md] [--note TEXT]

Why: tests/test_op_numerics.py shows that one step's logits and gradients agree
with Keras' to rounding (bf16 products: to bf16 rounding). Rounding differences
grow over a training, as any two runs' do; what must hold is the end result.

For each model, the training stage's compiled model (``train.compiled``: seeds,
deterministic ops, Adam with cosine decay over the run, batch parts) is trained
twice: ``train.kernel: native`` (``train.precision`` as params.yaml says, so bf16
products where the CPU has AVX512_BF16) and ``train.kernel: keras``, from the
same initial weights (the Keras model's, copied into the op's) on the same
shuffled batches, ``--steps`` steps of params.yaml's batch size. Both are then
evaluated as the pipeline evaluates a checkpoint (``model.stock_copy``: Keras'
layers, fp32) on the validation images, and their paired predictions go to
McNemar's exact test (``pipeline.evaluation.stats.paired``): p >= 0.05 = the two
accuracies differ within noise. Writes ``--out`` (Markdown) and a JSON beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

from pipeline import config
from pipeline import runtime
from pipeline.data import arrays
from pipeline.evaluation import stats

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ("native", "keras")  # the op, the reference


def compare(y, keras_pred, op_pred) -> dict:
    """Both accuracies and McNemar's exact test on the paired predictions
    (``fixed``: the op right where Keras was wrong; ``broken``: the reverse)."""
    pair = stats.paired(y, keras_pred, op_pred)
    n = len(y)
    keras_right = sum(int(p == t) for p, t in zip(keras_pred, y))
    return {"images": n, "keras_correct": keras_right, "native_correct": keras_right + pair.net,
            "keras_val_accuracy": keras_right / n, "native_val_accuracy": (keras_right + pair.net) / n,
            "difference_images": pair.net, "fixed": pair.fixed, "broken": pair.broken,
            "p_value": pair.p_value, "within_noise": not pair.significant, "words": pair.words()}


def _pct(share: float) -> str:
    return f"{100 * share:.2f}%"


def render(result: dict) -> str:
    """The report: what ran where, and one row per model."""
    m = result["machine"]
    lines = [
        "# Training on the C++ op vs on Keras' stock layers",
        "",
        f"Command: `{result['command']}`. Date: {result['date']}.",
        f"Machine: **{m['cpu_model']}**, {m['cpu_count']} cores, ISA: {m['isa_flags']}; "
        f"TensorFlow {m['tensorflow']}, kernels {m['kernels']}. "
        f"C++ compiler: `{result['cxx']}`, op library `{result.get('op_library') or 'none'}`."
        f"{' ' + result['note'] if result.get('note') else ''}",
        f"Each model: {result['steps']:,} steps of batch {result['batch_size']} on the first "
        f"{result['train_samples']:,} training images (seed {result['seed']}, cosine decay "
        f"over the run), once per kernel from the same initial weights and batches; "
        f"validation accuracy on {result['val_images']:,} images, evaluated with Keras' "
        f"layers in fp32 as the pipeline evaluates a checkpoint. Difference = images the "
        f"op's model gets right minus Keras' model's; McNemar's exact test on the paired "
        f"predictions, p >= 0.05 = within noise. Training times are wall times on a "
        f"shared machine, for orientation only.",
        "",
        "| model | op arithmetic | op val acc | Keras val acc | difference (images) "
        "| op right, Keras wrong | Keras right, op wrong | McNemar p | verdict "
        "| op train s | Keras train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["models"].items():
        c = r["comparison"]
        diff = f"{c['difference_images']:+d}" if c["difference_images"] else "0"
        lines.append(
            f"| {name} | {r['native']['arithmetic']} | {_pct(c['native_val_accuracy'])} "
            f"| {_pct(c['keras_val_accuracy'])} | {diff} | {c['fixed']} | {c['broken']} "
            f"| {stats.fmt_p(c['p_value'])} | "
            f"{'within noise' if c['within_noise'] else 'significant'} "
            f"| {r['native']['train_s']:.0f} | {r['keras']['train_s']:.0f} |")
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path) -> None:
    out = Path(out)
    runtime.atomic_write_text(out, render(result))
    runtime.write_json(out.with_suffix(".json"), result)


def _arithmetic(choice) -> str:
    return f"{choice.kernel}, {'bf16' if choice.bf16 else 'fp32'} products, {choice.n_parts} part(s)"


def _train(name: str, params: config.Params, kernel: str, x, y, steps: int, weights):
    """The stage's compiled model on ``kernel``, trained ``steps`` steps from
    ``weights``; (model, seconds, arithmetic)."""
    from pipeline.rnn import inputs
    from pipeline.rnn import kernels
    from pipeline.rnn import protocol
    from pipeline.stages import train

    params = dataclasses.replace(params, train=dataclasses.replace(params.train, kernel=kernel))
    net = train.compiled(name, params, total_steps=steps,
                         steps_per_call=protocol.steps_per_call(steps))
    net.set_weights(weights)
    start = time.perf_counter()
    net.fit(inputs.training(x, y, params.train), epochs=1, steps_per_epoch=steps, verbose=0)
    seconds = time.perf_counter() - start
    assert int(net.optimizer.iterations) == steps
    return net, seconds, _arithmetic(kernels.choose(params.models[name], params.train))


def _predict(net, cfg: config.ModelConfig, x):
    """Classes as evaluate computes them: the weights in Keras' stock layers."""
    from pipeline.rnn import model

    plain = getattr(net, "inner", net)  # SideBySide trains; the plain model predicts
    logits = model.stock_copy(plain, cfg).predict(x.astype("float32"), batch_size=1000,
                                                  verbose=0)
    return logits.argmax(axis=1).tolist()


def _pin_the_op() -> str:
    """One build of the op for the whole run, from a copy of its sources; the
    library's file name (the sources' key), or "" where it does not build.

    ``pipeline.rnn.native`` keys each ``build()`` on the sources as they are at
    that moment, and ``bf16_supported`` opens the library ``build()`` names: were
    the sources edited during the run (or during the first build), a second
    library would register the op twice, and TensorFlow aborts the process. A
    copy, as another clone of the project has, keeps every ``build()`` on one.
    """
    import shutil
    import tempfile

    from pipeline.rnn import native

    copy = Path(tempfile.mkdtemp(prefix="op-vs-keras-")) / "native"
    shutil.copytree(native.SOURCE.parent, copy)  # every header the source includes
    native.SOURCE = copy / native.SOURCE.name
    native.HEADERS = tuple(copy / h.name for h in native.HEADERS)
    if native.load() is None:
        return ""
    native.bf16_supported()  # the same library: built once, opened once
    return native.build().name


def run(args, params: config.Params) -> dict:
    from pipeline.rnn import side_by_side

    side_by_side.set_threads(2)  # before TensorFlow's first op: both kernels alike
    library = _pin_the_op()
    x, y = arrays.load(args.split_dir, "train")
    x, y = x[: args.train_samples], y[: args.train_samples]
    x_val, y_val = arrays.load(args.split_dir, "val")
    result = {"command": "python bench/op_vs_keras.py " + shlex.join(args.argv),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": runtime.machine(), "cxx": os.environ.get("CXX", "g++"),
              "op_library": library,
              "steps": args.steps, "train_samples": len(x),
              "batch_size": params.train.batch_size, "seed": params.train.seed,
              "val_images": len(y_val), "note": args.note, "models": {}}
    for name in args.models:
        init = _initial_weights(name, params)  # both runs start here
        keras_net, keras_s, keras_how = _train(name, params, "keras", x, y, args.steps, init)
        keras_pred = _predict(keras_net, params.models[name], x_val)
        op_net, op_s, op_how = _train(name, params, "native", x, y, args.steps, init)
        op_pred = _predict(op_net, params.models[name], x_val)
        comparison = compare(y_val.tolist(), keras_pred, op_pred)
        result["models"][name] = {
            "native": {"arithmetic": op_how, "train_s": round(op_s, 1)},
            "keras": {"arithmetic": keras_how, "train_s": round(keras_s, 1)},
            "comparison": comparison}
        print(f"{name}: op {_pct(comparison['native_val_accuracy'])}, Keras "
              f"{_pct(comparison['keras_val_accuracy'])}: {comparison['words']} "
              f"(train {op_s:.0f} s vs {keras_s:.0f} s)", flush=True)
    return result


def _initial_weights(name: str, params: config.Params):
    """Seeded initial weights of the stock model (what ``train.compiled`` draws)."""
    import keras

    from pipeline.rnn import model

    keras.utils.set_random_seed(params.train.seed)
    return model.build(params.models[name], params.dataset.image_shape,
                       params.dataset.num_classes, name, kernel="keras").get_weights()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=None, help="default: all of params.yaml's")
    ap.add_argument("--steps", type=int, default=550, help="training steps per run (550 = an epoch)")
    ap.add_argument("--train-samples", type=int, default=55_000)
    ap.add_argument("--split-dir", type=Path, default=ROOT / config.SPLIT_DIR)
    ap.add_argument("--params", type=Path, default=None, help="default: this checkout's")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "op-vs-keras.md")
    ap.add_argument("--note", default="", help="a sentence for the report, e.g. how the op was built")
    args = ap.parse_args(argv)
    args.argv = argv
    missing = [p for p in ("train", "val") if not (args.split_dir / f"{p}.npz").exists()]
    if missing:
        print(f"op_vs_keras: no {args.split_dir}/{missing[0]}.npz: create the split with "
              f"`dvc repro split`", file=sys.stderr)
        return 1
    params = config.load(args.params) if args.params else config.load_project(ROOT)
    args.models = args.models or list(params.models)
    unknown = [m for m in args.models if m not in params.models]
    if unknown:
        print(f"op_vs_keras: --models: {unknown[0]} is not in {args.params}", file=sys.stderr)
        return 1
    try:
        result = run(args, params)
    except runtime.StageError as exc:
        print(f"op_vs_keras: {exc}", file=sys.stderr)
        return 1
    write(result, args.out)
    print(f"wrote {args.out} and {args.out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
