"""dvc.yaml, params.yaml and pipeline/ agree on stage names, params and paths."""

import importlib

import yaml

from conftest import ROOT
from pipeline import config


def _dvc():
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_every_stage_is_a_module_with_main_and_a_params_section():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
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


def test_every_param_is_commented():
    """STYLE: a comment on every hyperparameter."""
    lines = (ROOT / "params.yaml").read_text().splitlines()
    skip_sections = ("datasets:", "evaluate:")
    in_data = False
    for i, line in enumerate(lines):
        if not line.startswith(" ") and line.strip():
            in_data = line.startswith(skip_sections)
        if in_data or not line.startswith("  ") or line.strip().startswith("#"):
            continue
        key, _, value = line.strip().partition(":")
        if value.strip() and not value.strip().startswith("{"):
            same_block = [l for l in lines if l.strip().startswith(f"{key}:")]
            assert any("#" in l for l in same_block), f"params.yaml line {i + 1}: '{key}' has no comment"
