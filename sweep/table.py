"""Cells and ranks of the tables the commands print (leaderboard, compare, list); no Ray, no MLflow."""
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
