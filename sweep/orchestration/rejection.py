"""A trainer that rejects its input (exit code 2) and what the sweep does about it (docs/spaces.md, "What a
trial runs").

Input the trainer rejects is rejected again on a retry, so such a trial is never retried (sweep.stores.child_run
finds the rejection of the first attempt). When the message names input that every trial gets (a fixed
key, such as a `data.path` on the workers' disks that `sweep run` could not check from where it runs, or a
`trainer.env` entry), every other trial would fail the same way: `StopOnRejectedInput` ends the sweep after
that first failure, and the driver prints the trainer's message (`shared_rejection`).
"""
from __future__ import annotations

import re
from typing import Any

from ray import tune

from sweep.stores import tracking
from sweep.stores.store_failure import StoreFailure
from sweep.trial.runner import TRIAL_NUMBER_KEY
from trainer.protocol import EXIT_BAD_INPUT


def _names(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(word)}(?![\w.])", text) is not None


def fixed_input_named(message: str, fixed: dict[str, Any], swept: list[str]) -> str | None:
    """The fixed key a rejection message names (by name, or by the path it holds), unless it also names
    a swept key (then the trial's own values may be what is wrong)."""
    if any(_names(message, key) for key in swept):
        return None
    for key, value in fixed.items():
        if _names(message, key) or (isinstance(value, str) and "/" in value and value in message):
            return key
    return None


def shared_rejection(mlflow_client, experiment_id: str, parent_run_id: str, fixed: dict[str, Any],
                     swept: list[str], trial_number: int | None = None) -> tuple[str, str] | None:
    """(key, message) of a trial (of any, or of `trial_number`) whose trainer rejected input that every
    trial shares: `fixed` (the fixed keys and `trainer.env`), not one of the `swept` keys."""
    for run in tracking.child_runs(mlflow_client, experiment_id, parent_run_id, trial_number):
        if run.info.status != "FAILED" or run.data.tags.get(tracking.TAG_EXIT_CODE) != str(EXIT_BAD_INPUT):
            continue
        message = run.data.tags.get(tracking.TAG_ERROR, "")
        key = fixed_input_named(message, fixed, swept)
        if key is not None:
            return key, message
    return None


class StopOnRejectedInput(tune.Callback, tune.Stopper):
    """Ends the sweep once a trial has failed on a `shared_rejection`."""

    def __init__(self, mlflow_uri: str, experiment_id: str, parent_run_id: str, fixed: dict[str, Any],
                 swept: list[str]):
        self.mlflow_uri = mlflow_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.fixed = fixed
        self.swept = swept
        self._found = False

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        number = (trial.config or {}).get(TRIAL_NUMBER_KEY)
        if number is None or self._found:
            return
        try:
            client = tracking.existing_client(self.mlflow_uri)
        except StoreFailure:
            return  # the store is gone: sweep.orchestration.store_stop ends the sweep
        self._found = shared_rejection(client, self.experiment_id, self.parent_run_id, self.fixed, self.swept,
                                       int(number)) is not None

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self._found
