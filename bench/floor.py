"""The fastest a training step could be on this machine with TensorFlow's matrix products.

Usage: python bench/floor.py [--models rnn lstm ...] [--rounds 3] [--out reports/bench-floor]

Why: issue 8 asks for 2x plain Keras's training throughput (or 80% of the matmul
peak where 2x would pass it). Every path tried (Keras' loops, pipeline/rnn/fused.py,
XLA, bf16, PyTorch's native kernels) lands within about 1.2x. This asks whether
the target is reachable at all, by a bound that favours it:

- the recurrent products ``h_{t-1} @ U`` (forward) and ``dz_t @ U^T`` (backward)
  of every layer and step (batch x units by units x gates*units) cannot be merged
  into bigger ones, because each needs the one before it in its layer. Their
  rate is measured here as one chain and as two independent chains at once (what
  running layers or directions side by side on the two cores could give at
  best); the faster is taken;
- every other FLOP of the step (input products, weight gradients, classifier) is
  counted at the machine's 2048 x 2048 peak, as if it were one big product;
- the element-wise gate maths, the optimizer and the input pipeline cost nothing.

The sum is a lower bound on any TensorFlow implementation's step time, so
``batch / bound`` is an upper bound on its images/s. The plain Keras reference
(``bench/train_speed.py``'s) is measured in the same run, on the same machine.
Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import speed_table  # noqa: E402  (its report)
import train_speed  # noqa: E402  (bench/train_speed.py: FLOP count, peak, child runs)

BATCH, STEPS = 100, 28


def recurrent_products(m) -> tuple[int, float]:
    """(count, FLOPs) of one training step's unmergeable recurrent products."""
    count = 2 * (2 if m.bidirectional else 1) * m.layers * STEPS  # forward + backward
    return count, count * 2.0 * BATCH * m.units * train_speed.GATES[m.cell] * m.units


def chain_seconds(units: int, gates: int, count: int, chains: int, repeats: int = 20) -> float:
    """Best time of ``count`` products (batch x units) @ (units x gates*units) and back,
    as ``chains`` independent chains in one graph (TensorFlow's default threads)."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(0)
    u = rng.normal([units, gates * units]) / units ** 0.5
    ut = rng.normal([gates * units, units]) / (gates * units) ** 0.5
    starts = [rng.normal([BATCH, units]) for _ in range(chains)]
    per_chain = count // (2 * chains)  # pairs of products per chain

    @tf.function
    def run():
        outs = []
        for h in starts:
            for _ in range(per_chain):
                h = tf.matmul(tf.matmul(h, u), ut)
            outs.append(h)
        return outs

    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        [o.numpy() for o in run()]
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--rounds", type=int, default=3, help="plain Keras measurements per model")
    ap.add_argument("--out", default="reports/bench-floor")
    ap.add_argument("--chain", nargs=4, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.chain:
        print(json.dumps({"seconds": chain_seconds(*args.chain)}))
        return

    from pipeline import config
    from pipeline import runtime

    params = config.load(ROOT / "params.yaml")
    names = args.models or list(params.models)
    me = str(Path(__file__).resolve())
    peak = train_speed._child(str(ROOT / "bench" / "train_speed.py"), "--peak",
                              "tensorflow")["gflops"]
    result = {"machine": runtime.machine(), "peak_gflops": peak, "batch": BATCH, "models": {}}
    for name in names:
        m = params.models[name]
        count, small = recurrent_products(m)
        gates = train_speed.GATES[m.cell]
        chains = {n: train_speed._child(me, "--chain", str(m.units), str(gates), str(count),
                                        str(n))["seconds"] for n in (1, 2)}
        refs = sorted(train_speed._child(str(ROOT / "bench" / "train_speed.py"), "--measure",
                                         "reference", name)["images_per_s"]
                      for _ in range(args.rounds))
        step_flops = train_speed.train_flops(m) * BATCH
        bound_s = min(chains.values()) + (step_flops - small) / (peak * 1e9)
        ref = statistics.median(refs)
        target = min(2 * ref, 0.8 * peak * 1e9 / train_speed.train_flops(m))
        result["models"][name] = {
            "recurrent_products": count, "recurrent_gflop": small / 1e9,
            "step_gflop": step_flops / 1e9, "chain_ms": {n: s * 1e3 for n, s in chains.items()},
            "bound_ms": bound_s * 1e3, "bound_images_per_s": BATCH / bound_s,
            "reference_images_per_s": ref, "reference_all": refs, "target_images_per_s": target}
        print(f"{name}: bound {BATCH / bound_s:,.0f} images/s, target {target:,.0f}", flush=True)
    write(result, Path(args.out))


def write(result: dict, out: Path) -> None:
    m = result["machine"]
    lines = [
        "# Upper bound on training throughput with TensorFlow's products",
        "",
        f"Machine: **{m['cpu_model']}**, {m['cpu_count']} cores, ISA: {m['isa_flags']}; "
        f"{m.get('kernels', '?')} kernels; TensorFlow {m['tensorflow']}. fp32 matmul peak "
        f"(2048², TensorFlow): {result['peak_gflops']:.0f} GFLOP/s. Batch {result['batch']}. "
        "Command: `python bench/floor.py`.",
        "",
        "Bound = the recurrent products (one after another within a layer; measured as one "
        "chain and as two chains at once, the faster taken) + every other FLOP at the "
        "peak; element-wise maths, optimizer and input free. Target = 2x plain Keras, or "
        "80% of the peak where 2x would pass it. Plain Keras: median of the rounds "
        "(range in brackets), measured in this run.",
        "",
        "| model | recurrent products / step | their GFLOP | step GFLOP | 1 chain ms | "
        "2 chains ms | bound ms/step | bound img/s | plain Keras img/s | target img/s "
        "| bound / plain Keras | target reachable? |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["models"].items():
        ch = {int(k): v for k, v in r["chain_ms"].items()}
        refs = r["reference_all"]
        verdict = ("not even with free element-wise maths"
                   if r["bound_images_per_s"] < r["target_images_per_s"]
                   else "not ruled out by this bound")
        lines.append(
            f"| {name} | {r['recurrent_products']} | {r['recurrent_gflop']:.2f} | "
            f"{r['step_gflop']:.2f} | {ch[1]:.1f} | {ch[2]:.1f} | {r['bound_ms']:.1f} | "
            f"{r['bound_images_per_s']:,.0f} | {r['reference_images_per_s']:,.0f} "
            f"({min(refs):,.0f}-{max(refs):,.0f}) | {r['target_images_per_s']:,.0f} | "
            f"{r['bound_images_per_s'] / r['reference_images_per_s']:.2f}x | "
            f"{verdict} |")
    speed_table.save(out, lines, result)


if __name__ == "__main__":
    main()
