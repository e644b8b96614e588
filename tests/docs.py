"""Reading README.md and docs/ for the docs tests: fenced blocks, tables, links and headings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```$", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Block:
    path: Path
    lang: str
    runnable: bool
    code: str


def doc_files() -> list[Path]:
    """The README and every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """Fenced code blocks; one whose info string says `runnable` (```python runnable) is run by a test."""
    return [Block(path, m[1], "runnable" in m[2].split(), m[3]) for m in FENCE.finditer(path.read_text())]


def prose(text: str) -> str:
    """The text without fenced blocks and inline code, where commands and literal output live."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m) for m in re.findall(r"^#+ (.+)$", FENCE.sub("", path.read_text()), flags=re.M)}


def links(path: Path) -> list[str]:
    """Relative link targets (web addresses left out)."""
    return [t for t in LINK.findall(FENCE.sub("", path.read_text())) if not re.match(r"\w+://|mailto:", t)]


def first_column(table_after: str, text: str) -> list[str]:
    """The first cell of every row of the first table after the line containing `table_after`."""
    lines = text.split(table_after, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:  # after the header and its |---| line
        if not line.startswith("|"):
            break
        rows.append(line.split("|")[1].strip().strip("`"))
    return rows
