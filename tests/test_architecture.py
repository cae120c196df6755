"""The house rules, checked: import contracts, module size, one params reader, an installable project."""

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT, tool_env

MAX_LINES = 300
CODE_DIRS = ("pipeline", "dags", "tests", "bench")
SUBPACKAGES = ("stages", "rnn", "data", "evaluation", "serve", "orchestration", "review")


def _python_files(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--no-cache"], cwd=cwd, env=tool_env(),
                          capture_output=True, text=True)


def test_import_contracts_are_kept():
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "broken" in proc.stdout and " 0 broken" in proc.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract can fail: data importing a stage is reported, naming the import."""
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    arrays = tmp_path / "pipeline" / "data" / "arrays.py"
    arrays.write_text(arrays.read_text() + "\nfrom pipeline.stages import split  # noqa\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0
    assert "pipeline.data.arrays -> pipeline.stages.split" in proc.stdout


def test_every_subpackage_says_what_it_owns_and_may_import():
    for name in SUBPACKAGES:
        doc = ast.get_docstring(ast.parse((ROOT / "pipeline" / name / "__init__.py").read_text()))
        assert doc and "May import:" in doc, f"pipeline/{name}/__init__.py: no 'May import:' docstring"


@pytest.mark.parametrize("path", _python_files(*CODE_DIRS), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_300_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)}: {n} lines (at most {MAX_LINES}); split it by job"


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def params_readers(source: str) -> list[int]:
    """Lines that name params.yaml as a file to read: a literal path or config.PARAMS_FILE.

    Messages that mention params.yaml (``"params.yaml: train.x: ..."``), docstrings
    and comparisons with DVC's file keys are not reads.
    """
    tree = ast.parse(source)
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            skip.update(id(n) for n in [node.left, *node.comparators] if isinstance(n, ast.Constant))
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "PARAMS_FILE":
            hits.append(node.lineno)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
              and re.search(r"(^|[/:])params\.yaml$", node.value)):
            hits.append(node.lineno)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "params_show":
            hits.append(node.lineno)
    return sorted(set(hits))


def test_the_params_reader_check_catches_a_read():
    assert params_readers('import yaml\nyaml.safe_load(open("params.yaml"))\n') == [2]
    assert params_readers('from pipeline import config\nx = (root / config.PARAMS_FILE).read_text()\n') == [2]
    assert params_readers('git("show", f"{rev}:params.yaml")\n') == [1]
    assert params_readers('raise ValueError("params.yaml: train.x: bad")\nif p == "params.yaml": pass\n') == []


def test_config_is_the_only_reader_of_params_yaml():
    offenders = [f"{p.relative_to(ROOT)}:{line}"
                 for p in _python_files("pipeline", "dags", "bench") if p.name != "config.py"
                 for line in params_readers(p.read_text())]
    assert not offenders, f"only pipeline/config.py may read params.yaml: {offenders}"


def test_nothing_edits_sys_path():
    pattern = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*[+]?=|site\.addsitedir")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in _python_files(*CODE_DIRS)
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if pattern.search(line) and p.name != "test_architecture.py"]
    assert not offenders, f"install the package instead of editing sys.path: {offenders}"
    assert "pythonpath" not in (ROOT / "pytest.ini").read_text()


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        m = re.match(r"\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;#]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(3)
    return pins


def test_pyproject_pins_every_dependency_in_step_with_constraints():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [d for deps in project["optional-dependencies"].values() for d in deps]
    unpinned = [d for d in declared if "==" not in d]
    assert not unpinned, f"pyproject.toml: pin with ==: {unpinned}"
    locked = _pins((ROOT / "constraints.txt").read_text().splitlines())
    drift = {name: (version, locked.get(name)) for name, version in _pins(declared).items()
             if locked.get(name) != version}
    assert not drift, f"pyproject.toml vs constraints.txt (run `make lock`): {drift}"


def test_console_scripts_are_installed_and_answer_help():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"rnn-predict", "rnn-diff", "rnn-registry", "rnn-seeds"} <= set(scripts)
    for name in scripts:
        exe = Path(sys.executable).with_name(name)
        assert exe.exists(), f"{name} not installed: run `make setup`"
        proc = subprocess.run([str(exe), "--help"], cwd=ROOT, env=tool_env(), capture_output=True, text=True)
        assert proc.returncode == 0 and "usage" in proc.stdout.lower(), (name, proc.stderr[-1000:])
