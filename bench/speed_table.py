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


def peak_of(result: dict, pk: dict) -> float:
    """The peak a share is of: bf16 TensorFlow's where the op's products are bf16,
    else the larger of TensorFlow's and NumPy's fp32 (on Eigen, TensorFlow's own
    product is the slower, and the op's fp32 products outrun it)."""
    if _precision(result) == "bf16":
        return pk["bf16"]
    return max(pk[k] for k in ("tensorflow", "numpy") if pk.get(k))


def _peak_name(result: dict) -> str:
    return ("TF bf16 peak" if _precision(result) == "bf16"
            else "fp32 peak (the larger of TF's and NumPy's)")


def share(result: dict, r: dict) -> float:
    """The project's share (%, median of the rounds) of the peak it is held to."""
    return statistics.median(_shares(result, r, lambda pk: peak_of(result, pk)))


def _share(result: dict, r: dict) -> str:
    shares = _shares(result, r, lambda pk: peak_of(result, pk))
    if len(shares) == 1:
        return f"{shares[0]:.0f}%"
    return f"{statistics.median(shares):.0f}% ({min(shares):.0f}-{max(shares):.0f}%)"


def _shares(result: dict, r: dict, pick) -> list[float]:
    """Each round's project GFLOP/s in % of the peak ``pick`` takes from that round's
    peaks, measured among the model's own blocks (lock-step runs); else the median
    images/s in % of the run's one peak."""
    mflop, rounds = r["train_mflop_per_image"], r["project"].get("rounds")
    if r.get("peak_rounds") and rounds:
        peaks = [pick(pk) for pk in r["peak_rounds"]]
    else:
        rounds, peaks = [r["project"]["images_per_s"]], [pick(result["peak_gflops"])]
    return [100 * rate * mflop / 1e3 / pk for rate, pk in zip(rounds, peaks)]


def ratio(row: dict, baseline: str = "reference") -> float:
    """The project's speed over a baseline's: the median of the rounds' ratios where
    the paths took turns (lock-step), else the ratio of the medians."""
    got = row[baseline]
    if got.get("ratio_rounds"):
        return statistics.median(got["ratio_rounds"])
    return row["project"]["images_per_s"] / got["images_per_s"]


def _ratio_cell(row: dict, baseline: str = "reference", key: str = "ratio_rounds") -> str:
    rounds = row[baseline].get(key) or []
    spread = f" ({min(rounds):.2f}-{max(rounds):.2f}x)" if len(rounds) > 1 else ""
    middle = statistics.median(rounds) if rounds else ratio(row, baseline)
    return f"{middle:.2f}x{spread}"


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
        f"fp32 matmul peak at the run's start (2048², all cores): TensorFlow "
        f"{pk['tensorflow']:.0f} GFLOP/s, NumPy {pk['numpy']:.0f} GFLOP/s"
        + (f"; bf16 matmul peak (TensorFlow) {pk['bf16']:.0f} GFLOP/s"
           if _precision(result) == "bf16" else "")
        + f". Project kernel: `{result['kernel']}`"
        + (f" ({result['resolved']})." if result.get("resolved") else "."),
        f"Every path of a model timed alike: {_window(result)} of batch {result['batch']} "
        f"after {result['warmup']} warm-up steps in one training loop, the clock from the end "
        "of the last warm-up step to the end of the last step (input conversion outside), "
        "each in a fresh process"
        + ("; the paths of a model (and the matmul peak) in lock-step, taking turns in "
           f"blocks of {result['block']} steps so that the machine's drifts hit all alike "
           "(bench/lockstep.py). A path's images/s is its fastest block's (its speed when "
           "nothing interrupts it: on this VM an interruption only adds time, and hits "
           "plain Keras and PyTorch harder than the op), a ratio the median of the rounds' "
           "ratios, the whole windows' below the table"
           if result.get("timing") == "lockstep" else "")
        + f"; median of {result['repeats']} rounds (range in brackets). "
        f"Command: `{result.get('command', 'python bench/train_speed.py')}`"
        " (`make bench` runs it without arguments)"
        + (f"; tables from its recorded blocks: `{result['table_command']}`"
           if result.get("table_command") else "") + ".",
        "",
        "| model | MFLOP/image | timed steps | plain Keras img/s | project img/s | ratio "
        f"| project GFLOP/s | % of {_peak_name(result)}, each round's "
        "| PyTorch img/s | project / PyTorch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["models"].items():
        gf = r["project"]["images_per_s"] * r["train_mflop_per_image"] / 1e3
        torch = r.get("torch", {}).get("images_per_s")
        lines.append(
            f"| {name} | {r['train_mflop_per_image']:.1f} | {_steps(result, name):,} | "
            f"{_rate(r['reference'])} | "
            f"{_rate(r['project'])} | {_ratio_cell(r)} | {gf:.1f} | "
            f"{_share(result, r)} | "
            + (f"{_rate(r['torch'])} | {_ratio_cell(r, 'torch')} |" if torch else "- | - |"))
    if result.get("timing") == "lockstep":
        lines += ["", "Over whole windows (every block, interruptions included), median of "
                  "the rounds (range): project / plain Keras "
                  + ", ".join(f"{name} {_ratio_cell(r, 'reference', 'window_ratio_rounds')}"
                              for name, r in result["models"].items())
                  + ("; project / PyTorch " + ", ".join(
                      f"{name} {_ratio_cell(r, 'torch', 'window_ratio_rounds')}"
                      for name, r in result["models"].items())
                     if all("torch" in r for r in result["models"].values()) else "") + "."]
        kinds = [k for k in ("tensorflow", "numpy", "bf16")
                 if all(k in pk for r in result["models"].values() for pk in r["peak_rounds"])]
        lines += ["", "Matmul peaks measured among each model's blocks (GFLOP/s, "
                  + " / ".join({"tensorflow": "TensorFlow fp32", "numpy": "NumPy fp32",
                                "bf16": "TensorFlow bf16"}[k] for k in kinds)
                  + ", the fastest block, per round): "
                  + "; ".join(f"{name} " + ", ".join(
                      " / ".join(f"{pk[k]:.0f}" for k in kinds) for pk in r["peak_rounds"])
                      for name, r in result["models"].items()) + "."]
    says = {"before": f"the project's path at {result.get('before')}",
            "fp32": "the project's path with `train.precision: fp32`",
            "fused": "the project's path on pipeline.rnn.fused's TensorFlow ops (no C++ op)",
            "whole": "the project's path with `train.batch_parts: 1`",
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
                f"{_rate(r[k])}, {r[k]['images_per_s'] / ref:.2f}x"
                + (f"; the project {_ratio_cell(r, k)} its speed"  # rounds' own ratios
                   if k == "before" and r[k].get("ratio_rounds") else "")
                for k in variants) + " |")
    save(out, lines, result)


