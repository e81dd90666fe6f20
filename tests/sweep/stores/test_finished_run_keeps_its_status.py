"""A trial that finished while the sweep was being stopped keeps its result: the driver's reconcile step,
which closes the runs of trials that could not close their own, never rewrites a run the trial closed
FINISHED; and a trial whose result is in its child run reaches Optuna as COMPLETE, whatever Tune says
about how it ended. Real sqlite MLflow and Optuna stores; Tune's results are `ray.tune.Result`s as its
ResultGrid holds them (no Ray instance is needed)."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune import Result
from sweeping import write_space

from sweep.inputs.plan import SweepPlan
from sweep.inputs.space import load_space
from sweep.orchestration.driver import SweepRun, _reconcile, result_state
from sweep.orchestration.search import StudySearcher
from sweep.stores import tracking
from sweep.stores.child_run import ChildRun, SweepRecords, close_unfinished_children
from sweep.stores.study import create_study
from sweep.trial.runner import FINAL_KEY, TRIAL_NUMBER_KEY

SWEEP = "race"


@pytest.fixture
def sweep(tmp_path):
    """A sweep's records: its space, plan, MLflow experiment and parent run, its Optuna study."""
    space = load_space(write_space(tmp_path, name=SWEEP, metric="val_loss",
                                   params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}}))
    plan = SweepPlan(name=SWEEP, experiment=SWEEP, space_file="s.yaml", space_text="", preset="tiny", trials=2,
                     concurrency=1, gpus_per_trial=0, nproc_per_trial=1, cpus_per_trial=1, scheduler="fifo",
                     sampler="tpe", max_failures=0, mlflow_uri=f"sqlite:///{tmp_path}/mlflow.db",
                     storage=f"sqlite:///{tmp_path}/optuna.db", results_dir=str(tmp_path / "runs"), cwd=str(tmp_path))
    client = tracking.client(plan.mlflow_uri)
    experiment_id = tracking.ensure_experiment(client, plan.mlflow_uri, SWEEP)
    plan.parent_run_id = tracking.open_parent(client, experiment_id, SWEEP, "sweep", "tiny", "", "sweep run", {})
    create_study(plan.storage, SWEEP, "min", "val_loss")
    return SweepRun(plan, space, client, experiment_id)


def _trial(run: SweepRun, number: int, tmp_path, finish: bool) -> ChildRun:
    """Trial `number`'s child run as the trial writes it: opened, one validation, and (if `finish`) its result."""
    plan = run.plan
    child = ChildRun(plan.mlflow_uri, run.experiment_id, plan.parent_run_id, SWEEP, number)
    child.start(tracking.trial_label(number), {"fake.quality": "0.5"}, {})
    child.add_event({"event": "val", "step": 10, "val_loss": 3.0})
    child.flush()
    if finish:
        run_dir = tmp_path / tracking.trial_label(number)
        run_dir.mkdir()
        child.finish("ok", {tracking.OBJECTIVE_METRIC: 2.5, "final_val_loss": 2.5}, run_dir, step=40)
    return child


def _result(number: int, tmp_path) -> Result:
    # What Tune holds for a trial stopped before its final report reached the driver: its last
    # intermediate result, without the final flag.
    return Result(metrics={"val_loss": 3.0, FINAL_KEY: False, "config": {TRIAL_NUMBER_KEY: number, "fake.quality": 0.5}},
                  checkpoint=None, error=None, path=str(tmp_path))


def _child(run: SweepRun, number: int):
    return tracking.child_runs(run.mlflow_client, run.experiment_id, run.plan.parent_run_id, number)[0]


def test_the_reconcile_step_leaves_a_finished_trial_alone_and_closes_an_open_one(sweep, tmp_path):
    _trial(sweep, 0, tmp_path, finish=True)    # finished just as the stop came
    _trial(sweep, 1, tmp_path, finish=False)   # its worker died before it could close its run
    before = _child(sweep, 0)
    grid = [_result(0, tmp_path), _result(1, tmp_path)]
    assert [result_state(r, pruned=set()) for r in grid] == ["stopped", "stopped"]

    _reconcile(grid, sweep, pruned=set())
    close_unfinished_children(sweep.mlflow_client, sweep.experiment_id, sweep.plan.parent_run_id)

    finished, stopped = _child(sweep, 0), _child(sweep, 1)
    assert finished.info.status == "FINISHED"
    assert finished.data.tags[tracking.TAG_STATUS] == "ok"
    assert finished.data.metrics[tracking.OBJECTIVE_METRIC] == 2.5
    assert finished.data.tags == before.data.tags and finished.info.end_time == before.info.end_time
    assert stopped.info.status == "KILLED" and stopped.data.tags[tracking.TAG_STATUS] == "stopped"


def test_a_trial_that_failed_after_recording_its_result_is_complete_in_optuna(sweep, tmp_path):
    plan = sweep.plan
    searcher = StudySearcher(sweep.space, study_name=SWEEP, storage_url=plan.storage, seed=0,
                             records=SweepRecords(plan.mlflow_uri, sweep.experiment_id, plan.parent_run_id))
    assert [searcher.suggest(t)[TRIAL_NUMBER_KEY] for t in ("t0", "t1")] == [0, 1]
    _trial(sweep, 0, tmp_path, finish=True)   # then its worker died, or a later write of it failed
    _trial(sweep, 1, tmp_path, finish=False)
    searcher.on_trial_complete("t0", error=True)
    searcher.on_trial_complete("t1", error=True)
    trials = optuna.load_study(study_name=SWEEP, storage=plan.storage).trials
    assert [(t.state, t.value) for t in trials] == [(TrialState.COMPLETE, 2.5), (TrialState.FAIL, None)]
    # A stop that reached the trial after its result (Tune hands the searcher no final result): the same.
    searcher.suggest("t2")
    _trial(sweep, 2, tmp_path, finish=True)
    searcher.on_trial_complete("t2", {"val_loss": 3.0, FINAL_KEY: False})
    assert optuna.load_study(study_name=SWEEP, storage=plan.storage).trials[2].state == TrialState.COMPLETE
