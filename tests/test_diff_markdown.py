"""The diff's report from DVC's JSON, without git, DVC or a trained model.

``comparison`` (which params, models and stages changed, read from
``dvc params diff``, ``dvc metrics diff``, ``dvc.lock`` and ``dvc status``) and
``markdown`` (values with units, signed changes, tables, the rendered report)
on small samples; test_diff.py runs the whole command on a real repository.
"""

import pytest

from pipeline.review import comparison
from pipeline.review import markdown


def test_params_diff_rows_say_what_changed():
    raw = {"params.yaml": {"models.gru.units": {"old": 8, "new": 12, "diff": 4},
                           "models.gru.cell": {"old": "gru", "new": "lstm"},
                           "train.warmup_steps": {"old": None, "new": 100},
                           "train.clipnorm": {"old": 1.0, "new": None}}}
    rows = {r["param"]: r for r in comparison.parse_params_diff(raw)}
    assert rows["models.gru.units"]["change"] == "+4 (+50%)"
    assert rows["models.gru.cell"]["change"] == "changed"
    assert rows["train.warmup_steps"]["change"] == "added"
    assert rows["train.clipnorm"]["change"] == "removed"
    rows = comparison.parse_params_diff(raw)
    table = "\n".join(markdown.params_table(rows, "main", "workspace"))
    assert "| `models.gru.units` | `8` | `12` | +4 (+50%) |" in table
    assert "| `train.warmup_steps` | — | `100` | added |" in table


EVALUATE_DIFF = {
    "champion": {"old": "gru", "new": "lstm"},
    "models.rnn.test_accuracy": {"old": 0.98, "new": 0.98, "diff": 0.0},
    "models.rnn.throughput_img_s": {"old": 3000.0, "new": 2500.0, "diff": -500.0},
    "models.gru.test_accuracy": {"old": 0.13, "new": 0.165, "diff": 0.035},
    "models.gru.params": {"old": 1866, "new": 3514, "diff": 1648},
    "models.gru.per_class.2.f1": {"old": 0.0, "new": 0.1538, "diff": 0.1538},
    "models.gru.per_class.10.f1": {"old": 0.5, "new": 0.5, "diff": 0.0},
    "models.lstm.test_accuracy": {"old": 0.9, "new": 0.9, "diff": 0.0},
}


def test_models_come_in_params_order_and_only_real_changes_count():
    pairs = comparison.metric_pairs({"m": EVALUATE_DIFF})["m"]
    models = comparison.model_metrics(pairs, order=["rnn", "lstm", "gru"])
    assert list(models) == ["rnn", "lstm", "gru"]
    assert models["gru"]["per_class.2.f1"] == (0.0, 0.1538)
    # rnn's throughput moved, but it is re-measured on every evaluate run
    assert comparison.changed_models(models) == ["gru"]
    assert comparison.champion(pairs) == ("gru", "lstm")
    assert list(comparison.model_metrics(pairs)) == ["gru", "lstm", "rnn"]  # no order: by name


@pytest.mark.parametrize("kind, old, new, value, delta", [
    ("pct", 0.13, 0.165, "16.50%", "+3.50 pp"),
    ("pct", 0.98, 0.98, "98.00%", "±0 pp"),
    ("pct", 0.99, 0.9812, "98.12%", "-0.88 pp"),
    ("loss", 2.30126, 2.30187, "2.3019", "+0.0006"),
    ("s", 4.5, 4.7, "4.7 s", "+0.2 s (+4%)"),
    ("s", 600.0, 75.0, "1 min 15 s", "-525.0 s (-88%)"),
    ("count", 1866, 3514, "3,514", "+1,648 (+88%)"),
    ("epoch", 1.0, 1.5, "1.5", "+0.5"),
    ("rate", 3679.9, 2008.1, "2,008", "-1,672 (-45%)"),
    ("f1", 0.2822, 0.2745, "0.275", "-0.008"),
    ("pct", None, 0.9, "90.00%", "new"),
    ("count", 818, None, "—", "removed"),
])
def test_values_and_signed_changes_carry_units(kind, old, new, value, delta):
    assert markdown.fmt_value(kind, new) == value
    assert markdown.fmt_delta(kind, old, new) == delta


def test_headline_table_has_models_as_rows_and_bolds_the_changed():
    pairs = comparison.metric_pairs({"m": EVALUATE_DIFF})["m"]
    models = comparison.model_metrics(pairs, order=["rnn", "lstm", "gru"])
    lines = markdown.headline_table(models, markdown.ACCURACY, "main", "workspace", ["gru"])
    assert lines[0].startswith("| model | test acc main | test acc workspace | Δ | val acc main")
    assert lines[2].startswith("| rnn | 98.00% | 98.00% | ±0 pp |")
    assert lines[4].startswith("| **gru** | 13.00% | 16.50% | +3.50 pp |")
    per_class = markdown.per_class_table(models, ["gru"], "main", "workspace")
    assert per_class[0] == "| model | 2 | 10 |"  # classes in numeric order
    assert per_class[4] == "| gru Δ | +0.154 | ±0 |"


