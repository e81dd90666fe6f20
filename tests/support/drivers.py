"""Sweep drivers as real `sweep` processes, for the tests of what operators do to them (signals, a second
driver, a torn state): start one in a folder, wait for it, and read its records in the folder's stores."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
from paths import REPO
from sweeping import write_space

from sweep.inputs.plan import load_plan
from sweep.stores import tracking


def start_driver(folder: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sweep", *args], cwd=folder, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def finish(driver: subprocess.Popen, timeout_s: float = 300) -> str:
    try:
        return driver.communicate(timeout=timeout_s)[0]
    except subprocess.TimeoutExpired:
        driver.kill()
        return driver.communicate()[0]


def completed_trials(storage: str, name: str) -> int:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return 0
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def children_of(folder: Path, name: str) -> dict[int, object]:
    client = tracking.client(f"sqlite:///{folder}/mlflow.db")
    plan = load_plan(folder / "runs", name)
    experiment = client.get_experiment_by_name(plan.experiment)
    runs = tracking.child_runs(client, experiment.experiment_id, plan.parent_run_id)
    numbers = [int(r.data.tags[tracking.TAG_TRIAL_NUMBER]) for r in runs]
    assert len(numbers) == len(set(numbers)), f"more than one child run for a trial: {sorted(numbers)}"
    return {int(r.data.tags[tracking.TAG_TRIAL_NUMBER]): r for r in runs}


def slow_space(folder: Path, name: str, marker: str, iterations: int):
    return write_space(folder, name=name, metric="val_loss",
                       params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}},
                       fixed={"fake.tag": marker, "fake.step_s": 0.05, "train.iterations": iterations})
