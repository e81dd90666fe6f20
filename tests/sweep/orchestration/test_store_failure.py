"""A store that stops taking writes mid-sweep stops the sweep loudly: exit 1, one line naming the store and its
error, no traceback, no trial burnt on it, no store created where one vanished, and after the store is fixed
`sweep resume` ends the sweep with every trial's Optuna state matching its MLflow run. Each driver is a real
`sweep` process with its own local Ray instance, real sqlite stores and the stand-in trainer.

A read-only store: `chattr +i` where the tests run as root (root writes through file modes), else
`chmod`. A full disk: mid-sweep the driver gets an RLIMIT_FSIZE of a few KB (prlimit), so every write of its that
grows a file past it fails with EFBIG, as on a full disk with ENOSPC (SIGXFSZ ignored, so the write fails
rather than kills); a limit on the whole process tree from the start keeps Ray from starting.
"""
from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from paths import REPO
from sweeping import PLAIN_FAKE, processes_with, wait_for, write_space

from sweep.inputs.plan import load_plan
from sweep.stores import tracking

pytestmark = pytest.mark.slow  # starts Ray

TRIALS = 4
FULL_DISK_BYTES = 4096


def _space(folder: Path, marker: str) -> Path:
    return write_space(folder, name="flaky", metric="val_loss",
                       params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}},
                       fixed={"fake.tag": marker, "fake.step_s": 0.05, "train.iterations": 40})


class Sweep:
    """A sweep of the stand-in trainer in `folder`, MLflow's database alone in `folder/mlflow/` (so that folder
    can be made read-only without the Optuna store)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.marker = f"store-{uuid.uuid4().hex[:8]}"
        self.db = folder / "mlflow" / "mlflow.db"
        self.db.parent.mkdir()
        self.mlflow = f"sqlite:///{self.db}"
        self.optuna = f"sqlite:///{folder}/optuna.db"
        self.space = _space(folder, self.marker)

    def start(self, command: str, preexec=None) -> subprocess.Popen:
        args = ["run", "--space", str(self.space), "--trials", str(TRIALS), "--concurrency", "1", "--name", "flaky",
                "--trainer-cmd", PLAIN_FAKE, "--mlflow-uri", self.mlflow, "--storage", self.optuna] \
            if command == "run" else ["resume", "flaky"]
        return subprocess.Popen([sys.executable, "-m", "sweep", *args], cwd=self.folder, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, preexec_fn=preexec)

    def trials(self) -> dict[int, optuna.trial.FrozenTrial]:
        try:
            return {t.number: t for t in optuna.load_study(study_name="flaky", storage=self.optuna).trials}
        except KeyError:
            return {}

    def complete(self) -> int:
        return sum(t.state == TrialState.COMPLETE for t in self.trials().values())

    def runs(self):
        """(parent run, {trial number: child run})."""
        client = tracking.client(self.mlflow)
        plan = load_plan(self.folder / "runs", "flaky")
        experiment = client.get_experiment_by_name(plan.experiment).experiment_id
        children = tracking.child_runs(client, experiment, plan.parent_run_id)
        numbers = [int(r.data.tags[tracking.TAG_TRIAL_NUMBER]) for r in children]
        assert len(numbers) == len(set(numbers)), f"more than one child run for a trial: {sorted(numbers)}"
        return client.get_run(plan.parent_run_id), {int(r.data.tags[tracking.TAG_TRIAL_NUMBER]): r for r in children}

    def run_dirs(self) -> list[str]:
        return sorted(p.name for p in (self.folder / "runs" / "flaky" / "trials").iterdir())


def finish(driver: subprocess.Popen, timeout_s: float = 300) -> tuple[str, str]:
    try:
        return driver.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        driver.kill()
        return driver.communicate()


@contextmanager
def read_only(*paths: Path):
    """`paths` refuse writes, root's included, until the block ends."""
    as_root = os.geteuid() == 0
    modes = {p: p.stat().st_mode for p in paths}
    for p in paths:
        if as_root:
            subprocess.run(["chattr", "+i", str(p)], check=True)
        else:
            p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        yield
    finally:
        for p in paths:
            if as_root:
                subprocess.run(["chattr", "-i", str(p)], check=True)
            p.chmod(modes[p])


def record(run) -> tuple:
    return run.info.status, run.info.end_time, run.data.metrics, run.data.params, run.data.tags


def assert_matches(sweep: Sweep) -> None:
    """Every Optuna trial says what its child run says: COMPLETE with the objective of a run FINISHED with one,
    FAIL for a run that failed or was stopped; nothing RUNNING on either side."""
    parent, children = sweep.runs()
    trials = sweep.trials()
    assert parent.info.status == "FINISHED"
    assert sorted(children) == sorted(trials), (sorted(children), sorted(trials))
    for number, trial in trials.items():
        run = children[number]
        if trial.state == TrialState.COMPLETE:
            assert run.info.status == "FINISHED", number
            assert run.data.metrics[tracking.OBJECTIVE_METRIC] == pytest.approx(trial.value), number
        else:
            assert trial.state == TrialState.FAIL, (number, trial.state)
            assert run.info.status in ("FAILED", "KILLED"), (number, run.info.status)
            assert tracking.OBJECTIVE_METRIC not in run.data.metrics, number


