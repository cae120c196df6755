"""bench/train_speed.py's report: a run's table (``<out>.md``) and numbers (``<out>.json``).

Why its own module: the measuring script stays about measuring; what the table
says (ratios, shares of the peak against each round's own peak, the paths that
did not help) is tested here without running anything.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def _rate(m: dict) -> str:
    rates = m.get("all") or [m["images_per_s"]]
    return f"{m['images_per_s']:,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"


def _precision(result: dict) -> str:
    """The precision of the project's products, whose peak its share is taken of."""
    return result.get("project_precision", "fp32")


def _share(result: dict, r: dict) -> str:
    """The project's share of TensorFlow's peak in the precision its products use:
    per round against that round's peak where the rounds measured one (median,
    range), else against the one peak."""
    bf16 = _precision(result) == "bf16"
    mflop, rounds = r["train_mflop_per_image"], r["project"].get("rounds")
    peaks = result.get("peak_rounds_bf16" if bf16 else "peak_rounds")
    if not (peaks and rounds):
        peak = result["peak_gflops"]["bf16" if bf16 else "tensorflow"]
        return f"{100 * r['project']['images_per_s'] * mflop / 1e3 / peak:.0f}%"
    shares = [100 * rate * mflop / 1e3 / pk for rate, pk in zip(rounds, peaks)]
    return f"{statistics.median(shares):.0f}% ({min(shares):.0f}-{max(shares):.0f}%)"


def _steps(result: dict, name: str) -> int:
    """A model's timed steps (one number for every model in runs before equal-work windows)."""
    steps = result["steps"]
    return steps[name] if isinstance(steps, dict) else steps


def _window(result: dict) -> str:
    if result.get("gflop"):
        return (f"the steps holding {result['gflop']:,.0f} GFLOP of training (per model "
                "below)")
    steps = result["steps"]
    return f"{steps if not isinstance(steps, dict) else max(steps.values())} steps"


def same_command(first: dict, second: dict) -> str:
    """Why two runs are not the same measurement (empty when they are): another
    machine, command (``--out`` aside), window, warm-up or number of rounds."""
    def command(run):
        words, out = (run.get("command") or "").split(), []
        for i, w in enumerate(words):
            if w != "--out" and (i == 0 or words[i - 1] != "--out"):
                out.append(w)
        return out
    for what, get in (("machine", lambda r: r["machine"]), ("command", command),
                      ("timed steps", lambda r: r["steps"]), ("warm-up", lambda r: r["warmup"]),
                      ("rounds", lambda r: r["repeats"])):
        if get(first) != get(second):
            return f"the two runs differ in {what}: {get(first)} vs {get(second)}"
    return ""


