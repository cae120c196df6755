"""The Markdown of ``pipeline.review.diff``: a ``Comparison`` in, tables and sentences out.

Pure functions, so the wording and the arithmetic are tested without git, DVC
or a trained model: each value carries its unit (``98.41%``, ``1 min 15 s``)
and each change its sign and unit (``+3.50 pp``, ``+0.2 s (+4%)``); ``render``
lays out the whole report and ``render_nothing`` the one-line "nothing to
compare" one. What counts as changed is decided in ``comparison``; this
module only says it.
"""

from __future__ import annotations

from pipeline import config
from pipeline.review.comparison import (EVAL_METRICS, NOISY, Comparison, champion, changed_only,
                                        is_number)

# Headline metrics of metrics/evaluate.json: (key, column label, kind of number).
ACCURACY = (("test_accuracy", "test acc", "pct"), ("val_accuracy", "val acc", "pct"),
            ("test_loss", "test loss", "loss"))
COST = (("train_wall_time_s", "train time", "s"), ("params", "params", "count"),
        ("best_epoch", "best epoch", "epoch"), ("throughput_img_s", "inference img/s", "rate"))
DASH = "—"
VALIDATION = config.VALIDATION_METRICS.as_posix()   # its ``drift``: drift_section


def _duration(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(round(s), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def fmt_value(kind: str, v) -> str:
    """One value with its unit: 98.41%, 2.3013, 4.5 s, 1,866, 3,680."""
    if not is_number(v):
        return DASH if v is None else str(v)
    return {"pct": lambda: f"{100 * v:.2f}%", "loss": lambda: f"{v:.4f}",
            "s": lambda: _duration(v), "count": lambda: f"{int(v):,}",
            "epoch": lambda: f"{v:g}", "rate": lambda: f"{v:,.0f}",
            "f1": lambda: f"{v:.3f}"}.get(kind, lambda: f"{v:.6g}")()


def fmt_delta(kind: str, old, new) -> str:
    """Signed change with its unit: +3.50 pp, -0.0061, +0.2 s (+4%), +1,648 (+88%), ±0."""
    if not (is_number(old) and is_number(new)):
        if old == new:
            return DASH
        return "new" if old is None else "removed" if new is None else "changed"
    d = new - old
    unit = {"pct": " pp", "s": " s"}.get(kind, "")
    if d == 0:
        return f"±0{unit}"
    rel = f" ({d / old:+.0%})" if old and kind in ("s", "count", "rate") else ""
    body = {"pct": lambda: f"{100 * d:+.2f}", "loss": lambda: f"{d:+.4f}",
            "s": lambda: f"{d:+.1f}", "count": lambda: f"{int(d):+,}",
            "epoch": lambda: f"{d:+g}", "rate": lambda: f"{d:+,.0f}",
            "f1": lambda: f"{d:+.3f}"}.get(kind, lambda: f"{d:+.6g}")()
    return body + unit + rel


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def headline_table(models: dict[str, dict[str, tuple]], columns, old_label: str,
                   new_label: str, changed: list[str]) -> list[str]:
    """Models as rows; old, new and signed change of each metric in ``columns``."""
    header = ["model"]
    for _, label, _ in columns:
        header += [f"{label} {old_label}", f"{label} {new_label}", "Δ"]
    rows = []
    for name, m in models.items():
        row = [f"**{name}**" if name in changed else name]
        for key, _, kind in columns:
            old, new = m.get(key, (None, None))
            row += [fmt_value(kind, old), fmt_value(kind, new), fmt_delta(kind, old, new)]
        rows.append(row)
    return _table(header, rows)


def per_class_table(models: dict[str, dict[str, tuple]], names: list[str],
                    old_label: str, new_label: str) -> list[str]:
    classes = sorted({k.split(".")[1] for n in names for k in models[n]
                      if k.startswith("per_class.") and k.endswith(".f1")}, key=_class_order)
    rows = []
    for name in names:
        pairs = [models[name].get(f"per_class.{c}.f1", (None, None)) for c in classes]
        rows.append([f"{name} {old_label}"] + [fmt_value("f1", o) for o, _ in pairs])
        rows.append([f"{name} {new_label}"] + [fmt_value("f1", n) for _, n in pairs])
        rows.append([f"{name} Δ"] + [fmt_delta("f1", o, n) for o, n in pairs])
    return _table(["model"] + classes, rows)


def _class_order(c: str):
    return (0, int(c)) if c.isdigit() else (1, c)


def params_table(rows: list[dict], old_label: str, new_label: str) -> list[str]:
    def show(v):
        return DASH if v is None else f"`{v}`"
    return _table(["param", old_label, new_label, "change"],
                  [[f"`{r['param']}`" + ("" if r["file"] == "params.yaml" else f" ({r['file']})"),
                    show(r["old"]), show(r["new"]), r["change"]] for r in rows])


def metrics_table(changed: dict[str, dict[str, tuple]], old_label: str,
                  new_label: str) -> list[str]:
    rows = []
    for path, metrics in sorted(changed.items()):
        timing = path.startswith(config.RUNTIME_DIR.as_posix())
        for key, (old, new) in sorted(metrics.items()):
            mark = " (timing)" if timing or key.split(".")[-1] in NOISY else ""
            rows.append([f"`{path}`", f"`{key}`{mark}", fmt_value("", old), fmt_value("", new),
                         fmt_delta("", old, new)])
    return _table(["file", "metric", old_label, new_label, "change"], rows)


# ---------------------------------------------------------------- the report

def _quote(notes: list[str]) -> list[str]:
    """Each note its own paragraph of one block quote."""
    return ["\n>\n".join(f"> {n}" for n in notes), ""] if notes else []


def drift_section(pairs: dict[str, tuple], old_label: str, new_label: str) -> list[str]:
    """validate's drift check at both revisions (the ``drift`` of metrics/validate.json)."""
    from pipeline.data.drift import STATISTICS

    def side(i: int) -> str:
        d = {k.removeprefix("drift."): v[i] for k, v in pairs.items() if k.startswith("drift.")}
        if not d.get("checked"):
            return f"not checked ({d.get('reason') or 'no drift check at this revision'})"
        verdict = ("passed" if d.get("passed") else "**drift, flagged**" if d.get("flagged")
                   else "**drift: the run stopped**")
        return (f"{verdict} against the champion in `{d.get('reference.from')}` (model "
                f"{d.get('reference.model')}, run {d.get('reference.run_id') or 'not published'})")

    def cell(name: str, i: int) -> str:
        value, passed = (pairs.get(f"drift.statistics.{name}.{k}", (None, None))[i]
                         for k in ("value", "passed"))
        return DASH if value is None else f"{value:.4f}" + (" pass" if passed else " **drift**")
    names = [s for s in STATISTICS if any(k.startswith(f"drift.statistics.{s}.") for k in pairs)]
    lines = ["## Data drift (validate)", "", f"{old_label}: {side(0)}.", "",
             f"{new_label}: {side(1)}.", ""]
    if names:
        limits = {s: [v for v in pairs.get(f"drift.statistics.{s}.threshold", ()) if v is not None]
                  for s in names}
        lines += _table(["statistic", "threshold", old_label, new_label],
                        [[f"`{s}`", " → ".join(f"{v:g}" for v in dict.fromkeys(limits[s])),
                          cell(s, 0), cell(s, 1)] for s in names])
        lines.append("")
    return lines


def render(c: Comparison, old_label: str, new_label: str = "workspace") -> str:
    from pipeline.review import evidence

    models, changed, real = c.models, c.changed, c.real
    noise = [n for n in changed if n not in real]
    champ_old, champ_new = champion(c.pairs.get(EVAL_METRICS, {}))
    reran = [s["stage"] for s in c.stages["reran"]]
    lines = [f"# Pipeline diff: `{c.rev}` → {new_label}", "",
             f"Base: {c.rev_desc}. Compared: {c.new_desc}.", ""]
    lines += _quote(c.notes)

    same = [n for n in models if n not in changed]
    summary = [f"Results changed for **{', '.join(real)}**" if real
               else "No model's results changed significantly" if noise
               else "No model's results changed"]
    if noise:
        summary[0] += "; within noise: " + ", ".join(
            f"{n} ({evidence.words(c.paired[n]).split(':')[0]})" for n in noise)
    if changed and same:
        summary[0] += f"; {', '.join(same)} unchanged"
    machine = evidence.machine_note(*c.machines)
    if machine and machine.startswith("**"):
        summary.append("**base and head ran on different kinds of machine**")
    summary.append(f"champion **{champ_new}** (unchanged)" if champ_old == champ_new
                   else f"**champion changed: {champ_old} → {champ_new}**")
    if c.pairs.get(VALIDATION, {}).get("drift.flagged", (None, None))[1]:
        summary.append("**the data drifted (flagged by validate)**")
    summary.append(f"{len(c.params)} param{'s' * (len(c.params) != 1)} changed")
    summary.append(f"DVC reran {', '.join(f'`{s}`' for s in reran)}" if reran
                   else "no stage was rerun")
    if c.stale:
        summary.append(f"**out of date, not rerun: {', '.join(f'`{s}`' for s in c.stale)}**")
    lines += ["**Summary:** " + "; ".join(summary) + ".", ""]
    if machine:
        lines += [machine, ""]

    lines += ["## Params", ""]
    lines += (params_table(c.params, old_label, new_label) if c.params
              else [f"No param differs from `{c.rev}`."]) + [""]

    lines += ["## Stages DVC reran", "",
              f"Stages whose `dvc.lock` entry differs from `{c.rev}`'s: their command, "
              "params or dependencies changed, so `dvc repro` ran them and recorded new "
              "outputs.", ""]
    if c.stages["reran"]:
        lines += _table(["stage", "what changed", "run"],
                        [[f"`{s['stage']}`", "; ".join(s["why"]),
                          "committed" if s["committed"] else "in the workspace, not committed"]
                         for s in c.stages["reran"]])
    else:
        lines.append("None.")
    if c.stages["unchanged"]:
        lines += ["", "Not rerun: " + ", ".join(f"`{s}`" for s in c.stages["unchanged"]) + "."]
    if c.stages["removed"]:
        lines += ["", "Removed: " + ", ".join(f"`{s}`" for s in c.stages["removed"]) + "."]
    lines.append("")
    if c.stale:
        lines += ["**Out of date:** these stages' inputs changed since their last run and they "
                  "were not rerun, so their metrics below predate the change "
                  "(run `dvc repro`):", ""]
        lines += [f"- `{s}`: {'; '.join(why)}" for s, why in c.stale.items()] + [""]

    lines += ["## Champion", "",
              (f"**{champ_new}**, unchanged." if champ_old == champ_new
               else f"**Changed: {champ_old} → {champ_new}.**")
              + " The champion is the model with the best validation accuracy.", ""]

    lines += drift_section(c.pairs.get(VALIDATION, {}), old_label, new_label)

    lines += ["## Accuracy", "", "Test set, on each model's best-validation checkpoint. "
              "Models in bold changed significantly (see the paired test below); "
              "pp = percentage points.", ""]
    lines += headline_table(models, ACCURACY, old_label, new_label, real) + [""]
    lines += evidence.section({n: c.paired.get(n, "not computed") for n in changed})
    lines += ["## Training cost", ""]
    lines += headline_table(models, COST, old_label, new_label, real)
    lines += ["", "Images/s is re-measured whenever `evaluate` runs, so it moves for every "
              "model; it does not make a model count as changed.", ""]

    if changed:
        lines += ["## Per-class F1 (test) of the changed models", ""]
        lines += per_class_table(models, changed, old_label, new_label) + [""]
    for title, name in c.images:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    if c.plots_html:
        lines += [f"All plots of both revisions, interactive (`dvc plots diff {c.rev}`): "
                  f"`{c.plots_html}` beside this report (in CI: the workflow run's "
                  "`pr-report` artifact).", ""]

    changed_metrics = changed_only(c.pairs)
    count = sum(len(m) for m in changed_metrics.values())
    lines += [f"<details><summary>All changed metrics (<code>dvc metrics diff {c.rev}</code>): "
              f"{count}</summary>", ""]
    lines += (metrics_table(changed_metrics, old_label, new_label) if count
              else ["No metric changed."])
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def render_nothing(message: str, rev: str, params: list[dict], notes: list[str],
                   old_label: str, new_label: str = "workspace") -> str:
    lines = [f"# Pipeline diff: `{rev}` → {new_label}", ""]
    lines += _quote(notes)
    lines += [f"**{message}**", ""]
    if params:
        lines += ["## Params", ""] + params_table(params, old_label, new_label) + [""]
    return "\n".join(lines)
