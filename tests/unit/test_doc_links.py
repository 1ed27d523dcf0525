"""The documents point at things that exist: links, anchors and repository paths.

A newcomer follows README.md's links and opens the files it names; each must be there. Checked:
every relative Markdown link (and its `#anchor`, against the target's headings), and every
backticked path that starts at a top-level folder or file of the repository (`shared/db.py`,
`tests/e2e/test_demo.py`, `docs/`, globs and `{a,b}` alternatives included).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [
    ROOT / "README.md",
    ROOT / "SECURITY.md",
    ROOT / "BENCHMARKS.md",
    ROOT / "sandbox" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE = re.compile(r"`([^`\n]+)`")
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_PATHLIKE = re.compile(r"^[\w.*{},/-]+$")
_BRACES = re.compile(r"\{([^{}]*)\}")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def github_anchor(heading: str) -> str:
    """GitHub's heading id: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    text = _FENCE.sub("", document.read_text())
    return {github_anchor(h) for h in _HEADING.findall(text)}


def links(text: str) -> Iterator[str]:
    for match in _LINK.finditer(_FENCE.sub("", text)):
        target = match.group(1)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: …
            yield target


def expand_braces(pattern: str) -> list[str]:
    match = _BRACES.search(pattern)
    if not match:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [p for alt in match.group(1).split(",") for p in expand_braces(head + alt + tail)]


def repo_paths(text: str, top_level: set[str]) -> Iterator[str]:
    """Backticked tokens that name something under one of the repository's top-level entries."""
    for span in _CODE.findall(text):
        token = span.strip().rstrip(".,:;")
        token = re.sub(r"::\w+$", "", token)  # `devstack/stack.py::FUNCTION_ENV`
        if "/" not in token or not _PATHLIKE.match(token) or token.startswith("/"):
            continue
        if token.split("/", 1)[0] in top_level or token.startswith("../"):
            yield token


def exists(path: str, base: Path) -> bool:
    return all(
        any(base.glob(alt.rstrip("/"))) if "*" in alt else (base / alt).exists()
        for alt in expand_braces(path)
    )


def problems_in(document: Path, root: Path) -> list[str]:
    text = document.read_text()
    top_level = {p.name for p in root.iterdir() if not p.name.startswith(".")}
    found: list[str] = []
    for target in links(text):
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.is_relative_to(root) or not resolved.exists():
            found.append(f"link {target!r}: no such file in the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            found.append(f"link {target!r}: no heading #{anchor} in {resolved.name}")
    for path in repo_paths(text, top_level):
        # `../x` is relative to the document (and must stay inside the repository).
        base = document.parent if path.startswith("../") else root
        if not (base / path.split("*")[0]).resolve().is_relative_to(root) or not exists(path, base):
            found.append(f"path `{path}`: not in the repository")
    return [f"{document.relative_to(root)}: {p}" for p in found]


def test_the_checker_catches_dead_links_anchors_and_paths(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "db.py").write_text("")
    (tmp_path / "other.md").write_text("# Other\n## Real `heading` here\n")
    doc = tmp_path / "README.md"
    doc.write_text(
        "[ok](other.md#real-heading-here) [anchor](other.md#missing) [gone](docs/nope.md)\n"
        "[out](../outside.md) [web](https://example.com/x) [self](#top)\n"
        "`shared/db.py` `shared/{db,gone}.py` `shared/*.py` `shared/nothing.py` `a/b`\n"
        "`../seed/x.md`\n"
        "```\n[fenced](not/checked.md)\n```\n# Top\n"
    )
    assert problems_in(doc, tmp_path) == [
        "README.md: link 'other.md#missing': no heading #missing in other.md",
        "README.md: link 'docs/nope.md': no such file in the repository",
        "README.md: link '../outside.md': no such file in the repository",
        "README.md: path `shared/{db,gone}.py`: not in the repository",
        "README.md: path `shared/nothing.py`: not in the repository",
        "README.md: path `../seed/x.md`: not in the repository",
    ]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_paths_in_the_documents_resolve(document: Path) -> None:
    assert problems_in(document, ROOT) == []
