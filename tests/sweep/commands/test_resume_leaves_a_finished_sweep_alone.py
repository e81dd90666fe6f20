"""`sweep resume` of a sweep that has finished says so and changes nothing: no run's status, no Optuna trial,
no file of the sweep's folder; and a resume whose Optuna storage has vanished exits 2 naming it, without
creating an empty one in its place or touching the sweep's runs. Real `sweep` processes and sqlite stores."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import optuna
import pytest
from drivers import finish, slow_space, start_driver
from paths import REPO
from sweeping import PLAIN_FAKE

from sweep.stores import tracking

pytestmark = pytest.mark.slow  # the finished sweep runs on a local Ray instance


def resume(folder, name: str) -> subprocess.CompletedProcess:
    """`sweep resume NAME` in a fresh interpreter; its last line of stdout says whether it imported Ray."""
    probe = (f"import sys; from sweep.cli import main; rc = main(['resume', {name!r}]); "
             "print('ray imported' if 'ray' in sys.modules else 'ray never imported'); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", probe], cwd=folder, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)


def records(folder) -> dict:
    """Every MLflow run's status and end, every Optuna trial, and every file of the results folder."""
    client = tracking.client(f"sqlite:///{folder}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    trials = [(t.number, t.state, t.values, t.datetime_complete)
              for t in optuna.load_study(study_name="done", storage=f"sqlite:///{folder}/optuna.db").trials]
    files = {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
             for p in (folder / "runs").rglob("*") if p.is_file()}
    return {"runs": sorted((r.info.run_id, r.info.status, r.info.end_time) for r in runs), "trials": trials,
            "files": files}


def test_resume_of_a_finished_sweep_changes_nothing_and_never_creates_a_missing_store(tmp_path):
    space = slow_space(tmp_path, "done", f"done-{uuid.uuid4().hex[:8]}", iterations=10)
    driver = start_driver(tmp_path, "run", "--space", str(space), "--trials", "2", "--concurrency", "1",
                          "--name", "done", "--trainer-cmd", PLAIN_FAKE)
    out = finish(driver)
    assert driver.returncode == 0, out
    before = records(tmp_path)
    assert [status for _, status, _ in before["runs"]] == ["FINISHED"] * 3   # the parent and two trials

    done = resume(tmp_path, "done")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("sweep done has finished (parent run ")
    assert "next: sweep compare done" in done.stdout
    assert done.stdout.splitlines()[-1] == "ray never imported"
    assert records(tmp_path) == before

    (tmp_path / "optuna.db").rename(tmp_path / "optuna.db.moved")
    gone = resume(tmp_path, "done")
    assert gone.returncode == 2
    assert (f"sweep resume: error: done: the sweep's Optuna storage {tmp_path / 'optuna.db'} does not exist"
            in gone.stderr), gone.stderr
    assert gone.stdout.splitlines()[-1] == "ray never imported"
    assert not (tmp_path / "optuna.db").exists()
    (tmp_path / "optuna.db.moved").rename(tmp_path / "optuna.db")
    assert records(tmp_path) == before
