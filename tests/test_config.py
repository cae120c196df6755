"""params.yaml is checked before any work: bad keys, types and ranges stop the run."""

import copy

import pytest
import yaml
from pydantic import TypeAdapter

from conftest import ROOT, TINY_PARAMS, make_project, sh
from pipeline import config


@pytest.fixture(scope="module")
def raw():
    """The shipped params as the loader reads them, as plain YAML data to edit."""
    return TypeAdapter(config.Params).dump_python(config.load_project(ROOT), mode="json")


def test_shipped_params_are_valid():
    params = config.load(ROOT / "params.yaml")
    assert list(params.models) == ["rnn", "lstm", "gru", "bilstm"]
    assert params.dataset.train_count == 60000
    assert config.load(TINY_PARAMS).fetch.dataset == "tiny"


def test_make_tutorial_sets_the_tutorials_exact_protocol(raw):
    """`make tutorial` is the one switch back to the tutorial: applied to the shipped
    params, its overrides give exactly the tutorial's training protocol."""
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    line = next(l for l in makefile.splitlines() if l.startswith("TUTORIAL_PARAMS"))
    train = copy.deepcopy(raw)["train"]
    for override in line.split(":=", 1)[1].split("-S")[1:]:
        key, value = override.strip().split("=")
        train[key.removeprefix("train.")] = yaml.safe_load(value)
    tutorial = {"batch_size": 100, "learning_rate": 0.001, "lr_schedule": "constant",
                "epochs": 50, "validate_every_steps": 10, "early_stop_steps": 2000,
                "warmup_steps": 0, "clipnorm": 0.0, "max_train_samples": 0}
    assert {k: train[k] for k in tutorial} == tutorial
    config.parse({**raw, "train": train})
    assert "\t$(BIN)/dvc exp run -n tutorial $(TUTORIAL_PARAMS)\n" in makefile


def test_tiny_params_have_the_same_keys_as_the_real_ones():
    """The test fixture must exercise the same schema the real run uses: the keys as
    written (the loader would fill in a default the fixture leaves out)."""
    tiny = yaml.safe_load(TINY_PARAMS.read_text())
    real = yaml.safe_load((ROOT / "params.yaml").read_text())

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            if prefix.startswith("datasets"):
                continue
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(tiny) == keys(real)


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["train"].update(lr=0.1), "params.yaml: train.lr: unknown key"),
    (lambda r: r["train"].update(learning_rate="fast"), "train.learning_rate: Input should be a valid number"),
    (lambda r: r["train"].update(learning_rate="0.001"), "train.learning_rate: Input should be a valid number"),
    (lambda r: r["train"].update(learning_rate=-1.0), "train.learning_rate: Input should be greater than 0"),
    (lambda r: r["train"].update(epochs=2.5), "train.epochs: Input should be a valid integer"),
    (lambda r: r["models"]["gru"].update(cell="transformer"), "models.gru.cell: Input should be"),
    (lambda r: r["models"]["rnn"].update(bidirectional="yes"), "models.rnn.bidirectional: Input should be a valid boolean"),
    (lambda r: r["split"].update(method="random"), "split.method: Input should be 'head' or 'stratified'"),
    (lambda r: r["fetch"].update(dataset="cifar"), "fetch.dataset: 'cifar' is not one of datasets"),
    (lambda r: r.pop("train"), "train: required key is missing"),
    (lambda r: r.update(extra={}), "extra: unknown key"),
    (lambda r: r["validate"].update(class_share_min=0.5), "class_share_min is above class_share_max"),
    (lambda r: r["datasets"]["mnist"]["files"]["train_images"].__setitem__(1, "abc"),
     "datasets.mnist.files.train_images.1: String should match pattern"),
    (lambda r: r["split"].update(val_size=60000), "split.val_size: must be below the dataset's train_count"),
])
def test_bad_params_name_the_key(raw, mutate, message):
    bad = copy.deepcopy(raw)
    mutate(bad)
    with pytest.raises(config.ConfigError) as err:
        config.parse(bad)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unreadable_params_file(tmp_path):
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(tmp_path / "params.yaml")
    with pytest.raises(config.ConfigError, match="file not found"):
        config.load(tmp_path / "missing.yaml")


def test_mirror_env_wins_over_param(monkeypatch):
    params = config.load(TINY_PARAMS)
    monkeypatch.setenv(config.MIRROR_ENV, "/somewhere/else")
    assert str(params.mirror_dir()) == "/somewhere/else"
    monkeypatch.delenv(config.MIRROR_ENV)
    assert str(params.mirror_dir()) == "tests/fixtures/mnist-tiny"


def test_stage_cli_stops_on_bad_params_before_any_work(tmp_path):
    project = make_project(tmp_path / "p")
    text = (project / "params.yaml").read_text().replace("batch_size: 50", "batch_size: -5", 1)
    (project / "params.yaml").write_text(text)
    proc = sh("python", "-m", "pipeline.stages.fetch", cwd=project, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "fetch: error: params.yaml: train.batch_size: Input should be greater than 0")
    assert not (project / "data" / "raw").exists()
