"""The documentation site's pages (docs/*.md) as tests read them: one page, one section, its tables and code.

Each reference table exists once, in docs/; the tests that check a table against the code read it through here.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def docs_page(name: str) -> str:
    """The Markdown of ``docs/<name>`` (``"sdk"`` or ``"sdk.md"``)."""
    path = DOCS / (name if name.endswith(".md") else f"{name}.md")
    assert path.is_file(), f"docs page {path.relative_to(REPO)} is missing"
    return path.read_text(encoding="utf-8")


def _outside_fences(text: str) -> list[tuple[str, bool]]:
    """Each line with whether it lies outside fenced code (where a '#' starts a heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            lines.append((line, False))
        else:
            lines.append((line, not fenced))
    return lines


def headings(text: str) -> list[tuple[int, str]]:
    """(level, title) of every heading outside fenced code, in order."""
    found = []
    for line, prose in _outside_fences(text):
        if prose and (match := _HEADING.match(line)):
            found.append((len(match.group(1)), match.group(2)))
    return found


def section(text: str, title: str) -> str:
    """The body of the first heading called ``title`` (any level), up to the next heading of the same or a
    higher level."""
    body: list[str] = []
    level = None
    for line, prose in _outside_fences(text):
        match = _HEADING.match(line) if prose else None
        if level is None:
            if match and match.group(2) == title:
                level = len(match.group(1))
            continue
        if match and len(match.group(1)) <= level:
            break
        body.append(line)
    assert level is not None, f"no heading {title!r}"
    return "\n".join(body)


def split_row(line: str) -> list[str]:
    """The cells of one Markdown table row (``\\|`` is a literal bar inside a cell)."""
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [cell.replace("\\|", "|").strip() for cell in re.split(r"(?<!\\)\|", inner)]


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in ``text`` (outside fenced code), each as rows keyed by the header's cells."""
    found: list[list[dict[str, str]]] = []
    block: list[str] = []
    for line, prose in [*_outside_fences(text), ("", True)]:
        if prose and line.lstrip().startswith("|"):
            block.append(line)
            continue
        if len(block) >= 2 and set(block[1].replace("|", "").strip()) <= set("-: "):
            header = split_row(block[0])
            found.append([dict(zip(header, split_row(row), strict=False)) for row in block[2:]])
        block = []
    return found


def table(text: str) -> list[dict[str, str]]:
    """The first table in ``text``."""
    found = tables(text)
    assert found, "no table found"
    return found[0]


def code_spans(cell: str) -> list[str]:
    """The contents of the `code` spans of a cell, in order."""
    return re.findall(r"`([^`]+)`", cell)


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of ``language`` in ``text``, in order."""
    return re.findall(rf"^```{re.escape(language)}\n(.*?)^```", text, re.S | re.M)
