"""End to end: real `dvc repro` in a temporary git repository on the tiny fixture."""

import json

import yaml

from conftest import copy_project, sh
from pipeline import config

STAGES = ["fetch", "validate", "split", "train@rnn", "train@lstm", "train@gru",
          "train@bilstm", "evaluate"]


def _snapshot(project):
    """Bytes of everything downstream of the data that a bad run must not touch."""
    paths = [*sorted((project / "data" / "split").glob("*.npz")),
             *sorted((project / "models").rglob("*.keras")), project / "metrics" / "evaluate.json"]
    return {str(p.relative_to(project)): p.read_bytes() for p in paths}


def test_repro_runs_every_stage_and_records_it(tiny_repro):
    lock = yaml.safe_load((tiny_repro / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(STAGES)
    for name in ("rnn", "lstm", "gru", "bilstm"):
        assert (tiny_repro / "models" / "checkpoints" / f"{name}.keras").exists()
        assert (tiny_repro / "metrics" / "train" / name / "metrics.json").exists()
    metrics = json.loads((tiny_repro / "metrics" / "evaluate.json").read_text())
    assert set(metrics["models"]) == {"rnn", "lstm", "gru", "bilstm"}
    first = metrics["models"]["rnn"]
    for key in ("test_accuracy", "test_loss", "per_class", "params", "train_wall_time_s",
                "throughput_img_s", "best_epoch", "val_accuracy"):
        assert key in first
    assert set(first["per_class"]["7"]) == {"precision", "recall", "f1"}
    assert metrics["champion"] == max(metrics["models"],
                                      key=lambda m: metrics["models"][m]["val_accuracy"])
    card = json.loads((tiny_repro / "models" / "best" / "card.json").read_text())
    assert card["model"] == metrics["champion"]
    assert len(card["git_revision"]) == 40
    served = tiny_repro / "models" / "export" / "champion" / "1"
    assert (served / "saved_model.pb").is_file() and (served / "variables").is_dir()
    dataset = config.load(tiny_repro / "params.yaml").dataset
    assert card["data"]["sha256"][dataset.file_name("train_images")] == dataset.sha256("train_images")
    report = (tiny_repro / "reports" / "report.md").read_text()
    assert "| rnn |" in report and "95% CI" in report
    # the tiny fixture is not MNIST: the tutorial's numbers must not appear beside it
    assert "98.41%" not in report and "no published references" in report
    predictions = (tiny_repro / "reports" / "predictions.csv").read_text().splitlines()
    assert predictions[0] == "image,actual,rnn,lstm,gru,bilstm" and len(predictions) == 201
    assert metrics["machine"]["cpu_model"] and "tensorflow" in metrics["machine"]
    assert first["test_images"] == 200
    assert first["test_accuracy_ci_low"] <= first["test_accuracy"] <= first["test_accuracy_ci_high"]
    assert (tiny_repro / "reports" / "figures" / "curves.png").stat().st_size > 1000
    assert (tiny_repro / "reports" / "validation" / "index.html").exists()
    assert len((tiny_repro / "reports" / "confusion" / "gru.csv").read_text().splitlines()) == 201
    for stage in ("fetch", "validate", "split", "train-rnn", "evaluate"):
        runtime = json.loads((tiny_repro / "metrics" / "runtime" / f"{stage}.json").read_text())
        assert runtime["wall_time_s"] >= 0 and runtime["peak_rss_mib"] > 0
        assert runtime["machine"]["tensorflow"] and runtime["machine"]["arch"]
        assert runtime["machine"]["kernels"].startswith(("oneDNN", "Eigen"))


def test_second_repro_does_nothing_and_status_is_clean(tiny_repro):
    assert "up to date" in sh("dvc", "status", cwd=tiny_repro).stdout
    again = sh("dvc", "repro", cwd=tiny_repro)
    assert "Running stage" not in again.stdout
    assert sh("git", "status", "--porcelain", cwd=tiny_repro).stdout == ""


def test_metrics_and_plots_are_visible_to_dvc(tiny_repro):
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=tiny_repro).stdout)
    data = next(iter(shown.values()))["data"]
    assert "metrics/evaluate.json" in data and "metrics/train/gru/metrics.json" in data
    plots = sh("dvc", "plots", "show", "--json", cwd=tiny_repro).stdout
    assert "reports/confusion/lstm.csv" in plots
    assert "metrics/train/bilstm/plots/metrics/eval/accuracy.tsv" in plots
    assert "reports/figures/curves.png" in plots


def test_changing_one_model_reruns_only_that_model(tiny_repro, tmp_path):
    project = copy_project(tiny_repro, tmp_path / "p")
    text = (project / "params.yaml").read_text()
    assert config.load(project / "params.yaml").models["gru"].units == 8
    # edit only the gru block
    head, tail = text.split("  gru:\n", 1)
    (project / "params.yaml").write_text(head + "  gru:\n" + tail.replace("units: 8", "units: 12", 1))
    status = json.loads(sh("dvc", "status", "--json", cwd=project).stdout)
    assert sorted(status) == ["evaluate", "train@gru"]


def test_push_sends_data_checkpoints_and_metrics_to_the_remote(tiny_repro, tmp_path):
    project = copy_project(tiny_repro, tmp_path / "p")
    sh("dvc", "push", cwd=project)
    remote = tmp_path / "p-remote"
    assert remote.exists() and any(remote.rglob("*"))
    assert "are in sync" in sh("dvc", "status", "--cloud", cwd=project).stdout
    # a fresh clone gets the checkpoints back from the remote
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(project), str(clone), cwd=tmp_path)
    sh("dvc", "remote", "modify", "--local", "storage", "url", str(remote), cwd=clone)
    sh("dvc", "pull", cwd=clone)
    assert (clone / "models" / "checkpoints" / "lstm.keras").read_bytes() == (
        project / "models" / "checkpoints" / "lstm.keras").read_bytes()


def test_failed_validation_stops_the_pipeline_and_keeps_outputs(tiny_repro, tmp_path):
    project = copy_project(tiny_repro, tmp_path / "p")
    before = _snapshot(project)
    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(text.replace("class_share_max: 0.25", "class_share_max: 0.12"))
    proc = sh("dvc", "repro", cwd=project, check=False)
    assert proc.returncode != 0
    assert "validate: error:" in proc.stderr and "class_share" in proc.stderr
    assert "Running stage 'split'" not in proc.stdout
    assert _snapshot(project) == before


def test_checksum_mismatch_stops_fetch_and_keeps_outputs(tiny_repro, tmp_path):
    project = copy_project(tiny_repro, tmp_path / "p")
    before = _snapshot(project)
    good = config.load(project / "params.yaml").dataset.sha256("test_labels")
    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(text.replace(good, "f" * 64))
    proc = sh("dvc", "repro", cwd=project, check=False)
    assert proc.returncode != 0
    line = next(l for l in proc.stderr.splitlines() if l.startswith("fetch: error:"))
    assert "t10k-labels-idx1-ubyte.gz" in line and "f" * 64 in line and good in line
    assert _snapshot(project) == before
