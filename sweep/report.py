"""The leaderboard printed at the end of a sweep."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sweep.objective import Objective
from sweep.table import fmt, shared_ranks
from sweep.trial import FINAL_KEY, OBJECTIVE_KEY, TRIAL_NUMBER_KEY


@dataclass
class Row:
    number: int
    trial_id: str
    state: str                      # ok | diverged | wallclock_cap | pruned | failed | stopped
    objective: float | None
    params: dict[str, Any] = field(default_factory=dict)
    wallclock_s: float | None = None
    error: str = ""


def result_state(result, pruned: set[int]) -> str:
    """How a trial of a Tune `ResultGrid` ended; `pruned` holds the trial numbers Optuna has as pruned
    (a trial without a final result that was not pruned was stopped by an interruption)."""
    metrics = result.metrics or {}
    if result.error is not None:
        return "failed"
    if metrics.get(FINAL_KEY):
        return str(metrics.get("status", "ok"))
    return "pruned" if (result.config or {}).get(TRIAL_NUMBER_KEY) in pruned else "stopped"


def rows_from_results(results, space_keys: list[str], pruned: set[int]) -> list[Row]:
    """One row per trial of a Tune `ResultGrid`."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        config = result.config or {}
        state = result_state(result, pruned)
        rows.append(Row(number=int(config.get(TRIAL_NUMBER_KEY, -1)), trial_id=str(metrics.get("trial_id", "")),
                        state=state, objective=metrics.get(OBJECTIVE_KEY) if metrics.get(FINAL_KEY) else None,
                        params={k: config.get(k) for k in space_keys}, wallclock_s=metrics.get("wallclock_s"),
                        error=str(result.error or "")))
    return rows


def ranked(rows: list[Row], objective: Objective) -> list[Row]:
    sign = 1.0 if objective.mode == "min" else -1.0
    return sorted(rows, key=lambda r: (r.objective is None, sign * (r.objective or 0.0), r.number))


def best(rows: list[Row], objective: Objective) -> Row | None:
    top = ranked(rows, objective)
    return top[0] if top and top[0].objective is not None else None


def leaderboard(rows: list[Row], objective: Objective) -> str:
    keys = list(rows[0].params) if rows else []
    header = ["rank", "trial", "status", objective.metric, *keys, "wallclock_s"]
    table = [header]
    ordered = ranked(rows, objective)
    for rank, row in zip(shared_ranks([r.objective for r in ordered]), ordered):
        table.append([rank, str(row.number), row.state,
                      fmt(row.objective), *(fmt(row.params.get(k)) for k in keys), fmt(row.wallclock_s)])
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if c else cell.ljust(w) for c, (cell, w) in
                               enumerate(zip(r, widths))).rstrip() for r in table)


def best_line(row: Row | None, objective: Objective) -> str:
    if row is None:
        return "best: none (no trial finished)"
    params = ", ".join(f"{k}={fmt(v)}" for k, v in row.params.items())
    return f"best: trial {row.number} {objective.metric}={row.objective!r} ({params})"
