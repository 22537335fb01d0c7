"""README.md is a landing page a newcomer reads in two minutes, and every relative link and
anchor in it and in docs/ resolves (GitHub's heading anchors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")


def without_blocks(text: str) -> str:
    """The markdown without its code blocks, fenced or indented."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return "\n".join(line for line in text.splitlines() if not line.startswith("    "))


def prose(text: str) -> str:
    """The markdown without any code: blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", without_blocks(text))


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``path``: lower case, punctuation dropped,
    spaces as hyphens, a repeated one numbered."""
    seen: dict[str, int] = {}
    found = set()
    for line in without_blocks(path.read_text()).splitlines():
        if not (match := re.match(r"^#{1,6} (.+)$", line)):
            continue
        text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", match[1]).replace("`", "").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(path: Path) -> list[str]:
    return [target for _, target in LINK.findall(prose(path.read_text()))]


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file or heading does not exist."""
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target}: no heading #{anchor}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_readme_is_short_and_links_every_page_of_the_manual() -> None:
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 200
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(readme)}
    assert [p.name for p in PAGES[1:] if p.resolve() not in linked] == []


def test_the_link_check_catches_a_broken_link_and_anchor(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A page\n\n## Two `words`\n\nsee [x](#two-words)\n")
    assert anchors(tmp_path / "a.md") == {"a-page", "two-words"}
    (tmp_path / "b.md").write_text("[ok](a.md#a-page) [gone](c.md) [nowhere](a.md#b) `[no](x)`\n")
    assert links(tmp_path / "b.md") == ["a.md#a-page", "c.md", "a.md#b"]
    assert broken_links(tmp_path / "b.md") == ["c.md: no such file", "a.md#b: no heading #b"]
