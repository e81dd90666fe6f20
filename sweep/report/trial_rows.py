"""One row per trial of a sweep (or verification), read from its MLflow child runs, and the tables made of
them: the leaderboard `sweep run` prints at the end, `sweep compare`'s table, `sweep verify`'s pick of the
best trial, `sweep list`'s counts.

The child runs are the one record every command reads, so a resumed sweep's leaderboard holds the trials
of all its drivers, and a trial stopped before it could write its run has one (the driver writes it:
sweep.stores.child_run.record_ended).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sweep.errors import InputError
from sweep.inputs.objective import Objective
from sweep.report.table import fmt, render, shared_ranks, without_empty_columns
from sweep.report.verify_claim import RESULT_STATES
from sweep.stores import tracking
from sweep.stores.tracking import trial_label

RUNNING = "running"
NOISE_FLOOR_STDS = 2   # trials closer than this many seed stds to the best tie with it


@dataclass
class TrialRow:
    number: int
    run_id: str
    status: str                     # ok | diverged | wallclock_cap | pruned | failed | stopped | running
    objective: float | None         # None until the trial has a final result
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    name: str = ""
    objective_from: str = ""        # which evaluation the objective came from (tracking.TAG_OBJECTIVE_FROM)

    @property
    def wallclock_s(self) -> float | None:
        return self.metrics.get(tracking.WALLCLOCK_METRIC)


def param_value(text: str | None) -> Any:
    """A param as MLflow holds it (a string) back as a number where it reads as one."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def from_run(run, keys: list[str]) -> TrialRow:
    tags, metrics = run.data.tags, run.data.metrics
    live = run.info.status == "RUNNING"
    return TrialRow(
        number=int(tags[tracking.TAG_TRIAL_NUMBER]), run_id=run.info.run_id, name=run.info.run_name,
        status=RUNNING if live else tags.get(tracking.TAG_STATUS, run.info.status.lower()),
        objective=None if live else metrics.get(tracking.OBJECTIVE_METRIC),
        params={k: param_value(run.data.params.get(tracking.param_name(k))) for k in keys}, metrics=dict(metrics),
        objective_from="" if live else tags.get(tracking.TAG_OBJECTIVE_FROM, ""))


def read_rows(mlflow_client, experiment_id: str, parent_run_id: str, keys: list[str]) -> list[TrialRow]:
    return [from_run(run, keys) for run in tracking.child_runs(mlflow_client, experiment_id, parent_run_id)]


def sweep_rows(plan) -> list[TrialRow]:
    """The rows of the sweep `plan` (a sweep.inputs.plan.SweepPlan), ranked."""
    client = tracking.client(plan.mlflow_uri)
    experiment = client.get_experiment_by_name(plan.experiment)
    if experiment is None:
        raise InputError(plan.name, f"no MLflow experiment {plan.experiment!r} in {plan.mlflow_uri}")
    space = plan.space()
    return ranked(read_rows(client, experiment.experiment_id, plan.parent_run_id, list(space.params)),
                  space.objective)


def ranked(rows: list[TrialRow], objective: Objective) -> list[TrialRow]:
    """Trials with a result first, best first; then the others by trial number."""
    sign = 1.0 if objective.mode == "min" else -1.0
    return sorted(rows, key=lambda r: (r.objective is None, sign * (r.objective or 0.0), r.number))


def best(rows: list[TrialRow], objective: Objective) -> TrialRow | None:
    top = ranked(rows, objective)
    return top[0] if top and top[0].objective is not None else None


def ranked_table(rows: list[TrialRow], objective: Objective, header: list[str], cells) -> str:
    """`rows` ranked, equal objectives sharing a rank, as a table: rank, trial, status, then `cells(row)`,
    less the columns no row has a value in."""
    ordered = ranked(rows, objective)
    lines = [["rank", "trial", "status", *header]]
    lines += [[rank, trial_label(r.number), r.status, *cells(r)]
              for rank, r in zip(shared_ranks([r.objective for r in ordered]), ordered)]
    return render(without_empty_columns(lines, first=3))


def within_noise(rows: list[TrialRow], objective: Objective, floor: float) -> set[int]:
    """The trials with a result (ok or wallclock_cap) whose objective lies within `floor` of the best's."""
    top = best([r for r in rows if r.status in RESULT_STATES], objective)
    if top is None:
        return set()
    return {r.number for r in rows
            if r.status in RESULT_STATES and r.objective is not None and abs(r.objective - top.objective) <= floor}


def leaderboard(rows: list[TrialRow], objective: Objective, noise_std: float | None = None,
                noise_source: str = "") -> str:
    """The ranked table, with the evaluation each objective came from (`from`); with a seed-noise estimate,
    the trials that tie with the best within the noise floor (NOISE_FLOOR_STDS x the std) are marked `~`,
    and a line says how many there are."""
    keys = list(rows[0].params) if rows else []
    header = [objective.metric, "from", *keys, "wallclock_s"]
    cells = lambda r: [fmt(r.objective), r.objective_from or "-", *(fmt(r.params.get(k)) for k in keys),
                       fmt(r.wallclock_s)]
    if noise_std is None:
        return ranked_table(rows, objective, header, cells)
    floor = NOISE_FLOOR_STDS * noise_std
    ties = within_noise(rows, objective, floor)
    table = ranked_table(rows, objective, ["~", *header], lambda r: ["~" if r.number in ties else "", *cells(r)])
    count = "1 trial" if len(ties) == 1 else f"{len(ties)} trials"
    return (f"{table}\n{count} within the noise floor ({NOISE_FLOOR_STDS} x std = {floor:.4g}, "
            f"std {noise_std:.4g} {noise_source}) of the best, marked ~: the search cannot tell them apart")


def best_line(row: TrialRow | None, objective: Objective) -> str:
    if row is None:
        return "best: none (no trial finished)"
    params = ", ".join(f"{k}={fmt(v)}" for k, v in row.params.items())
    return f"best: {trial_label(row.number)} {objective.metric}={row.objective!r} ({params})"
