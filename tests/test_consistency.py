"""dvc.yaml, params.yaml and pipeline/ agree on stage names, params and paths."""

import dataclasses
import importlib
import re

import yaml

from conftest import ROOT
from pipeline import config


def _dvc():
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_every_stage_is_a_module_with_main_and_a_params_section():
    params = {f.name for f in dataclasses.fields(config.load_project(ROOT))}
    for stage, spec in _dvc().items():
        body = spec.get("do", spec)
        assert body["cmd"].startswith(f"python -m pipeline.stages.{stage}"), stage
        module = importlib.import_module(f"pipeline.stages.{stage}")
        assert callable(module.main) and callable(module.run)
        assert module.__doc__ and "Params:" in module.__doc__, f"pipeline/stages/{stage}.py docstring"
        assert f"pipeline/stages/{stage}.py" in body["deps"]
        assert stage in params, f"params.yaml has no '{stage}' section"
        assert stage in [p.split(".")[0] for p in body["params"]]


def test_train_stages_are_generated_from_the_models_in_params():
    train = _dvc()["train"]
    assert train["foreach"] == "${models}"
    assert "models.${key}" in train["do"]["params"]


def test_stage_outputs_match_the_default_paths_in_config():
    stages = _dvc()

    def paths(stage, kind):
        body = stages[stage].get("do", stages[stage])
        return [next(iter(o)) if isinstance(o, dict) else o for o in body.get(kind, [])]

    assert str(config.RAW_DIR) in paths("fetch", "outs")
    assert str(config.VALIDATION_DOCS_DIR) in paths("validate", "outs")
    assert str(config.VALIDATION_METRICS) in paths("validate", "metrics")
    assert str(config.SPLIT_DIR) in paths("split", "outs")
    assert str(config.CHAMPION_DIR) in paths("evaluate", "outs")
    assert str(config.EXPORT_DIR) in paths("evaluate", "outs")
    assert str(config.EVAL_METRICS) in paths("evaluate", "metrics")
    assert str(config.REPORT_FILE) in paths("evaluate", "outs")
    assert str(config.CONFUSION_DIR) in paths("evaluate", "plots")
    assert f"{config.MODELS_DIR}/checkpoints/${{key}}.keras" in paths("train", "outs")
    for stage in ("fetch", "validate", "split", "evaluate"):
        assert f"{config.RUNTIME_DIR}/{stage}.json" in paths(stage, "metrics")


def uncommented_params(text: str) -> list[str]:
    """Keys with a value but no comment on their own line.

    Every key of a section needs one; a key inside ``models`` or ``datasets``
    needs one where it first appears (the first model's block documents the
    schema the others repeat).
    """
    seen, missing, section = set(), [], None
    for i, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^( *)([A-Za-z_]\w*):(.*)$", line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        if indent == 0:
            section = key
            continue
        value = rest.split("#")[0].strip()
        if section in ("models", "datasets"):
            if indent != 4 or key in seen or not value:
                continue  # a name, an entry of a commented block, a key documented above
            seen.add(key)
        elif not value:
            continue
        if "#" not in rest:
            missing.append(f"params.yaml line {i}: '{section}.{key}' has no comment")
    return missing


def test_every_param_is_commented():
    """STYLE: a comment on every hyperparameter."""
    assert uncommented_params((ROOT / "params.yaml").read_text()) == []


def test_the_comment_check_catches_an_uncommented_param():
    text = "train:\n  seed: 42  # why\n  epochs: 8\nmodels:\n  a:\n    units: 100  # width\n    depth: 3\n  b:\n    units: 50\n"
    assert uncommented_params(text) == ["params.yaml line 3: 'train.epochs' has no comment",
                                        "params.yaml line 7: 'models.depth' has no comment"]
