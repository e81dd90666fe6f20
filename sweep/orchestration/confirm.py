"""A sweep's confirmation (`sweep run --confirm K`): once the search has ended, the top K distinct
configurations and the baseline (trial 0: the space's first point) run again on the same seeds 1..N, so
seed effects cancel in their differences, and the confirmed leaderboard says which beat the baseline
beyond noise (sweep.report.confirm_report). A source-mode script that names no seed site runs N repeats of each
configuration instead, compared unpaired (`paired`).

The seeds run as Tune trials on whole nodes like the search's (sweep.orchestration.seed_grid), in the Tune experiment
`<results-dir>/<name>-confirm`. In MLflow the confirmation is a parent run of role `confirm` nested under
the sweep's parent run, with one child run per (configuration, seed): trial number `c * N + i` runs
configuration c (0 = the baseline) on seed i + 1. Its runs are not the sweep's trials, so the search
leaderboard, `sweep compare` and `sweep list` do not count them. The plan records the trials confirmed and
the confirmation's run, so `sweep resume` continues the same confirmation: finished runs give their
results back, and the Tune experiment is restored when Tune saved it.
"""
from __future__ import annotations

from typing import Any

from sweep.inputs.plan import CONFIRM, SweepPlan
from sweep.inputs.space import SearchSpace
from sweep.report.confirm_report import ConfirmedConfig
from sweep.report.trial_rows import TrialRow, ranked
from sweep.report.verify_claim import RESULT_STATES
from sweep.stores import results_dir as results
from sweep.stores import tracking
from sweep.stores.study import load_study
from sweep.trial.command import TrialSettings

ROLE = "confirm"
MARKDOWN_ARTIFACT = "confirm.md"
TAG_WINNER = "sweep.confirm.winner"        # on the sweep's parent run: the winning trial's number, or none
TAG_TRIALS = "sweep.confirm.trials"        # on the confirmation's run: the search trials confirmed


def pick_trials(rows: list[TrialRow], params: dict[int, dict[str, Any]], top: int, space: SearchSpace) -> list[int]:
    """The baseline (trial 0), then the best `top` finished trials whose values differ from the baseline's
    and from each other's (a configuration the search ran twice is confirmed once)."""
    chosen = [0]
    for row in ranked(rows, space.objective):
        if len(chosen) > top:
            break
        if row.objective is None or row.status not in RESULT_STATES or row.number not in params:
            continue
        if all(params[row.number] != params[n] for n in chosen):
            chosen.append(row.number)
    return chosen


def paired(space: SearchSpace) -> bool:
    """Whether every configuration runs the same seeds, so the seed's effect cancels in the differences to
    the baseline (a paired design), or, for a source-mode script that names no seed site, runs repeats
    whose differences are tested unpaired (Welch's t-test)."""
    return bool(space.trainer.seed_key)


def seeds(plan: SweepPlan) -> list[int]:
    return list(range(1, plan.confirm_seeds + 1))


def trial_numbers(plan: SweepPlan) -> dict[int, tuple[int, int]]:
    """Confirmation trial number -> (configuration index, seed)."""
    n = plan.confirm_seeds
    return {c * n + i: (c, seed) for c in range(len(plan.confirm_trials)) for i, seed in enumerate(seeds(plan))}


def prepare(plan: SweepPlan, space: SearchSpace, rows: list[TrialRow], mlflow_client, experiment_id: str,
            command: str) -> dict[int, dict[str, Any]]:
    """Choose the configurations (once: a resume keeps the plan's) and open the confirmation's run;
    returns the swept values of each confirmed trial."""
    trials = {t.number: dict(t.params) for t in load_study(plan.storage, plan.name).get_trials(deepcopy=False)}
    if not plan.confirm_trials:
        plan.confirm_trials = pick_trials(rows, trials, plan.confirm, space)
        plan.stage = CONFIRM
        plan.save()
    if plan.confirm_run_id:
        mlflow_client.update_run(plan.confirm_run_id, status="RUNNING")
    else:
        plan.confirm_run_id = tracking.open_parent(
            mlflow_client, experiment_id, plan.confirm_name, ROLE, plan.preset, plan.address, command,
            {tracking.PARENT_RUN_TAG: plan.parent_run_id, tracking.TAG_METRIC: space.metric,
             tracking.TAG_MODE: space.mode, TAG_TRIALS: ",".join(map(str, plan.confirm_trials))})
        plan.save()
    return {n: trials[n] for n in plan.confirm_trials}


def run(plan: SweepPlan, space: SearchSpace, values: dict[int, dict[str, Any]], experiment_id: str,
        interrupts) -> None:
    """Run (or continue) the confirmation's trials on the Ray the driver started."""
    from sweep.orchestration.seed_grid import run_grid

    seed_key = space.trainer.seed_key
    table = {number: {**values[plan.confirm_trials[c]], **({seed_key: seed} if paired(space) else {})}
             for number, (c, seed) in trial_numbers(plan).items()}
    settings = TrialSettings(
        sweep=plan.confirm_name, preset=plan.preset, objective=space.objective,
        run_root=str((results.local_folder(plan.results_dir, plan.confirm_name) / "trials").resolve()),
        cwd=plan.cwd, mlflow_uri=plan.mlflow_uri, experiment_id=experiment_id, parent_run_id=plan.confirm_run_id,
        fixed=dict(space.fixed), nproc=plan.nproc_per_trial, gpus=plan.gpus_per_trial, cpus=plan.cpus_per_trial,
        trainer=space.trainer, seed=plan.seed or 0)
    runs = (f"on seeds 1..{plan.confirm_seeds}" if paired(space) else
            f"{plan.confirm_seeds} times each (the script names no seed site: unpaired repeats)")
    print(f"confirmation {plan.confirm_name}: trials {', '.join(map(str, plan.confirm_trials))} (the baseline "
          f"first) {runs}: {len(table)} runs", flush=True)
    run_grid(settings, table, name=plan.confirm_name, results_dir=plan.results_dir, concurrency=plan.concurrency,
             max_failures=plan.max_failures, metric=space.metric, mode=space.mode, interrupts=interrupts)


def configs(plan: SweepPlan, values: dict[int, dict[str, Any]], mlflow_client, experiment_id: str) -> list[ConfirmedConfig]:
    """What each confirmed configuration gave on each seed, read back from the confirmation's child runs."""
    from sweep.orchestration.seed_grid import seed_results

    numbers = trial_numbers(plan)
    found = seed_results(mlflow_client, experiment_id, plan.confirm_run_id,
                         {number: seed for number, (_, seed) in numbers.items()}, tracking.OBJECTIVE_METRIC)
    return [ConfirmedConfig(trial, values[trial], [found[n] for n, (c, _) in sorted(numbers.items()) if c == index])
            for index, trial in enumerate(plan.confirm_trials)]