def write(result: dict, out: Path) -> None:
    m = result["machine"]
    pk = result["peak_gflops"]
    lines = [
        "# Training throughput: project vs plain Keras vs PyTorch",
        "",
        f"Machine: **{m['cpu_model']}**, {m['cpu_count']} cores, ISA: {m['isa_flags']}; "
        f"TensorFlow {m['tensorflow']} ({m.get('kernels', 'kernels not recorded')}), "
        f"Python {m['python']}."
        + (" The ISA is capped by the settings in the command: another CPU's path, emulated "
           "on this one (its ISA line lists flags the run did not use)."
           if "=" in result.get("command", "").split(" python")[0] else ""),
        f"fp32 matmul peak (2048², all cores): TensorFlow {pk['tensorflow']:.0f} GFLOP/s, "
        f"NumPy {pk['numpy']:.0f} GFLOP/s"
        + (", TensorFlow's at the start of each round {}".format(
            " / ".join(f"{p:.0f}" for p in result["peak_rounds"]))
           if result.get("peak_rounds") else "")
        + (f"; bf16 matmul peak (TensorFlow) {pk['bf16']:.0f} GFLOP/s"
           + (", at the start of each round {}".format(
               " / ".join(f"{p:.0f}" for p in result["peak_rounds_bf16"]))
              if result.get("peak_rounds_bf16") else "")
           if _precision(result) == "bf16" else "")
        + f". Project kernel: `{result['kernel']}`"
        + (f" ({result['resolved']})." if result.get("resolved") else "."),
        f"Every path of a model timed alike: {_window(result)} of batch {result['batch']} "
        f"after {result['warmup']} warm-up steps in one training loop, the clock from the end "
        "of the last warm-up step to the end of the last step (input conversion outside), "
        "each in a fresh process; median of "
        f"{result['repeats']} interleaved rounds (range in brackets). "
        f"Command: `{result.get('command', 'python bench/train_speed.py')}`"
        " (`make bench` runs it without arguments).",
        "",
        "| model | MFLOP/image | timed steps | plain Keras img/s | project img/s | ratio "
        f"| project GFLOP/s | % of TF {_precision(result)} peak (of each round's) "
        "| PyTorch img/s | project / PyTorch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["models"].items():
        ref, ours = r["reference"]["images_per_s"], r["project"]["images_per_s"]
        gf = ours * r["train_mflop_per_image"] / 1e3
        torch = r.get("torch", {}).get("images_per_s")
        lines.append(
            f"| {name} | {r['train_mflop_per_image']:.1f} | {_steps(result, name):,} | "
            f"{_rate(r['reference'])} | "
            f"{_rate(r['project'])} | {ours / ref:.2f}x | {gf:.1f} | "
            f"{_share(result, r)} | "
            + (f"{_rate(r['torch'])} | {ours / torch:.2f}x |" if torch else "- | - |"))
    if _precision(result) == "fp32":  # the larger of the two libraries' fp32 products
        lib, best = max(((k, pk[k]) for k in ("tensorflow", "numpy") if pk.get(k)),
                        key=lambda kv: kv[1])
        lines += ["", f"The project's GFLOP/s against the larger fp32 matmul peak of the run "
                  f"({'NumPy' if lib == 'numpy' else 'TensorFlow'}'s, {best:.0f} GFLOP/s): "
                  + ", ".join(f"{name} {100 * r['project']['images_per_s'] * r['train_mflop_per_image'] / 1e3 / best:.0f}%"
                              for name, r in result["models"].items()) + "."]
    says = {"before": f"the project's path at {result.get('before')}",
            "fp32": "the project's path with `train.precision: fp32`",
            "fused": "the project's path on pipeline.rnn.fused's TensorFlow ops (no C++ op)",
            "glibc": "the project's path without pipeline.rnn.heap",
            "xla": "plain Keras with `jit_compile=True`", "bf16": "plain Keras, `mixed_bfloat16`"}
    variants = [k for k in says if any(k in r for r in result["models"].values())]
    if variants:
        lines += ["", "Other paths (img/s, ratio to plain Keras): "
                  + "; ".join(f"{k} = {says[k]}" for k in variants) + ".", "",
                  "| model | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
        for name, r in result["models"].items():
            ref = r["reference"]["images_per_s"]
            lines.append(f"| {name} | " + " | ".join(
                f"{_rate(r[k])}, {r[k]['images_per_s'] / ref:.2f}x" for k in variants) + " |")
    save(out, lines, result)


def save(out: Path, lines: list[str], result: dict) -> None:
    """``<out>.md`` (the table, also printed) and ``<out>.json`` (every number)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(lines))


def agreement(first: dict, second: dict, out: Path, limit: float = 3.0) -> bool:
    """Two runs of the same command side by side: each median and how far the
    second is from the first, in %; whether every one is within ``limit``."""
    why = same_command(first, second)
    if why:
        raise SystemExit(f"bench: {why}; compare two runs of one command on one machine")
    m = first["machine"]
    lines = ["# Two runs of the training bench: do they agree?", "",
             f"Machine: **{m['cpu_model']}**, {m['cpu_count']} cores, ISA: {m['isa_flags']}. "
             f"Commands: `{first.get('command')}` then `{second.get('command')}`; "
             f"{_window(first)} after {first['warmup']} warm-up steps, "
             f"median of {first['repeats']} rounds each. Limit: {limit:g}%.", "",
             "| model | path | first img/s | second img/s | difference |",
             "|---|---|---|---|---|"]
    worst = 0.0
    for name, row in first["models"].items():
        for impl, got in row.items():
            other = second["models"].get(name, {}).get(impl)
            if not isinstance(got, dict) or not other:
                continue
            a, b = got["images_per_s"], other["images_per_s"]
            diff = 100 * (b - a) / a
            worst = max(worst, abs(diff))
            lines.append(f"| {name} | {impl} | {a:,.0f} | {b:,.0f} | {diff:+.1f}% |")
        if all(isinstance(run["models"].get(name, {}).get(k), dict)
               for run in (first, second) for k in ("project", "reference")):
            a, b = (_ratio(run["models"][name]) for run in (first, second))
            diff = 100 * (b - a) / a
            worst = max(worst, abs(diff))
            lines.append(f"| {name} | ratio project / plain Keras | {a:.2f}x | {b:.2f}x | "
                         f"{diff:+.1f}% |")
    ok = worst <= limit
    lines += ["", f"Largest difference {worst:.1f}%: "
              + (f"every median within {limit:g}%." if ok else f"**above {limit:g}%**."),
              "", "The machine's own speed in each run (TensorFlow's fp32 matmul GFLOP/s at "
              "the start of each round; a spread here is the machine's, not the window's): "
              + "; ".join(_peaks(run) for run in (first, second)) + "."]
    save(out, lines, {"first": first, "second": second, "worst_pct": worst, "ok": ok})
    return ok


def _ratio(row: dict) -> float:
    return row["project"]["images_per_s"] / row["reference"]["images_per_s"]


def _peaks(run: dict) -> str:
    rounds = run.get("peak_rounds") or [run["peak_gflops"]["tensorflow"]]
    return (f"`{run.get('command')}` " + " / ".join(f"{p:.0f}" for p in rounds)
            + f" ({100 * (max(rounds) / min(rounds) - 1):.0f}% apart)")
