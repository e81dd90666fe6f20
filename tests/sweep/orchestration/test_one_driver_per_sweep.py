"""One driver per sweep: while a sweep runs, `sweep resume` of it (and `sweep run --name` of its name) is
refused with exit 2 naming the driver that holds it, before Ray starts and before anything is written; once
that driver is SIGKILLed, a resume takes the sweep over and finishes it with exactly the trials asked for and
one child run each. Real `sweep` processes, local Ray instances, sqlite stores and stand-in trainers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import optuna
import pytest
from drivers import children_of, completed_trials, finish, slow_space, start_driver
from paths import REPO
from sweeping import PLAIN_FAKE, processes_with, wait_for

from sweep.inputs.plan import load_plan
from sweep.stores import sweep_lock, tracking

pytestmark = pytest.mark.slow  # starts Ray and trainer processes

TRIALS = 4


def second_driver(folder, *args: str) -> subprocess.CompletedProcess:
    """`sweep ARGS` in a fresh interpreter; its last line of stdout says whether it imported Ray."""
    probe = (f"import sys; from sweep.cli import main; rc = main({list(args)!r}); "
             "print('ray imported' if 'ray' in sys.modules else 'ray never imported'); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", probe], cwd=folder, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)


def test_a_second_driver_is_refused_and_a_dead_drivers_sweep_is_taken_over(tmp_path):
    marker = f"twin-{uuid.uuid4().hex[:8]}"
    space = slow_space(tmp_path, "twin", marker, iterations=60)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    driver = start_driver(tmp_path, "run", "--space", str(space), "--trials", str(TRIALS), "--concurrency", "1",
                          "--name", "twin", "--trainer-cmd", PLAIN_FAKE)
    try:
        wait_for(lambda: processes_with(marker), 180, "the first trial's trainer")
        sweep_dir = tmp_path / "runs" / "twin"
        held = (sweep_dir / sweep_lock.LOCK_FILE).read_text()
        resumed = second_driver(tmp_path, "resume", "twin")
        rerun = second_driver(tmp_path, "run", "--space", str(space), "--name", "twin", "--trainer-cmd", PLAIN_FAKE)
        assert driver.poll() is None
    finally:
        driver.send_signal(signal.SIGKILL)
        out = finish(driver)
    assert resumed.returncode == 2, resumed.stderr
    assert (f"sweep resume: error: twin: the sweep is being run by pid {driver.pid} on host "
            in resumed.stderr), resumed.stderr
    assert "(sweep run --space" in resumed.stderr and "wait for it or stop it" in resumed.stderr
    assert resumed.stdout.splitlines()[-1] == "ray never imported"
    assert (sweep_dir / sweep_lock.LOCK_FILE).read_text() == held
    assert rerun.returncode == 2 and "sweep run: error: --name: a sweep named 'twin' already exists" in rerun.stderr
    assert rerun.stdout.splitlines()[-1] == "ray never imported"
    wait_for(lambda: not processes_with(marker), 30, "the killed driver's trainers to end")
    assert "Traceback" not in out

    # The kernel dropped the dead driver's lock: a resume takes the sweep over and finishes it.
    resumed = start_driver(tmp_path, "resume", "twin")
    out = finish(resumed)
    assert resumed.returncode == 0, out
    assert sweep_lock.holder(sweep_dir)["pid"] == resumed.pid
    trials = optuna.load_study(study_name="twin", storage=storage).trials
    assert sorted(t.number for t in trials) == list(range(TRIALS))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert completed_trials(storage, "twin") == TRIALS
    children = children_of(tmp_path, "twin")
    assert sorted(children) == list(range(TRIALS))
    assert all(run.info.status == "FINISHED" for run in children.values())
    parent = tracking.client(f"sqlite:///{tmp_path}/mlflow.db").get_run(load_plan(tmp_path / "runs", "twin").parent_run_id)
    assert parent.info.status == "FINISHED"
    assert not processes_with(marker)
