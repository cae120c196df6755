"""What changed between two revisions, as data: DVC's JSON and ``dvc.lock`` in, no Markdown out.

``pipeline.review.diff`` gathers git's and DVC's answers into a ``Comparison``;
these pure functions give them a shape the report can walk: ``dvc params diff
--json`` becomes rows with a signed change, ``dvc metrics diff --all --json``
becomes ``(old, new)`` pairs per model, two ``dvc.lock`` files become the stages
DVC reran and why, and ``dvc status --json`` the stages that changed without a
rerun. Kept apart from ``markdown`` (the wording and tables) so which models
and stages count as changed is tested on small JSON samples, whatever the
report's layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline import config

EVAL_METRICS = config.EVAL_METRICS.as_posix()

# Re-measured every time `evaluate` runs, so it moves for every model; it is
# shown but does not make a model count as changed.
NOISY = ("throughput_img_s",)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
    if is_number(old) and is_number(new):
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
    paired: dict = field(default_factory=dict)  # model -> stats.Paired | reason (evidence)
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
