"""The registry in a real git + DVC repository with real GTO tags.

Three publishes as ``publish`` will make them: a first champion, a better one
(registered, prod moves), one that is not better (publish does not call
register; a stray call registers nothing). Then what a consumer and an
operator see: ``gto show``, ``dvc artifacts get ... --stage prod``, a rollback,
and ``predict --version``.
"""

import json

import numpy as np
import pytest
import yaml

from conftest import ROOT, sh
from pipeline import config
from pipeline.serve import predict
from pipeline.serve import registry
from pipeline.rnn import model as model_lib

CHAMPION = "models/champion"


def _repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh("git", "init", "-q", "--bare", str(tmp_path / "origin.git"), cwd=tmp_path)
    sh("git", "remote", "add", "origin", str(tmp_path / "origin.git"), cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    sh("dvc", "config", "core.analytics", "false", cwd=repo)
    sh("dvc", "remote", "add", "-d", "storage", str(tmp_path / "dvc-remote"), cwd=repo)
    # The project's own artifact declaration, so the test breaks if dvc.yaml loses it.
    artifacts = yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"artifacts": artifacts}))
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-q", "-m", "project", cwd=repo)
    return repo


def _publish(repo, seed: int, val_accuracy: float) -> tuple[str, bytes]:
    """What publish does when it replaces the champion: files, dvc add, push, commit."""
    import keras

    keras.utils.set_random_seed(seed)
    folder = repo / CHAMPION
    folder.mkdir(parents=True, exist_ok=True)
    net = model_lib.build(config.ModelConfig(cell="gru", units=4, layers=1), (28, 28), 10, "gru")
    net.save(folder / "model.keras")
    (folder / "card.json").write_text(json.dumps({"model": "gru", "metrics": {
        "val_accuracy": val_accuracy}}))
    sh("dvc", "add", "-q", CHAMPION, cwd=repo)
    sh("dvc", "push", "-q", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-q", "-m", f"publish seed {seed}", cwd=repo)
    return sh("git", "rev-parse", "HEAD", cwd=repo).stdout.strip(), (
        folder / "model.keras").read_bytes()


def _tags(repo) -> list[str]:
    return sh("git", "tag", cwd=repo).stdout.split()


def _prod_model(repo, tmp_path, name) -> bytes:
    out = tmp_path / name
    sh("dvc", "artifacts", "get", str(repo), "champion", "--stage", "prod", "-o", str(out),
       cwd=tmp_path)
    return (out / "model.keras").read_bytes()


def test_two_publishes_show_rollback_and_consumers(tmp_path):
    repo = _repo(tmp_path)
    first, first_bytes = _publish(repo, seed=1, val_accuracy=0.95)
    reg1 = registry.register(repo, CHAMPION, {"model": "gru", "val_accuracy": 0.95}, "run-1")
    assert reg1 == {"registered": True, "artifact": "champion", "version": "v0.0.1",
                    "version_tag": "champion@v0.0.1", "stage_tag": "champion#prod#1",
                    "commit": first, "tags": ["champion@v0.0.1", "champion#prod#1"]}

    # A better run: new version, prod moves to it.
    second, second_bytes = _publish(repo, seed=2, val_accuracy=0.97)
    reg2 = registry.register(repo, CHAMPION, {"model": "gru", "val_accuracy": 0.97}, "run-2",
                             ref=second)
    assert (reg2["version"], reg2["stage_tag"], reg2["commit"]) == (
        "v0.0.2", "champion#prod#2", second)
    assert registry.production(repo)["version"] == "v0.0.2"

    # A run that is not better: publish keeps the champion and records the run in
    # a commit whose champion .dvc is unchanged. It does not call register; a
    # stray or retried call registers nothing either.
    tags = _tags(repo)
    (repo / "run-3.txt").write_text("kept")
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-q", "-m", "record run-3 (champion kept)", cwd=repo)
    again = registry.register(repo, CHAMPION, {"val_accuracy": 0.96}, "run-3")
    assert (again["registered"], again["version"], again["tags"]) == (False, "v0.0.2", [])
    assert _tags(repo) == tags
    assert sh("git", "ls-remote", "--tags", "origin", cwd=repo).stdout == ""  # nothing pushed

    # Every version with its metrics and the production one.
    rows = registry.show(repo)
    assert [(r["version"], r["stages"], r["run_id"], r["metrics"]["val_accuracy"])
            for r in rows] == [("v0.0.2", ["prod"], "run-2", 0.97),
                               ("v0.0.1", [], "run-1", 0.95)]
    gto_show = sh("gto", "show", "champion", cwd=repo).stdout
    print(gto_show)
    lines = {line.split("│")[2].strip(): line
             for line in gto_show.splitlines() if "champion" in line}
    assert "prod" in lines["v0.0.2"] and "prod" not in lines["v0.0.1"]
    ours = sh("python", "-m", "pipeline.serve.registry", "--repo", str(repo), "show", cwd=ROOT).stdout
    print(ours)
    assert "val_accuracy" in ours.splitlines()[0]
    assert ours.splitlines()[1].split()[:4] == ["v0.0.2", "prod", "gru", "0.97"]
    assert "0.95" in ours.splitlines()[2]
    assert '"val_accuracy": 0.97' in sh("git", "tag", "-n9", "champion@v0.0.2", cwd=repo).stdout

    # The one consumer command gets prod's model; a rollback is one command.
    assert _prod_model(repo, tmp_path, "prod-before") == second_bytes
    sh("gto", "assign", "champion", "--version", "v0.0.1", "--stage", "prod", "--force", cwd=repo)
    assert registry.production(repo)["version"] == "v0.0.1"
    print(sh("gto", "show", "champion", cwd=repo).stdout)
    assert _prod_model(repo, tmp_path, "prod-after") == first_bytes
    # ... and back again with the helper.
    assert registry.rollback(repo, "v0.0.2") == "champion#prod#4"
    assert registry.production(repo)["version"] == "v0.0.2"

    # predict reads any registered version through dvc.api at its tag.
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    loaded, probabilities = predict.resolve(None, "champion@v0.0.1", root=repo)
    import keras
    direct = keras.models.load_model(tmp_path / "prod-after" / "model.keras")
    np.testing.assert_allclose(probabilities(x), keras.ops.softmax(direct(x.astype("float32")))
                               .numpy(), rtol=1e-5, atol=1e-7)
    loaded, in_prod = predict.resolve(None, "champion#prod", root=repo)
    assert loaded == "champion@v0.0.2"
    assert not np.allclose(in_prod(x), probabilities(x))


def test_register_refuses_a_champion_that_is_not_committed(tmp_path):
    repo = _repo(tmp_path)
    with pytest.raises(registry.RegistryError, match="models/champion.dvc is not in commit"):
        registry.register(repo, CHAMPION, {"val_accuracy": 0.9}, "run-1")
    assert _tags(repo) == []


def test_rollback_to_an_unknown_version_is_a_one_line_error(tmp_path):
    repo = _repo(tmp_path)
    _publish(repo, seed=1, val_accuracy=0.95)
    by_hand = sh("python", "-m", "pipeline.serve.registry", "--repo", str(repo), "register",
                 "--run-id", "run-1", cwd=ROOT)
    assert json.loads(by_hand.stdout)["version_tag"] == "champion@v0.0.1"
    assert registry.show(repo)[0]["metrics"] == {"model": "gru", "val_accuracy": 0.95}
    with pytest.raises(registry.RegistryError, match="no version v0.0.9 .have v0.0.1"):
        registry.rollback(repo, "v0.0.9")
    proc = sh("python", "-m", "pipeline.serve.registry", "--repo", str(repo), "rollback", "v0.0.1",
              cwd=ROOT, check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == "registry: v0.0.1 is already in prod"