def _lock(units=8, rnn_md5="a", split_md5="s", cmd="python -m pipeline.stages.evaluate"):
    return {"schema": "2.0", "stages": {
        "split": {"cmd": "python -m pipeline.stages.split",
                  "outs": [{"path": "data/split", "md5": split_md5}]},
        "train@rnn": {"cmd": "python -m pipeline.stages.train rnn",
                      "deps": [{"path": "data/split", "md5": split_md5}],
                      "params": {"params.yaml": {"models.rnn": {"units": units}}},
                      "outs": [{"path": "models/checkpoints/rnn.keras", "md5": rnn_md5}]},
        "evaluate": {"cmd": cmd, "deps": [{"path": "models/checkpoints", "md5": rnn_md5}],
                     "params": {"params.yaml": {"models": {"rnn": {"units": units}}}},
                     "outs": [{"path": "metrics/evaluate.json", "md5": rnn_md5}]}}}


def test_stage_changes_read_from_dvc_lock_say_why():
    old, new = _lock(), _lock(units=12, rnn_md5="b")
    changes = comparison.stage_changes(old, new, head_lock=old)
    assert [s["stage"] for s in changes["reran"]] == ["train@rnn", "evaluate"]
    assert changes["unchanged"] == ["split"]
    train, evaluate = changes["reran"]
    assert train["why"] == ["params `models.rnn.units`"]
    assert evaluate["why"] == ["params `models.rnn.units`", "deps `models/checkpoints`"]
    assert not train["committed"]
    assert comparison.stage_changes(old, new, head_lock=new)["reran"][0]["committed"]

    added = _lock(cmd="python -m pipeline.stages.evaluate --fast")
    added["stages"]["train@gru"] = added["stages"]["train@rnn"]
    del added["stages"]["split"]
    changes = comparison.stage_changes(old, added)
    assert {s["stage"]: s["why"] for s in changes["reran"]} == {
        "evaluate": ["command"], "train@gru": ["new stage"]}
    assert changes["removed"] == ["split"]
    assert comparison.stage_changes(None, old)["reran"][0]["why"] == ["new stage"]


def test_stale_stages_ignore_missing_data_and_downstream_outputs():
    # `dvc status --json` on a fresh clone (no data) after editing models.gru
    # without a rerun, plus a code edit and a changed command.
    status = {
        "fetch": [{"changed outs": {"data/raw": "not in cache"}}],
        "split": [{"changed deps": {"data/raw": "deleted"}}],
        "train@gru": [{"changed deps": {"data/split": "deleted",
                                        "params.yaml": {"models.gru": "modified"}}},
                      {"changed outs": {"models/checkpoints/gru.keras": "not in cache"}}],
        "train@rnn": [{"changed deps": {"pipeline/rnn/model.py": "modified"}}],
        "evaluate": [{"changed deps": {"models/checkpoints": "modified"}}, "changed command"],
    }
    lock = {"stages": {"split": {"outs": [{"path": "data/split"}]},
                       "train@gru": {"outs": [{"path": "models/checkpoints/gru.keras"}]}}}
    assert comparison.stale_stages(status, lock) == {
        "train@gru": ["params `models.gru`"],
        "train@rnn": ["`pipeline/rnn/model.py` modified"],
        "evaluate": ["command"]}


def _comparison(pairs, params=(), reran=()):
    return comparison.Comparison(
        rev="main", rev_desc="`main`", new_desc="the workspace", params=list(params),
        pairs=pairs, stages={"reran": [{"stage": s, "why": ["x"], "committed": True}
                                       for s in reran],
                             "removed": [], "unchanged": []}, stale={})


def test_render_says_when_the_champion_changed():
    text = markdown.render(_comparison({"metrics/evaluate.json": comparison.metric_pairs(
        {"m": EVALUATE_DIFF})["m"]}, reran=["train@gru", "evaluate"]), "main")
    assert "**champion changed: gru → lstm**" in text
    assert "DVC reran `train@gru`, `evaluate`" in text
    assert "## Per-class F1 (test) of the changed models" in text


def test_render_without_changes_says_so_instead_of_empty_tables():
    same = {"models.rnn.test_accuracy": (0.9, 0.9), "champion": ("rnn", "rnn")}
    text = markdown.render(_comparison({"metrics/evaluate.json": same}), "main")
    assert "No model's results changed" in text
    assert "No param differs from `main`." in text
    assert "no stage was rerun" in text
    assert "No metric changed." in text
    assert "Per-class" not in text and "![" not in text
