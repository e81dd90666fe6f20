"""Cells, ranks and the layout of the tables the commands print (leaderboard, compare, list); no Ray, no MLflow."""
from __future__ import annotations

from typing import Any


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def shared_ranks(objectives: list[float | None]) -> list[str]:
    """Ranks of already sorted objectives, equal ones sharing a rank (1, 1, 3); '-' for no objective."""
    ranks, previous = [], None
    for i, value in enumerate(objectives, 1):
        if value is None:
            ranks.append("-")
            continue
        if value != previous:
            rank, previous = i, value
        ranks.append(str(rank))
    return ranks


def render(lines: list[list[str]], text_columns: int = 1) -> str:
    """Rows of cells (the first is the header) in aligned columns: the first `text_columns` to the left,
    the rest (numbers) to the right."""
    widths = [max(len(line[c]) for line in lines) for c in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(w) if c < text_columns else cell.rjust(w)
                               for c, (cell, w) in enumerate(zip(line, widths))).rstrip() for line in lines)


def without_empty_columns(lines: list[list[str]], first: int = 0) -> list[list[str]]:
    """The table without the columns from `first` on that hold no value ('-') in any row (the header kept
    while there are no rows)."""
    rows = lines[1:]
    keep = [c for c in range(len(lines[0])) if c < first or not rows or any(row[c] != "-" for row in rows)]
    return [[line[c] for c in keep] for line in lines]
