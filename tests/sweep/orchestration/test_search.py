"""Contract of the Optuna adapter, driven the way Tune drives a searcher, on a real sqlite Optuna storage."""
from __future__ import annotations

import math
import pickle

import optuna
import pytest
from optuna.trial import TrialState

from sweep.inputs.space import parse_space
from sweep.orchestration.search import StudySearcher
from sweep.trial.runner import FINAL_KEY, OBJECTIVE_KEY, TRIAL_NUMBER_KEY

SPACE = """
name: contract
metric: val_loss
mode: min
preset: tiny
params:
  fp8.x_s: {type: float, low: 0.02, high: 2.0, log: true}
  train.warmdown_iters: {type: int, low: 10, high: 100}
points_to_evaluate:
  - {fp8.x_s: 0.5, train.warmdown_iters: 20}
  - {fp8.x_s: 0.25, train.warmdown_iters: 40}
  - {fp8.x_s: 0.125, train.warmdown_iters: 80}
"""


@pytest.fixture
def make(tmp_path):
    space = parse_space(SPACE, "contract.yaml")
    url = f"sqlite:///{tmp_path}/optuna.db"

    def searcher() -> StudySearcher:
        return StudySearcher(space, study_name="contract", storage_url=url, sampler="tpe", seed=0)

    searcher.study = lambda: optuna.load_study(study_name="contract", storage=url)
    searcher.space = space
    return searcher


def _final(value: float) -> dict:
    return {OBJECTIVE_KEY: value, FINAL_KEY: True}


def _progress(value: float, step: int) -> dict:
    return {OBJECTIVE_KEY: value, "step": step}


def test_points_come_first_then_samples_inside_the_space_numbered_by_optuna(make):
    s = make()
    configs = [s.suggest(f"t{i}") for i in range(5)]
    assert [c[TRIAL_NUMBER_KEY] for c in configs] == [0, 1, 2, 3, 4]
    for config, point in zip(configs, make.space.points_to_evaluate):
        assert {k: config[k] for k in point} == point
    for config in configs[3:]:
        assert all(make.space.params[k].contains(config[k]) for k in make.space.params)
    study = make.study()
    assert [t.state for t in study.trials] == [TrialState.RUNNING] * 5
    assert [t.params for t in study.trials] == [{k: c[k] for k in make.space.params} for c in configs]


def test_final_pruned_and_failed_results_reach_optuna(make):
    s = make()
    for i in range(4):
        s.suggest(f"t{i}")
    s.on_trial_result("t0", _progress(3.0, 10))
    s.on_trial_complete("t0", _final(2.5))
    s.on_trial_result("t1", _progress(4.0, 10))
    s.on_trial_result("t1", _progress(3.5, 20))
    s.on_trial_complete("t1", _progress(3.25, 30))          # stopped by the scheduler before its final event
    s.on_trial_complete("t2", None, error=True)
    s.on_trial_complete("t3", _final(math.nan))
    s.on_trial_complete("t0", _final(9.0))                  # a second completion changes nothing
    trials = make.study().trials
    assert trials[0].state == TrialState.COMPLETE and trials[0].value == 2.5
    assert trials[0].intermediate_values == {10: 3.0}
    assert trials[1].state == TrialState.PRUNED and trials[1].value == 3.25
    assert trials[1].intermediate_values == {10: 4.0, 20: 3.5, 30: 3.25}
    assert trials[2].state == TrialState.FAIL and trials[2].value is None
    assert trials[3].state == TrialState.FAIL


def test_fewer_trials_than_points_leave_no_waiting_trial(make):
    s = make()
    s.suggest("t0")
    s.on_trial_complete("t0", _final(1.0))
    states = [t.state for t in make.study().trials]
    assert states == [TrialState.COMPLETE]


def test_restored_searcher_adopts_the_trials_asked_after_its_snapshot(make, tmp_path):
    s = make()
    s.suggest("t0")
    s.suggest("t1")
    s.on_trial_complete("t0", _final(1.0))
    snapshot = tmp_path / "searcher-state.json"
    s.save(str(snapshot))
    pickled = pickle.dumps(s)                                 # Tune pickles the searcher with the experiment
    # After the snapshot: one more trial asked and finished, one asked and still running, then the driver dies.
    s.suggest("t2")
    s.suggest("t3")
    s.on_trial_complete("t2", _final(0.5))

    restored = pickle.loads(pickled)
    restored.restore(str(snapshot))
    adopted = [restored.suggest(f"new{i}") for i in range(3)]
    # t1 is restored by Tune itself; the new Tune trials take the two orphans (finished 2, running 3)
    # before a new ask, which then gets the next number.
    assert [c[TRIAL_NUMBER_KEY] for c in adopted] == [2, 3, 4]
    trials = make.study().trials
    assert {k: adopted[1][k] for k in make.space.params} == trials[3].params
    assert len(trials) == 5
    restored.on_trial_complete("new0", _final(7.0))         # already finished: its recorded value stays
    restored.on_trial_complete("new1", _final(0.25))
    restored.on_trial_complete("t1", _final(2.0))
    trials = make.study().trials
    assert trials[2].value == 0.5 and trials[3].value == 0.25 and trials[1].value == 2.0
    assert [t.state for t in trials[:4]] == [TrialState.COMPLETE] * 4


def test_a_new_searcher_on_an_existing_study_enqueues_only_the_points_not_taken(make):
    s = make()
    s.suggest("t0")
    s.on_trial_complete("t0", _final(1.0))
    again = make()                                           # the driver died before Tune saved anything
    configs = [again.suggest(f"n{i}") for i in range(4)]
    # The finished trial 0 is adopted (its run's recorded result comes back), then points 1 and 2, then a sample.
    assert [c[TRIAL_NUMBER_KEY] for c in configs] == [0, 1, 2, 3]
    for config, point in zip(configs, make.space.points_to_evaluate):
        assert {k: config[k] for k in point} == point
    trials = make.study().trials
    assert len(trials) == 4 and not [t for t in trials if t.state == TrialState.WAITING]
