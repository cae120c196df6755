"""Shared test set-up."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TINY_PARAMS = ROOT / "tests" / "fixtures" / "params-tiny.yaml"
FIXTURE_DIR = ROOT / "tests" / "fixtures" / "mnist-tiny"
# What a project checkout needs to run the pipeline (code, stages, fixture).
PROJECT_FILES = ("dvc.yaml", "pipeline", "dags", "tests/fixtures", "pytest.ini")


def tool_env(**extra: str) -> dict:
    """Environment for subprocesses: this venv first, no network, quiet TF."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(TF_CPP_MIN_LOG_LEVEL="2", GX_ANALYTICS_ENABLED="false",
               DVC_NO_ANALYTICS="1", PYTHONPATH="")
    env.pop("DATA_MIRROR_DIR", None)
    env.setdefault("GIT_AUTHOR_NAME", "test"), env.setdefault("GIT_AUTHOR_EMAIL", "test@localhost")
    env.setdefault("GIT_COMMITTER_NAME", "test"), env.setdefault("GIT_COMMITTER_EMAIL", "test@localhost")
    env.update(extra)
    return env


def sh(*cmd: str, cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """Run a command in ``cwd``; on failure show its output in the assertion."""
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(**env), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def make_project(dest: Path) -> Path:
    """A fresh git + DVC repository holding this project with the tiny params.

    The DVC remote is a folder beside it, so push/pull work offline.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for rel in PROJECT_FILES:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / rel)
    shutil.copy2(TINY_PARAMS, dest / "params.yaml")
    shutil.copy2(ROOT / ".gitignore", dest / ".gitignore")
    sh("git", "init", "-q", "-b", "main", cwd=dest)
    sh("dvc", "init", "-q", cwd=dest)
    sh("dvc", "config", "core.analytics", "false", cwd=dest)
    sh("dvc", "config", "core.autostage", "true", cwd=dest)
    sh("dvc", "remote", "add", "-d", "storage", str(dest.parent / f"{dest.name}-remote"), cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "commit", "-q", "-m", "project", cwd=dest)
    return dest


@pytest.fixture
def native_ops():
    """The C++ op's ops: a failed build fails where it could build (tests/native_support.py)."""
    import native_support

    return native_support.ops()


@pytest.fixture
def tiny_project(tmp_path) -> Path:
    """A fresh project repository (not yet reproduced) on the tiny fixture."""
    return make_project(tmp_path / "project")


@pytest.fixture(scope="session")
def tiny_repro(tmp_path_factory) -> Path:
    """A project on the tiny fixture after one full `dvc repro`, committed.

    Session-scoped because training four models, even tiny ones, costs ~40 s;
    tests that change it must copy it first (see ``copy_project``).
    """
    project = make_project(tmp_path_factory.mktemp("repro") / "project")
    sh("dvc", "repro", cwd=project)
    sh("git", "add", "-A", cwd=project)
    sh("git", "commit", "-q", "-m", "repro", cwd=project)
    return project


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory) -> Path:
    """data/split of the tiny fixture, as the split stage writes it (once per test module)."""
    import json

    from pipeline import config
    from pipeline.stages import split

    base = tmp_path_factory.mktemp("split")
    (base / "validate.json").write_text(json.dumps({"success": True}))
    split.run(config.load(TINY_PARAMS), FIXTURE_DIR, base / "split", base / "validate.json")
    return base / "split"


def train_tiny(tmp_path: Path, params, name: str = "gru", *, split_dir: Path) -> dict:
    """One train stage run of ``name`` under ``tmp_path`` (ckpt/, live/, work/); its summary."""
    from pipeline.stages import train

    return train.run(name, params, split_dir=split_dir,
                     checkpoint=tmp_path / "ckpt" / f"{name}.keras",
                     log_dir=tmp_path / "live" / name, work_dir=tmp_path / "work" / name)


def logged_steps(live_dir: Path, part: str) -> list[int]:
    """The ``step`` of each row dvclive logged in ``<live_dir>/plots/metrics/<part>/accuracy.tsv``."""
    rows = (live_dir / "plots" / "metrics" / part / "accuracy.tsv").read_text().splitlines()
    return [int(dict(zip(rows[0].split("\t"), r.split("\t")))["step"]) for r in rows[1:]]


def copy_project(src: Path, dest: Path) -> Path:
    """A copy of a reproduced project (workspace, git history and DVC cache)."""
    shutil.copytree(src, dest, symlinks=True)
    remote = src.parent / f"{src.name}-remote"
    sh("dvc", "remote", "modify", "--local", "storage", "url", str(dest.parent / f"{dest.name}-remote"),
       cwd=dest)
    if remote.exists():
        shutil.copytree(remote, dest.parent / f"{dest.name}-remote")
    return dest


def remote_holds_everything(repo: Path, **env: str) -> bool:
    """`dvc status --cloud`: every output that dvc.lock and the .dvc files name is in the
    remote ("deleted" = in the remote, not in this clone's empty cache; "new" or
    "missing" = not in the remote)."""
    import json

    status = json.loads(sh("dvc", "status", "--cloud", "--json", cwd=repo, **env).stdout or "{}")
    missing = {path: what for path, what in status.items() if what not in ("deleted",)}
    assert not missing, f"not in the DVC remote: {missing}"
    return True


# What two runs of the same commit and params record differently: outputs that
# hold wall times (runtime records, throughput, Data Docs, the model card), what
# depends on them, and the SavedModel export, whose protocol buffers are not
# byte-stable. Everything else in dvc.lock must be equal, checksum for checksum.
TIMED = ("metrics/runtime/", "metrics/evaluate.json", "reports/report.md", "metrics/train",
         "reports/validation", "models/best", "models/export")


def untimed(entries: list[dict]) -> list[dict]:
    return [e if not e["path"].startswith(TIMED) else {"path": e["path"]} for e in entries]

def bench_module(name: str):
    """bench/<name>.py as the module ``name``: the import ``python bench/x.py`` makes of
    its siblings, without putting bench/ on sys.path."""
    import importlib.util

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def captured(project: Path) -> dict:
    """The record the tasks of HEAD's run would have handed on to publish."""
    from pipeline.orchestration import orchestrate, workspace

    source = workspace.Source(str(project), sh("git", "rev-parse", "HEAD", cwd=project).stdout
                              .strip())
    record: dict = {}
    for stage in orchestrate.stage_facts(project, "evaluate")["order"]:
        facts = orchestrate.stage_facts(project, stage)
        record = workspace.capture(project, stage, facts["uncached"], source, record,
                                   outcome="ran", seconds=0.0)
    return record
