"""Optuna behind Ray Tune (DESIGN 4.4): the searcher that keeps the study honest.

`SweepSearch` is Tune's `OptunaSearch` with three changes:
- a trial that Tune ends before the trainer's final event (an ASHA stop) is told to Optuna as PRUNED,
  never as COMPLETE with its partial value, and a failed trial as FAIL;
- every suggested config carries the Optuna trial number (`trial_number`), which names the trial's run
  directory and its MLflow child run;
- after a driver restart, Optuna trials that the restored Tune state does not know (asked, or even
  finished, after Tune's last snapshot) are handed to the next new Tune trials instead of asking for new
  ones, so the study gets no duplicates and no trial stuck RUNNING.
"""
from __future__ import annotations

import math
import warnings

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from sweep.space import SearchSpace
from sweep.study import make_sampler, make_storage
from sweep.trial import FINAL_KEY, OBJECTIVE_KEY, TRIAL_NUMBER_KEY

ADOPTABLE = (TrialState.RUNNING, TrialState.COMPLETE)


class SweepSearch(OptunaSearch):
    def __init__(self, space: SearchSpace, study_name: str, storage_url: str, sampler: str = "tpe",
                 seed: int | None = None, enqueue_points: bool = True):
        points = [dict(p) for p in space.points_to_evaluate] if enqueue_points else []
        super().__init__(space=space.distributions(), metric=OBJECTIVE_KEY, mode=space.mode,
                         points_to_evaluate=points or None,
                         sampler=make_sampler(sampler, seed), study_name=study_name,
                         storage=make_storage(storage_url))
        self._orphans: list[int] | None = None

    def restore(self, checkpoint_path: str):
        super().restore(checkpoint_path)
        self._orphans = None

    def _next_orphan(self) -> int | None:
        if self._orphans is None:
            known = {t.number for t in self._ot_trials.values()}
            # FrozenTrial keeps the storage id private; optuna.trial.Trial needs it to resume a trial.
            self._orphans = [t._trial_id for t in self._ot_study.get_trials(deepcopy=False, states=ADOPTABLE)
                             if t.number not in known]
        return self._orphans.pop(0) if self._orphans else None

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials:
            orphan = self._next_orphan()
            if orphan is not None:
                self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, orphan)
        config = super().suggest(trial_id)
        if config is not None:
            config[TRIAL_NUMBER_KEY] = self._ot_trials[trial_id].number
        return config

    def _report(self, trial_id: str, result: dict) -> None:
        # Intermediate values are indexed by training step; a final result is not an intermediate value.
        if result.get(FINAL_KEY) or "step" not in result or OBJECTIVE_KEY not in result:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a restarted trial reports its steps again
            self._ot_trials[trial_id].report(float(result[OBJECTIVE_KEY]), int(result["step"]))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._completed_trials:
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        value = (result or {}).get(OBJECTIVE_KEY)
        if error:
            state, value = TrialState.FAIL, None
        elif not (result or {}).get(FINAL_KEY):
            # Tune hands the result that got the trial stopped only to on_trial_complete.
            self._report(trial_id, result or {})
            state, value = TrialState.PRUNED, None
        elif value is None or not math.isfinite(value):
            state, value = TrialState.FAIL, None
        else:
            state = TrialState.COMPLETE
        self._ot_study.tell(ot_trial, value, state=state, skip_if_finished=True)
        self._completed_trials.add(trial_id)
