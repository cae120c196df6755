"""README's results table is generated from the committed metrics, never typed."""

import pytest

from conftest import ROOT
from pipeline.review import tables


def test_readme_results_table_matches_the_committed_run():
    assert tables.main(["--project", str(ROOT), "--check"]) == 0, \
        "README.md's results table differs from metrics/evaluate.json: run `rnn-tables`"


def test_the_check_fails_when_a_number_is_edited_by_hand(tmp_path):
    for rel in ("README.md", "params.yaml", "metrics/evaluate.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((ROOT / rel).read_text())
    readme = tmp_path / "README.md"
    text = readme.read_text()
    begin, end = text.index(tables.BEGIN), text.index(tables.END)
    block = text[begin:end]
    first_pct = next(tok for tok in block.split() if tok.endswith("%") and tok[0].isdigit())
    readme.write_text(text[:begin] + block.replace(first_pct, "12.34%", 1) + text[end:])
    assert tables.main(["--project", str(tmp_path), "--check"]) == 1
    assert tables.main(["--project", str(tmp_path)]) == 0
    assert tables.main(["--project", str(tmp_path), "--check"]) == 0


def test_a_readme_without_the_markers_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no <!-- results:begin -->"):
        tables.updated("no table here", "x", tmp_path / "README.md")
