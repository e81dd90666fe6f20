"""Ending a sweep whose store stops taking writes (docs/running.md, "When a store fails").

A trial whose MLflow writes (or the disk under its run directory) fail ends with a
sweep.stores.store_failure.StoreFailure. Every later trial would fail the same way, so `StopOnStoreFailure`
ends the experiment after the first one, as sweep.orchestration.rejection does for input every trial
shares, instead of burning the trials left (a retry Tune scheduled for it does not start either).

Tune ends the trials that were running then without telling the searcher, and never restarts them; `settle`
gives each of their Optuna trials the state its child run says: COMPLETE with the objective the trial
recorded, FAIL otherwise, so no Optuna trial stays RUNNING for a trial that no longer runs.
"""
from __future__ import annotations

import re

import optuna
from optuna.trial import TrialState
from ray import tune

from sweep.stores.child_run import SweepRecords
from sweep.stores.store_failure import STORE_FAILURE, store_errors

_FAILURE = re.compile(rf"{re.escape(STORE_FAILURE)}: (.+)")


def failure_named(text: str | None) -> str | None:
    """The store failure a trial's error text reports (what failed, on one line), if it is one."""
    found = _FAILURE.search(text or "")
    return found.group(1).strip() if found else None


def failure_in(grid) -> str | None:
    """The first store failure among the errors of a Tune `ResultGrid`'s trials."""
    for result in grid:
        what = failure_named(None if result.error is None else str(result.error))
        if what is not None:
            return what
    return None


class StopOnStoreFailure(tune.Callback, tune.Stopper):
    """Ends the sweep once a trial has failed on a store failure; `failure` says what failed."""

    def __init__(self) -> None:
        self.failure: str | None = None

    def _check(self, trial) -> None:
        if self.failure is None:
            self.failure = failure_named(trial.get_error())

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._check(trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._check(trial)

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.failure is not None


def settle(study: optuna.Study, records: SweepRecords, ended: set[int]) -> dict[int, TrialState]:
    """Tell each RUNNING trial of `study` whose child run has its result COMPLETE with it, and each one in
    `ended` (trial numbers that no longer run and will not run again) without a result FAIL; returns the
    states told. A trial that Tune restarts keeps RUNNING until it ends; one whose run cannot be read (its
    store is gone) has no result to give."""
    running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    try:
        recorded = {n: records.objective(n) for n in running}
    except store_errors():
        recorded = {}
    told = {}
    for number in running:
        value = recorded.get(number)
        if value is not None:
            study.tell(number, value, state=TrialState.COMPLETE, skip_if_finished=True)
            told[number] = TrialState.COMPLETE
        elif number in ended:
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            told[number] = TrialState.FAIL
    return told
