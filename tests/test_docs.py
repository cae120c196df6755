"""The README is one page that points to docs/; every link in the docs resolves."""

import re
from pathlib import Path

import pytest

from conftest import ROOT

README = ROOT / "README.md"
MAX_README_LINES = 250
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target)
PAGES = [README, ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def broken_links(page: Path) -> list[str]:
    """Relative link targets of a Markdown page that name no file (anchors ignored)."""
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    return broken


def test_the_link_check_catches_a_missing_file(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("x")
    page.write_text("[a](there.md#part) [b](gone.md) [c](https://x.org/y) [d](#top)\n")
    assert broken_links(page) == ["gone.md"]


def test_readme_is_one_page():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md: {n} lines (at most {MAX_README_LINES}); move narrative to docs/"


def test_readme_has_the_picture_the_two_commands_and_the_results():
    text = README.read_text()
    assert "```mermaid" in text, "README.md: no picture of the pipeline"
    for command in ("make repro", "make test"):
        assert command in text, f"README.md does not give `{command}`"
    assert "<!-- results:begin -->" in text and "<!-- results:end -->" in text
    assert "docs/architecture.md" in text


def test_architecture_page_names_every_package():
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert text.count("```mermaid") >= 2, "docs/architecture.md: the package and data-flow diagrams"
    packages = sorted(p.parent.name for p in (ROOT / "pipeline").glob("*/__init__.py"))
    missing = [p for p in packages if f"pipeline/{p}" not in text and f"pipeline.{p}" not in text]
    assert not missing, f"docs/architecture.md does not mention {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert not broken_links(page), f"{page.relative_to(ROOT)}: links to missing files {broken_links(page)}"
