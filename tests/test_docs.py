"""The documentation a user's clone has: a short README, and links that stay inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)       # code blocks are not links
    return LINK.findall(text)


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the rest belongs in docs/"
    head = "\n".join(lines[:30])
    assert "make demo" in head and "make test" in head


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_inside_the_repository(page):
    broken = []
    for link in _links(page):
        if re.match(r"[a-z]+:", link) or link.startswith("#"):
            continue                                              # a web address or an anchor of the page
        target = (page.parent / link.split("#")[0]).resolve()
        if not target.is_relative_to(ROOT) or not target.exists():
            broken.append(link)
    assert not broken, f"{page.name}: links that leave the repository or lead nowhere: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_points_at_the_teams_internal_notes(page):
    assert "../shared" not in page.read_text()


def test_the_link_check_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[a](missing.md) [b](https://example.org) ```\n[c](in-code.md)\n```")
    assert _links(page) == ["missing.md", "https://example.org"]
