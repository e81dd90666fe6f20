"""A fixed list of trials, each with its own values and seed, run as one Tune experiment, and their results
read back from their child runs: the seeds of `sweep verify` and the paired seeds of a sweep's
confirmation (`sweep run --confirm`).

Each trial's number (its key in the list) names its run directory and finds its MLflow child run, so a
restarted experiment, or a new one after a driver died before Tune saved anything, finds the runs that
already finished and gets their results back instead of training again (sweep.stores.child_run).
"""
from __future__ import annotations

from functools import partial
from typing import Any

from sweep.inputs.resources import TrialResources
from sweep.report.verify_claim import NOT_RUN, SeedResult
from sweep.trial.runner import TRIAL_NUMBER_KEY, TrialSettings

TRAIN_TIME_METRIC = "final_train_time_ms"


def _value(table: dict[int, dict[str, Any]], key: str, spec) -> Any:
    return table[spec.config[TRIAL_NUMBER_KEY]][key]


def grid_space(table: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Tune's param space for the trials of `table` (trial number -> values, the same keys for all)."""
    from ray import tune

    keys = list(next(iter(table.values())))
    return {TRIAL_NUMBER_KEY: tune.grid_search(sorted(table)),
            **{key: tune.sample_from(partial(_value, table, key)) for key in keys}}


def run_grid(settings: TrialSettings, table: dict[int, dict[str, Any]], *, name: str, results_dir: str,
             concurrency: int, max_failures: int, metric: str, mode: str, interrupts=None):
    """Run the trials of `table` as the Tune experiment `<results_dir>/<name>` (continuing it when it
    exists and is not torn: sweep.orchestration.tune_state), on a Ray already started; returns Tune's
    `ResultGrid`."""
    from contextlib import nullcontext

    from ray import tune

    from sweep.inputs.resources import trials_that_fit
    from sweep.orchestration.live import LiveView
    from sweep.orchestration.tune_state import restored
    from sweep.orchestration.tuner import new_tuner
    from sweep.stores import results_dir as results

    path = results.join(results_dir, name)
    space = grid_space(table)
    tuner = restored(settings, path, param_space=space)
    if tuner is None:
        fits = concurrency or trials_that_fit(len(table), TrialResources(settings.gpus, settings.nproc, settings.cpus))
        tuner = new_tuner(settings, name=name, results_dir=results_dir, max_failures=max_failures,
                          param_space=space,
                          tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=fits),
                          callbacks=[LiveView(metric, mode, len(table), settings.sweep, fits)])
    with interrupts.tune() if interrupts is not None else nullcontext():
        return tuner.fit()


def seed_results(mlflow_client, experiment_id: str, parent_run_id: str, seeds: dict[int, int],
                 loss_metric: str) -> dict[int, SeedResult]:
    """Each trial's loss and training time as its child run holds them, by trial number; `seeds` maps the
    trial numbers to the seeds they ran."""
    from sweep.report.trial_rows import read_rows

    rows = {r.number: r for r in read_rows(mlflow_client, experiment_id, parent_run_id, [])}
    found = {}
    for number, seed in seeds.items():
        row = rows.get(number)
        if row is None:
            found[number] = SeedResult(seed, "", NOT_RUN, None, None)
            continue
        time_ms = row.metrics.get(TRAIN_TIME_METRIC)
        found[number] = SeedResult(seed, row.run_id, row.status, row.metrics.get(loss_metric),
                                   None if time_ms is None else time_ms / 1000.0)
    return found
