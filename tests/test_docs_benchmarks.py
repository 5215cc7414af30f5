"""The README's benchmark table copies rows of docs/benchmarks.md: same row labels, same numbers.

Fast and static (no benchmark runs): every row of the table under the README's "## Benchmarks" heading must
have exactly one table row in docs/benchmarks.md with the same label (first cell), and every number in the
README row's other cells must appear in that row or in its table's header row (where a table's columns are
runs, the date and time are in the header).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC = ROOT / "docs" / "benchmarks.md"

# a number as written in the docs: 4,252 / 0.98 / 2026 (from 2026-11-29) / 06 (from 06:35); digits inside
# words (rgb2hed, 2x224's 224) are not numbers of their own
NUMBER = re.compile(r"(?<![\w.,])\d+(?:,\d{3})*(?:\.\d+)?")


def _cells(line: str) -> list[str]:
    return [c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]


def _tables(lines: list[str]) -> list[list[list[str]]]:
    """Markdown tables as lists of rows of cells (the header first, the --- separator dropped)."""
    tables, current = [], []
    for line in lines + [""]:
        if line.lstrip().startswith("|"):
            if not re.fullmatch(r"\|?[\s:|-]+\|?", line.strip()):
                current.append(_cells(line))
        elif current:
            tables.append(current)
            current = []
    return tables


def _readme_rows() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Benchmarks", 1)[1].split("\n## ", 1)[0]
    assert "docs/benchmarks.md" in section, "the README's benchmark section must say where its rows come from"
    tables = _tables(section.splitlines())
    assert len(tables) == 1, "one benchmark table in the README"
    return tables[0][1:]


def _doc_rows() -> dict[str, list[tuple[set[str], set[str]]]]:
    """label -> [(numbers in the row, numbers in its table's header)]"""
    out: dict[str, list[tuple[set[str], set[str]]]] = {}
    for table in _tables(DOC.read_text(encoding="utf-8").splitlines()):
        header = set(NUMBER.findall(" | ".join(table[0])))
        for row in table[1:]:
            out.setdefault(row[0], []).append((set(NUMBER.findall(" | ".join(row[1:]))), header))
    return out


def test_number_pattern():
    assert NUMBER.findall("4,252 [4,249] | rgb2hed 106 | 0.98x | 2026-11-30 06:35, 2x224") == \
        ["4,252", "4,249", "106", "0.98", "2026", "11", "30", "06", "35", "2"]


def test_readme_benchmark_rows_are_copies_of_docs_benchmarks():
    rows, doc = _readme_rows(), _doc_rows()
    assert len(rows) >= 5
    problems = []
    for row in rows:
        label, numbers = row[0], set(NUMBER.findall(" | ".join(row[1:])))
        matches = doc.get(label, [])
        if len(matches) != 1:
            problems.append(f"{label!r}: {len(matches)} rows with this label in docs/benchmarks.md (expected 1)")
            continue
        in_row, in_header = matches[0]
        missing = sorted(numbers - in_row - in_header)
        if missing:
            problems.append(f"{label!r}: {missing} not in the docs/benchmarks.md row of the same label")
    assert not problems, "\n".join(problems)
