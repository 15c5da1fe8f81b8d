"""Every relative link in README.md and docs/ resolves: to a file or folder of the repository
and, with a #fragment, to a heading of the Markdown page it names. The README is an overview
that links into docs/; this keeps the split from rotting when a page or heading moves."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def pages(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _prose(text: str) -> str:
    """The text without code blocks and code spans, where brackets are not links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text lowercased, punctuation dropped, spaces as '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if base in seen else base)  # repeated headings: -1, -2, ...
        seen[base] = seen.get(base, 0) + 1
    return found


def broken(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links of `page` that lead nowhere, each with why."""
    problems = []
    for target in _LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        name = file.relative_to(root).as_posix() if file.is_relative_to(root) else str(file)
        if not file.exists():
            problems.append(f"{target}: no {name}")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            problems.append(f"{target}: no heading #{fragment} in {name}")
    return problems


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken(page) == []


def test_the_readme_links_into_every_docs_page():
    linked = {(ROOT / target.partition("#")[0]).resolve()
              for target in _LINK.findall(_prose((ROOT / "README.md").read_text(encoding="utf-8")))}
    unlinked = [str(p.relative_to(ROOT)) for p in pages()[1:] if p.parent == ROOT / "docs" and p.resolve() not in linked]
    assert unlinked == [], f"docs pages the README's index does not link to: {unlinked}"


def test_broken_files_and_anchors_are_named_and_code_is_not_a_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Multi-node training (`resources.nodes`)\n\n## Notes\n\n## Notes\n")
    (tmp_path / "README.md").write_text(
        "# Title\n\n"
        "[ok](docs/guide.md#multi-node-training-resourcesnodes) [repeated](docs/guide.md#notes-1) [self](#title)\n"
        "[web](https://example.com/x) [folder](docs/)\n"
        "[gone](docs/missing.md) [bad anchor](docs/guide.md#multinode) [bad self](#nothing)\n"
        "`[in code](docs/nowhere.md)`\n\n```\n[in a block](docs/nowhere.md)\n```\n")
    assert broken(tmp_path / "README.md", tmp_path) == [
        "docs/missing.md: no docs/missing.md",
        "docs/guide.md#multinode: no heading #multinode in docs/guide.md",
        "#nothing: no heading #nothing in README.md",
    ]
