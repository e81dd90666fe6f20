"""Ending a sweep whose store stops taking writes (docs/running.md, "When a store fails").

A trial whose MLflow writes (or the disk under its run directory) fail ends with a
sweep.stores.store_failure.StoreFailure. Every later trial would fail the same way, so `StopOnStoreFailure`
ends the experiment after the first one, as sweep.orchestration.rejection does for input every trial
shares, instead of burning the trials left; the trials running then (a retry Tune scheduled included) run
again on `sweep resume`, once the store is fixed.

`settle` gives each Optuna trial left RUNNING for a trial that will not run again the state its child run
says: COMPLETE with the objective the trial recorded, FAIL otherwise.
"""
from __future__ import annotations

import re
import signal

import optuna
from optuna.trial import TrialState
from ray import tune

from sweep.orchestration.tuner import result_number
from sweep.stores.child_run import SweepRecords
from sweep.stores.store_failure import STORE_FAILURE, store_errors

_FAILURE = re.compile(rf"{re.escape(STORE_FAILURE)}: (.+)")


def failure_named(text: str | None) -> str | None:
    """The store failure a trial's error text reports (what failed, on one line), if it is one."""
    found = _FAILURE.search(text or "")
    return found.group(1).strip() if found else None


def failure_in(grid, skip: set[int]) -> str | None:
    """The first store failure among the errors of a Tune `ResultGrid`'s trials, but for those of trial
    numbers in `skip`."""
    for result in grid:
        if result_number(result) in skip:
            continue
        what = failure_named(None if result.error is None else str(result.error))
        if what is not None:
            return what
    return None


class StopOnStoreFailure(tune.Callback):
    """Ends the experiment once a trial has failed on a store failure, the way Tune ends it on a signal:
    its state saved with the running trials unfinished (sweep.orchestration.interrupt), so that `sweep resume`
    runs them again. `found` holds what failed, for the driver: Tune restores a resumed sweep's callbacks from
    its saved state, so the driver's one handle on them is their class."""

    found: str | None = None

    @classmethod
    def clear(cls) -> None:
        cls.found = None

    def _check(self, trial) -> None:
        if StopOnStoreFailure.found is not None:
            return
        StopOnStoreFailure.found = failure_named(trial.get_error())
        if StopOnStoreFailure.found is not None:
            signal.raise_signal(signal.SIGUSR1)  # Tune's stop signal beside SIGINT, which the driver keeps for the user

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._check(trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._check(trial)


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
