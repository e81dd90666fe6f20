"""Optuna behind Ray Tune: a Tune `Searcher` around an `optuna.Study`, through Optuna's public ask/tell API.

- `suggest` asks the study (`study.ask(distributions)`) and puts the Optuna trial number into the config
  (`trial_number`): it names the trial's run directory and its MLflow child run. The space's
  `points_to_evaluate` are enqueued one at a time, just before the ask that takes each, so no WAITING
  trial is ever left behind, however few trials the sweep runs.
- Intermediate values are reported by training step (`trial.report`); a trial that Tune ends before the
  trainer's final event (an ASHA stop) is told PRUNED, never COMPLETE with its partial value (Optuna then
  records its last intermediate value); a failed trial, or one without a finite value, is told FAIL. Its
  child run has the last word: a trial that recorded its result there (sweep.stores.child_run.has_result)
  before it failed, or before a stop reached it, is told COMPLETE with that result.
- The searcher's saved state is the map from Tune trial ids to Optuna trial numbers. After a driver
  restart, Optuna trials the restored Tune state does not know (asked, or even finished, after Tune's
  last snapshot) are handed to the next new Tune trials instead of asking for new ones, so the study gets
  no duplicates and no trial stuck RUNNING. A trial that was running when the driver stopped keeps the
  intermediate values it reported before; Optuna hands out `Trial` objects only from `ask`, so the values
  it reports after the restart reach Tune's scheduler but not the study.
- With a launch gate (sweep.orchestration.launch_gate: `--stop-at`, `--budget-gpu-hours`), `suggest` asks it before
  each new trial and answers `Searcher.FINISHED` once it is closed: Tune starts no more trials and lets
  the running ones finish.
"""
from __future__ import annotations

import json
import math
import warnings

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from sweep.inputs.space import SearchSpace
from sweep.orchestration.launch_gate import LaunchGate
from sweep.stores.child_run import SweepRecords
from sweep.stores.store_failure import store_errors
from sweep.stores.study import make_sampler, make_storage, next_trial
from sweep.trial.runner import FINAL_KEY, OBJECTIVE_KEY, TRIAL_NUMBER_KEY

ADOPTABLE = (TrialState.RUNNING, TrialState.COMPLETE)


class StudySearcher(Searcher):
    _records: SweepRecords | None = None  # absent from the state of a searcher saved before it existed

    def __init__(self, space: SearchSpace, study_name: str, storage_url: str, sampler: str = "tpe",
                 seed: int | None = None, gate: LaunchGate | None = None, records: SweepRecords | None = None):
        super().__init__(metric=OBJECTIVE_KEY, mode=space.mode)
        self._gate = gate
        self._records = records
        self._distributions = space.distributions()
        self._points = [dict(p) for p in space.points_to_evaluate]
        self._study_args = (study_name, storage_url, sampler, seed)
        self._direction = "minimize" if space.mode == "min" else "maximize"
        self._numbers: dict[str, int] = {}      # Tune trial id -> Optuna trial number (the saved state)
        self._finished: set[str] = set()
        self._trials: dict[str, optuna.trial.Trial] = {}  # the trials asked by this process, for report()
        self._orphans: list[int] | None = None
        self._study_obj: optuna.Study | None = None

    def __getstate__(self) -> dict:
        # Tune pickles the searcher with the experiment; the study (a live database connection) and the
        # Trial objects are reopened rather than pickled.
        state = dict(self.__dict__)
        state.update(_study_obj=None, _trials={}, _orphans=None)
        return state

    @property
    def study(self) -> optuna.Study:
        if self._study_obj is None:
            name, url, sampler, seed = self._study_args
            self._study_obj = optuna.create_study(study_name=name, storage=make_storage(url), load_if_exists=True,
                                                  sampler=make_sampler(sampler, seed), direction=self._direction)
        return self._study_obj

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric and mode are the space's, set at construction

    def _next_orphan(self) -> optuna.trial.FrozenTrial | None:
        if self._orphans is None:
            known = set(self._numbers.values())
            self._orphans = [t.number for t in self.study.get_trials(deepcopy=False, states=ADOPTABLE)
                             if t.number not in known]
        if not self._orphans:
            return None
        number = self._orphans.pop(0)
        return next(t for t in self.study.get_trials(deepcopy=False) if t.number == number)

    def _ask(self, trial_id: str) -> tuple[int, dict]:
        trial = next_trial(self.study, self._points, self._distributions)
        self._trials[trial_id] = trial
        return trial.number, trial.params

    def suggest(self, trial_id: str) -> dict | str | None:
        orphan = self._next_orphan()
        # An orphan was started by an earlier driver already: it runs whatever the gate says.
        if orphan is None and self._gate is not None:
            reason = self._gate.closed({n for t, n in self._numbers.items() if t not in self._finished})
            if reason is not None:
                self._gate.record(reason)
                return Searcher.FINISHED
        number, params = (orphan.number, orphan.params) if orphan is not None else self._ask(trial_id)
        self._numbers[trial_id] = number
        return {**params, TRIAL_NUMBER_KEY: number}

    def _report(self, trial_id: str, result: dict) -> None:
        # Intermediate values are indexed by training step; a final result is not an intermediate value.
        trial = self._trials.get(trial_id)
        if trial is None or result.get(FINAL_KEY) or "step" not in result or OBJECTIVE_KEY not in result:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a restarted trial reports its steps again
            trial.report(float(result[OBJECTIVE_KEY]), int(result["step"]))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._finished:
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._finished or trial_id not in self._numbers:
            return
        result = result or {}
        value = result.get(OBJECTIVE_KEY)
        if error:
            state, value = TrialState.FAIL, None
        elif not result.get(FINAL_KEY):
            # Tune hands the result that got the trial stopped only to on_trial_complete.
            self._report(trial_id, result)
            state, value = TrialState.PRUNED, None
        elif value is None or not math.isfinite(value):
            state, value = TrialState.FAIL, None
        else:
            state = TrialState.COMPLETE
        self._finished.add(trial_id)
        self._trials.pop(trial_id, None)
        number = self._numbers[trial_id]
        if state != TrialState.COMPLETE and self._records is not None:
            try:
                recorded = self._records.objective(number)
            except store_errors():
                return  # left RUNNING: the driver settles it once it can read the trial's run (store_stop.settle)
            if recorded is not None:
                state, value = TrialState.COMPLETE, recorded
        self.study.tell(number, value, state=state, skip_if_finished=True)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump({"numbers": self._numbers, "finished": sorted(self._finished)}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            state = json.load(f)
        self._numbers = {k: int(v) for k, v in state["numbers"].items()}
        self._finished = set(state["finished"])
        self._trials, self._orphans = {}, None