def save(out: Path, lines: list[str], result: dict) -> None:
    """``<out>.md`` (the table, also printed) and ``<out>.json`` (every number)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(lines))


def agreement(first: dict, second: dict, out: Path, limit: float = 3.0) -> bool:
    """Two runs of the same command side by side. Judged against ``limit`` (%): the
    bench's results, each a speed over another measured in the same blocks (the
    ratios, the shares of the peak). Shown beside them, not judged: each path's
    images/s and the peaks, which are the machine's speed that hour."""
    why = same_command(first, second)
    if why:
        raise SystemExit(f"bench: {why}; compare two runs of one command on one machine")
    m = first["machine"]
    lines = ["# Two runs of the training bench: do they agree?", "",
             f"Machine: **{m['cpu_model']}**, {m['cpu_count']} cores, ISA: {m['isa_flags']}. "
             f"Commands: `{first.get('command')}` then `{second.get('command')}`; "
             f"{_window(first)} after {first['warmup']} warm-up steps, "
             f"median of {first['repeats']} rounds each. Limit: {limit:g}% on the results "
             "(ratios, shares of the peak); images/s are the machine's speed, shown.", "",
             "| model | result | first | second | difference |", "|---|---|---|---|---|"]
    worst, shown = 0.0, []
    for name, row in first["models"].items():
        other = second["models"].get(name)
        if not other:
            continue
        for what, get, unit in _results(first, row):
            a, b = get(first, row), get(second, other)
            diff = 100 * (b - a) / a
            worst = max(worst, abs(diff))
            lines.append(f"| {name} | {what} | {a:.2f}{unit} | {b:.2f}{unit} | {diff:+.1f}% |")
        for impl, got in row.items():
            if isinstance(got, dict) and isinstance(other.get(impl), dict):
                a, b = got["images_per_s"], other[impl]["images_per_s"]
                shown.append(f"| {name} | {impl} | {a:,.0f} | {b:,.0f} | "
                             f"{100 * (b - a) / a:+.1f}% |")
    ok = worst <= limit
    lines += ["", f"Largest difference {worst:.1f}%: "
              + (f"every result within {limit:g}%." if ok else f"**above {limit:g}%**."),
              "", "Each path's images/s (not judged: the machine's speed):", "",
              "| model | path | first img/s | second img/s | difference |",
              "|---|---|---|---|---|", *shown,
              "", "The machine's own speed in each run (TensorFlow's fp32 matmul GFLOP/s per "
              "round; a spread here is the machine's, not the window's): "
              + "; ".join(_peaks(run) for run in (first, second)) + "."]
    save(out, lines, {"first": first, "second": second, "worst_pct": worst, "ok": ok})
    return ok


def _results(run: dict, row: dict) -> list:
    """What a run concludes about a model: (name, how to read it, unit) each."""
    got = [("project / plain Keras", lambda _, r: ratio(r), "x")]
    if isinstance(row.get("torch"), dict):
        got.append(("project / PyTorch", lambda _, r: ratio(r, "torch"), "x"))
    got.append((f"% of {_peak_name(run)}", share, "%"))
    return got


def _peaks(run: dict) -> str:
    rounds = ([pk["tensorflow"] for r in run["models"].values() for pk in r["peak_rounds"]]
              if run.get("timing") == "lockstep" else
              run.get("peak_rounds") or [run["peak_gflops"]["tensorflow"]])
    return (f"`{run.get('command')}` " + " / ".join(f"{p:.0f}" for p in rounds)
            + f" ({100 * (max(rounds) / min(rounds) - 1):.0f}% apart)")
