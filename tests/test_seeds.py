"""seeds: N seeds of every model as real DVC experiments, and their summary."""

import json

import pytest

from conftest import ROOT, copy_project, sh
from pipeline import config
from pipeline.review import seeds
from pipeline.runtime import StageError


def test_summary_is_mean_sample_std_and_min():
    per_seed = {1: {"models": {"rnn": {"val_accuracy": 0.98, "test_accuracy": 0.97}}},
                2: {"models": {"rnn": {"val_accuracy": 0.99, "test_accuracy": 0.99}}},
                3: {"models": {"rnn": {"val_accuracy": 0.97, "test_accuracy": 0.98}}}}
    s = seeds.summarise(per_seed)["rnn"]
    assert s["seeds"] == 3
    assert s["test_accuracy"]["mean"] == pytest.approx(0.98)
    assert s["test_accuracy"]["std"] == pytest.approx(0.01)      # sample std (n - 1)
    assert s["val_accuracy"]["min"] == 0.97 and s["test_accuracy"]["min"] == 0.97
    refs = config.load().datasets["mnist"].references
    text = seeds.render(seeds.summarise(per_seed), per_seed, refs, "mnist")
    assert "| rnn | 3 | 98.00% ± 1.00 | 97.00% | 98.00% ± 1.00 | 97.00% | 98.72% | 98.41% |" in text
    bare = seeds.render(seeds.summarise(per_seed), per_seed, {}, "fashion_mnist")
    assert "98.41%" not in bare and "no published references" in bare


@pytest.mark.slow   # two seeds of four trainings (~2 min): `make test-slow` keeps CI under 20 min
def test_make_seeds_runs_every_model_per_seed_as_dvc_experiments(tiny_repro, tmp_path):
    project = copy_project(tiny_repro, tmp_path / "project")
    assert "\t$(BIN)/python -m pipeline.review.seeds --n $(N)\n" in (ROOT / "Makefile").read_text()
    sh("python", "-m", "pipeline.review.seeds", "--n", "2", cwd=project)  # = make seeds N=2

    record = json.loads((project / "metrics" / "seeds.json").read_text())
    assert record["seeds"] == [42, 43] and record["dataset"] == "tiny"
    assert set(record["summary"]) == {"rnn", "lstm", "gru", "bilstm"}
    committed = json.loads((project / "metrics" / "evaluate.json").read_text())
    # seed 42 is the committed run, restored rather than retrained
    for name, m in committed["models"].items():
        assert record["per_seed"]["42"][name]["test_accuracy"] == m["test_accuracy"]
        assert record["summary"][name]["seeds"] == 2
    assert record["per_seed"]["43"] != record["per_seed"]["42"]
    exps = sh("dvc", "exp", "list", "--name-only", cwd=project).stdout.split()
    assert {"seed-42", "seed-43"} <= set(exps)
    report = (project / "reports" / "seeds.md").read_text()
    assert "| rnn | 2 |" in report and "98.41%" not in report  # tiny is not MNIST
    # the workspace is left as committed: no tracked file changed
    assert sh("git", "status", "--porcelain", "--untracked-files=no", cwd=project).stdout == ""


def test_an_experiment_is_found_after_head_moved(tmp_path):
    """A commit made while the seeds run must not hide an experiment: its ref lies
    under the commit it started from, not under the new HEAD."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q")
    git("config", "user.email", "t@t"), git("config", "user.name", "t")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "evaluate.json").write_text('{"models": {"rnn": {"x": 1}}}')
    git("add", "."), git("commit", "-qm", "experiment result")
    exp, base = git("rev-parse", "HEAD"), git("rev-parse", "HEAD")
    git("update-ref", f"refs/exps/{base[:2]}/{base[2:]}/seed-43", exp)
    git("commit", "-q", "--allow-empty", "-m", "a commit made meanwhile")
    assert seeds._exp_metrics("seed-43", tmp_path) == {"models": {"rnn": {"x": 1}}}
    with pytest.raises(StageError, match="seed-44"):
        seeds._exp_metrics("seed-44", tmp_path)
