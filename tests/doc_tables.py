"""Reading docs/architecture.md as data: a section's markdown table, and the `code` names in its cells.

tests/test_layers.py and tests/test_architecture_doc.py check the code against the doc through these,
so the doc is the one table the checks read (no copy in a test that could disagree with it)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO / "docs" / "architecture.md"


def section(text: str, heading: str) -> str:
    """The body of the section whose heading line is exactly `heading` (e.g. "## Layers"), up to the next
    heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        raise AssertionError(f"{ARCHITECTURE.name}: no section {heading!r}") from None
    out = []
    for line in lines[start + 1:]:
        m = re.match(r"(#+) ", line)
        if m and len(m.group(1)) <= level:
            break
        out.append(line)
    return "\n".join(out)


def first_table(text: str, heading: str) -> list[dict[str, str]]:
    """The first markdown table of section `heading`: one dict per row, keyed by the header cells."""
    lines = section(text, heading).splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        raise AssertionError(f"{ARCHITECTURE.name} {heading}: no table")
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        # a `|` inside backticks is part of a cell, not a border
        rows.append([c.strip() for c in re.split(r"\|(?=(?:[^`]*`[^`]*`)*[^`]*$)", line.strip())[1:-1]])
    header, sep, data = rows[0], rows[1], rows[2:]
    assert all(set(c) <= set("-: ") for c in sep), f"{heading}: not a table separator: {sep}"
    for cells in data:
        assert len(cells) == len(header), f"{heading}: a row of {len(cells)} cells, header {len(header)}: {cells}"
    return [dict(zip(header, cells, strict=True)) for cells in data]


def code_names(cell: str) -> list[str]:
    """The `code` spans of a cell, in order."""
    return re.findall(r"`([^`]+)`", cell)