def assert_stopped_loudly(sweep: Sweep, rc: int, err: str, store: str) -> None:
    assert rc == 1, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("sweep flaky: stopped: ")]
    assert len(lines) == 1, err
    assert store in lines[0] and lines[0].endswith("fix it and run `sweep resume flaky`"), lines[0]
    wait_for(lambda: not processes_with(sweep.marker), 10, "the trials' trainers to end")


def test_a_read_only_mlflow_store_stops_the_sweep_and_resume_finishes_it(tmp_path):
    sweep = Sweep(tmp_path)
    driver = sweep.start("run")
    try:
        wait_for(lambda: sweep.complete() >= 1 or driver.poll() is not None, 240, "a finished trial")
        _, before = sweep.runs()
        with read_only(sweep.db, sweep.db.parent):
            out, err = finish(driver)
            assert_stopped_loudly(sweep, driver.returncode, err,
                                  f"the MLflow store {sweep.mlflow} stopped taking writes (")
            # One trial hit the store; the stop kept the sweep from burning the others on it. A trial Optuna
            # has RUNNING now is one Tune runs again on resume (a retry it had scheduled).
            assert len(sweep.trials()) < TRIALS
            running = [n for n, t in sweep.trials().items() if t.state == TrialState.RUNNING]
    finally:
        driver.kill()
    _, after = sweep.runs()
    finished = [n for n, r in before.items() if r.info.status == "FINISHED"]
    assert finished and all(record(after[n]) == record(before[n]) for n in finished)

    resumed = sweep.start("resume")
    out, err = finish(resumed)
    assert resumed.returncode == 0, out + err
    assert len(sweep.trials()) == TRIALS
    assert_matches(sweep)
    assert all(sweep.trials()[n].state == TrialState.COMPLETE for n in running)
    assert not processes_with(sweep.marker)


def test_a_deleted_mlflow_store_stops_the_sweep_and_is_not_created_again(tmp_path):
    sweep = Sweep(tmp_path)
    driver = sweep.start("run")
    try:
        wait_for(lambda: sweep.complete() >= 1 or driver.poll() is not None, 240, "a finished trial")
        sweep.db.unlink()
        out, err = finish(driver)
    finally:
        driver.kill()
    assert_stopped_loudly(sweep, driver.returncode, err, f"the MLflow store {sweep.mlflow}")
    assert not sweep.db.exists()
    assert sorted(os.listdir(sweep.db.parent)) == ["mlflow-artifacts", "mlflow.db.lock"]
    # The trial that met the missing file ends there (Tune runs it again on resume, once the store is back);
    # no later trial is started.
    trials = sweep.trials()
    assert len(trials) <= 2 and trials[0].state == TrialState.COMPLETE
    assert all(t.state != TrialState.COMPLETE for n, t in trials.items() if n > 0)
    assert set(sweep.run_dirs()) <= {tracking.trial_label(n) for n in trials}


def _ignore_sigxfsz() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_a_full_disk_stops_the_sweep_with_exit_1_and_resume_finishes_it(tmp_path):
    # Once a trial has finished, no file of the driver's may grow past a few KB: the next snapshot of Tune's
    # state, and its writes to the stores, fail as on a full disk (the trials' processes write on).
    sweep = Sweep(tmp_path)
    driver = sweep.start("run", preexec=_ignore_sigxfsz)
    try:
        wait_for(lambda: sweep.complete() >= 1 or driver.poll() is not None, 240, "a finished trial")
        resource.prlimit(driver.pid, resource.RLIMIT_FSIZE, (FULL_DISK_BYTES, FULL_DISK_BYTES))
        out, err = finish(driver)
    finally:
        driver.kill()
    assert_stopped_loudly(sweep, driver.returncode, err, "")
    # The store or the file that refused a write, named by its path; what the disk said, as it said it.
    assert re.search(rf"stopped: (the (Optuna|MLflow) store sqlite:///{tmp_path}/\S+ stopped taking writes|"
                     rf"the disk refused a write to {tmp_path}/\S+) \((disk I/O error|database or disk is full|"
                     rf"File too large)\)|the disk refused a write \(File too large\) under {tmp_path}/runs/flaky;",
                     err), err
    assert len(sweep.trials()) < TRIALS
    running = [n for n, t in sweep.trials().items() if t.state == TrialState.RUNNING]

    # The disk has room again.
    resumed = sweep.start("resume")
    out, err = finish(resumed)
    assert resumed.returncode == 0, out + err
    assert_matches(sweep)
    assert all(sweep.trials()[n].state == TrialState.COMPLETE for n in running)
    assert not processes_with(sweep.marker)
