"""The Markdown of ``pipeline.review.diff``: DVC's JSON in, tables and sentences out.

Pure functions, so the wording and the arithmetic are tested on small JSON
samples without git, DVC or a trained model: ``dvc params diff --json`` and
``dvc metrics diff --all --json`` become tables with old, new and a signed
change with its unit (``+3.50 pp``, ``+0.2 s (+4%)``); two ``dvc.lock`` files
become the list of stages DVC reran and why; ``dvc status --json`` becomes the
stages that changed without a rerun.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline import config

EVAL_METRICS = config.EVAL_METRICS.as_posix()

# Headline metrics of metrics/evaluate.json: (key, column label, kind of number).
ACCURACY = (("test_accuracy", "test acc", "pct"), ("val_accuracy", "val acc", "pct"),
            ("test_loss", "test loss", "loss"))
COST = (("train_wall_time_s", "train time", "s"), ("params", "params", "count"),
        ("best_epoch", "best epoch", "epoch"), ("throughput_img_s", "images/s", "rate"))
# Re-measured every time `evaluate` runs, so it moves for every model; it is
# shown but does not make a model count as changed.
NOISY = ("throughput_img_s",)
DASH = "—"


# ---------------------------------------------------------------- parsing

def parse_params_diff(raw: dict) -> list[dict]:
    """``dvc params diff --json`` -> rows ``{file, param, old, new, change}``."""
    rows = []
    for path, params in raw.items():
        for key, v in sorted(params.items()):
            old, new = v.get("old"), v.get("new")
            rows.append({"file": path, "param": key, "old": old, "new": new,
                         "change": _param_change(old, new)})
    return rows


def _param_change(old, new) -> str:
    if old is None:
        return "added"
    if new is None:
        return "removed"
    if _is_number(old) and _is_number(new):
        d = new - old
        rel = f" ({d / old:+.0%})" if old else ""
        return f"{d:+g}{rel}"
    return "changed"


def metric_pairs(raw: dict) -> dict[str, dict[str, tuple]]:
    """``dvc metrics diff --json`` -> ``{file: {metric: (old, new)}}``."""
    return {path: {key: (v.get("old"), v.get("new")) for key, v in metrics.items()}
            for path, metrics in raw.items()}


def changed_only(pairs: dict[str, dict[str, tuple]]) -> dict[str, dict[str, tuple]]:
    out = {path: {k: on for k, on in m.items() if on[0] != on[1]} for path, m in pairs.items()}
    return {path: m for path, m in out.items() if m}


def model_metrics(evaluate_pairs: dict[str, tuple],
                  order: list[str] | tuple[str, ...] = ()) -> dict[str, dict[str, tuple]]:
    """``models.<name>.<metric...>`` keys of evaluate.json -> ``{name: {metric: (old, new)}}``.

    Models come in ``order`` (params.yaml's), then any others (removed ones) by name.
    """
    models: dict[str, dict[str, tuple]] = {}
    for key, pair in sorted(evaluate_pairs.items()):
        parts = key.split(".")
        if len(parts) >= 3 and parts[0] == "models":
            models.setdefault(parts[1], {})[".".join(parts[2:])] = pair
    ranked = [n for n in order if n in models] + sorted(n for n in models if n not in order)
    return {n: models[n] for n in ranked}


def champion(evaluate_pairs: dict[str, tuple]) -> tuple:
    return evaluate_pairs.get("champion", (None, None))


def changed_models(models: dict[str, dict[str, tuple]]) -> list[str]:
    """Models whose results differ; timings that are re-measured anyway do not count."""
    return [name for name, m in models.items()
            if any(old != new for key, (old, new) in m.items() if key not in NOISY)]


def _flatten(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _by_path(entries) -> dict[str, dict]:
    return {e["path"]: {k: v for k, v in e.items() if k != "path"} for e in entries or ()}


def _lock_params(entry: dict) -> dict:
    """A stage's params in dvc.lock, flat: ``models.gru.units``; other files prefixed."""
    flat = {}
    for path, values in (entry.get("params") or {}).items():
        for key, v in _flatten(values).items():
            flat[key if path == "params.yaml" else f"{path}:{key}"] = v
    return flat


def lock_stages(lock: dict | None) -> dict[str, dict]:
    return dict((lock or {}).get("stages") or {})


def stage_changes(old_lock: dict | None, new_lock: dict | None,
                  head_lock: dict | None = None) -> dict:
    """Compare two ``dvc.lock`` files stage by stage.

    Returns ``{"reran": [{stage, why, committed}], "removed": [...], "unchanged": [...]}``.
    ``why`` names what changed in the entry (command, params keys, dependency
    paths); ``committed`` is whether the new entry is already in ``head_lock``
    (the run was committed) or only in the workspace.
    """
    old, new, head = lock_stages(old_lock), lock_stages(new_lock), lock_stages(head_lock)
    reran, unchanged = [], []
    for name, entry in new.items():
        before = old.get(name)
        if before == entry:
            unchanged.append(name)
            continue
        why = []
        if before is None:
            why.append("new stage")
        else:
            if before.get("cmd") != entry.get("cmd"):
                why.append("command")
            p_old, p_new = _lock_params(before), _lock_params(entry)
            keys = sorted(k for k in set(p_old) | set(p_new) if p_old.get(k) != p_new.get(k))
            if keys:
                why.append("params " + _some(keys))
            d_old, d_new = _by_path(before.get("deps")), _by_path(entry.get("deps"))
            deps = sorted(p for p in set(d_old) | set(d_new) if d_old.get(p) != d_new.get(p))
            if deps:
                why.append("deps " + _some(deps))
            if not why:
                why.append(_same_inputs(before, entry))
        reran.append({"stage": name, "why": why, "committed": head.get(name) == entry})
    return {"reran": reran, "removed": [n for n in old if n not in new], "unchanged": unchanged}


def _same_inputs(before: dict, entry: dict) -> str:
    """Why an entry with unchanged inputs differs: often only its timing record (another
    machine, `dvc repro -f`), which is not a change of its results."""
    o_old, o_new = _by_path(before.get("outs")), _by_path(entry.get("outs"))
    differ = sorted(p for p in set(o_old) | set(o_new) if o_old.get(p) != o_new.get(p))
    if differ and all(p.startswith(config.RUNTIME_DIR.as_posix() + "/") for p in differ):
        return "inputs unchanged; data outputs identical (only its timing record differs)"
    return "outputs only (rerun with unchanged inputs, e.g. `dvc repro -f`)"


def _some(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(f"`{i}`" for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def stale_stages(status: dict, lock: dict | None) -> dict[str, list[str]]:
    """Stages whose params, command or source changed since their last run (``dvc status --json``).

    Dependencies that are another stage's outputs, and missing data ("deleted",
    "not in cache", as on a fresh clone), are ignored: they are consequences,
    not causes, and would flag everything on a machine without the data.
    """
    outs = [o["path"] for e in lock_stages(lock).values() for o in e.get("outs") or ()]

    def derived(path: str) -> bool:
        return any(path == o or o.startswith(path + "/") or path.startswith(o + "/")
                   for o in outs)

    stale = {}
    for stage, items in (status or {}).items():
        why = []
        for item in items if isinstance(items, list) else [items]:
            if item == "changed command":
                why.append("command")
            if not isinstance(item, dict):
                continue
            for path, state in (item.get("changed deps") or {}).items():
                if isinstance(state, dict):
                    why.append("params " + _some(sorted(state)))
                elif state in ("modified", "new") and not derived(path):
                    why.append(f"`{path}` {state}")
        if why:
            stale[stage] = why
    return stale


# ---------------------------------------------------------------- formatting

def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _duration(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(round(s), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def fmt_value(kind: str, v) -> str:
    """One value with its unit: 98.41%, 2.3013, 4.5 s, 1,866, 3,680."""
    if not _is_number(v):
        return DASH if v is None else str(v)
    return {"pct": lambda: f"{100 * v:.2f}%", "loss": lambda: f"{v:.4f}",
            "s": lambda: _duration(v), "count": lambda: f"{int(v):,}",
            "epoch": lambda: f"{v:g}", "rate": lambda: f"{v:,.0f}",
            "f1": lambda: f"{v:.3f}"}.get(kind, lambda: f"{v:.6g}")()


def fmt_delta(kind: str, old, new) -> str:
    """Signed change with its unit: +3.50 pp, -0.0061, +0.2 s (+4%), +1,648 (+88%), ±0."""
    if not (_is_number(old) and _is_number(new)):
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

@dataclass
class Comparison:
    """Everything the report shows, gathered from git and dvc (see ``collect``)."""
    rev: str
    rev_desc: str
    new_desc: str
    params: list[dict]
    pairs: dict[str, dict[str, tuple]]
    stages: dict
    stale: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)
    plots_html: str | None = None
    order: list[str] = field(default_factory=list)  # models in params.yaml order
    paired: dict = field(default_factory=dict)  # model -> stats.Paired | reason (diff_stats)
    machines: tuple = (None, None)  # evaluate.json's machine record at base and head

    @property
    def models(self) -> dict[str, dict[str, tuple]]:
        return model_metrics(self.pairs.get(EVAL_METRICS, {}), self.order)

    @property
    def changed(self) -> list[str]:
        return changed_models(self.models)

    @property
    def real(self) -> list[str]:
        """Changed models whose change is significant or could not be tested."""
        from pipeline.review.evidence import significant

        return [n for n in self.changed if n not in self.paired or n in significant(self.paired)]


def _quote(notes: list[str]) -> list[str]:
    """Each note its own paragraph of one block quote."""
    return ["\n>\n".join(f"> {n}" for n in notes), ""] if notes else []


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
