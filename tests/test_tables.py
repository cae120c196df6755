"""The results table (README, docs/results.md), the per-stage runtime table
(docs/results.md) and the speed table (docs/training-speed.md) are generated
from the committed metrics and bench report, never typed."""

import pytest

from conftest import ROOT
from pipeline.review import tables


def test_readme_results_table_matches_the_committed_run():
    assert tables.main(["--project", str(ROOT), "--check"]) == 0, \
        "README.md's results table differs from metrics/evaluate.json: run `rnn-tables`"


def _copy(tmp_path):
    runtime = sorted(p.relative_to(ROOT).as_posix()
                     for p in (ROOT / "metrics" / "runtime").glob("*.json"))
    for rel in ("README.md", "params.yaml", "dvc.yaml", "metrics/evaluate.json", *runtime,
                "docs/results.md", "docs/training-speed.md",
                *(p.relative_to(ROOT).as_posix() for p in (ROOT / "reports").glob("*.md"))):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((ROOT / rel).read_text())


@pytest.mark.parametrize("rel, begin, end", [
    ("README.md", tables.BEGIN, tables.END),
    ("docs/results.md", tables.RUNTIME_BEGIN, tables.RUNTIME_END),
    ("docs/training-speed.md", "<!-- report: reports/bench-train.md -->", "<!-- /report -->")])
def test_the_check_fails_when_a_number_is_edited_by_hand(tmp_path, rel, begin, end):
    _copy(tmp_path)
    doc = tmp_path / rel
    text = doc.read_text()
    begin, end = text.index(begin), text.index(end)
    block = text[begin:end]
    first = next(tok for tok in block.split() if tok.rstrip("%x").replace(".", "").isdigit()
                 and "." in tok)
    doc.write_text(text[:begin] + block.replace(first, "12.34", 1) + text[end:])
    assert tables.main(["--project", str(tmp_path), "--check"]) == 1
    assert tables.main(["--project", str(tmp_path)]) == 0
    assert tables.main(["--project", str(tmp_path), "--check"]) == 0


def test_a_readme_without_the_markers_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no <!-- results:begin -->"):
        tables.updated("no table here", "x", tmp_path / "README.md")
