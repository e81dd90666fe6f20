"""A Tune state cut short (a driver that died mid-write, a full disk) does not strand the sweep: `sweep resume`
sets the torn files aside, says so, and finishes the sweep from its Optuna study and MLflow runs, with the
trials asked for, the one the dead driver left RUNNING run to its end, and one child run each."""
from __future__ import annotations

import signal
import uuid

import optuna
import pytest
from drivers import children_of, completed_trials, finish, slow_space, start_driver
from sweeping import PLAIN_FAKE, processes_with, wait_for

from sweep.orchestration.tune_state import SET_ASIDE_PREFIX

pytestmark = pytest.mark.slow  # starts Ray and trainer processes

TRIALS = 3


@pytest.mark.parametrize("torn", ["experiment_state-", "searcher-state-"])
def test_resume_sets_a_torn_tune_state_aside_and_finishes_the_sweep(tmp_path, torn):
    marker = f"torn-{uuid.uuid4().hex[:8]}"
    space = slow_space(tmp_path, "torn", marker, iterations=60)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    driver = start_driver(tmp_path, "run", "--space", str(space), "--trials", str(TRIALS), "--concurrency", "1",
                          "--name", "torn", "--trainer-cmd", PLAIN_FAKE)
    try:
        wait_for(lambda: completed_trials(storage, "torn") >= 1 and processes_with(marker), 240,
                 "a finished trial and a running one")
    finally:
        driver.send_signal(signal.SIGKILL)
        finish(driver)
    wait_for(lambda: not processes_with(marker), 30, "the killed driver's trainers to end")
    study = optuna.load_study(study_name="torn", storage=storage)
    assert any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)
    sweep_dir = tmp_path / "runs" / "torn"
    state = max(p for p in sweep_dir.iterdir() if p.name.startswith(torn))
    data = state.read_bytes()
    state.write_bytes(data[:len(data) // 2])

    resumed = start_driver(tmp_path, "resume", "torn")
    out = finish(resumed)
    assert resumed.returncode == 0, out
    assert f"Tune's saved state in {sweep_dir} is torn ({state.name}: " in out
    (aside,) = [p for p in sweep_dir.iterdir() if p.name.startswith(SET_ASIDE_PREFIX)]
    assert (aside / state.name).read_bytes() == data[:len(data) // 2]
    trials = optuna.load_study(study_name="torn", storage=storage).trials
    assert sorted(t.number for t in trials) == list(range(TRIALS))
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * TRIALS
    children = children_of(tmp_path, "torn")
    assert sorted(children) == list(range(TRIALS))
    assert all(run.info.status == "FINISHED" for run in children.values())
    assert not processes_with(marker)
