"""The sweep driver under what operators do to it: SIGKILL and SIGTERM mid-sweep, two sweeps started at once
in an empty folder, and the sockets its local Ray instance listens on. Each driver is a real `sweep`
process with its own local Ray instance, real sqlite stores in its folder, and real trainer processes
(the stand-in trainer, under torchrun where the test is about torchrun's ranks).
"""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from drivers import children_of, completed_trials, finish, slow_space, start_driver
from paths import REPO
from sockets import LOOPBACK, listening_sockets
from sweeping import FAKE, PLAIN_FAKE, processes_with, wait_for, write_space

from sweep.errors import InputError
from sweep.inputs.plan import SweepPlan
from sweep.inputs.space import load_space
from sweep.orchestration.driver import claim_name
from sweep.orchestration.rejection import fixed_input_named
from sweep.stores import tracking
from sweep.stores.study import create_study
from sweep.trial.supervisor import descendants

pytestmark = pytest.mark.slow  # starts Ray or torchrun processes

TORCHRUN_FAKE_2 = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node=2 {FAKE}"


def test_sigkill_of_the_driver_leaves_no_trainer_process(tmp_path):
    # torchrun starts its ranks in sessions of their own: killing a process group would miss them.
    marker = f"sigkill-{uuid.uuid4().hex[:8]}"
    space = slow_space(tmp_path, "killed", marker, iterations=100_000)
    driver = start_driver(tmp_path, "run", "--space", str(space), "--trials", "2", "--concurrency", "2",
                          "--name", "killed", "--trainer-cmd", TORCHRUN_FAKE_2)
    ranks = lambda: [p for p in processes_with(marker) if "torch.distributed.run" not in p
                     and "sweep.trial.supervisor" not in p]
    try:
        wait_for(lambda: len(ranks()) == 4, 180, "both trials' two ranks")
    finally:
        driver.kill()
        finish(driver)
    wait_for(lambda: not processes_with(marker), 10, "every trainer process to end after the driver's SIGKILL")


def test_sigterm_mid_sweep_exits_1_and_resume_completes_with_one_run_per_trial(tmp_path):
    marker = f"sigterm-{uuid.uuid4().hex[:8]}"
    space = slow_space(tmp_path, "termed", marker, iterations=40)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    driver = start_driver(tmp_path, "run", "--space", str(space), "--trials", "4", "--concurrency", "2",
                          "--name", "termed", "--trainer-cmd", PLAIN_FAKE)
    try:
        wait_for(lambda: completed_trials(storage, "termed") >= 1 and processes_with(marker), 180,
                 "a finished trial and a running one")
    finally:
        driver.send_signal(signal.SIGTERM)
        out = finish(driver)
    assert driver.returncode == 1, out
    assert "interrupted: continue with `sweep resume termed`" in out
    assert "Traceback" not in out
    wait_for(lambda: not processes_with(marker), 10, "the stopped trials' trainers to end")
    interrupted = children_of(tmp_path, "termed")
    assert all(run.info.status != "RUNNING" for run in interrupted.values())

    resumed = start_driver(tmp_path, "resume", "termed")
    out = finish(resumed)
    assert resumed.returncode == 0, out
    children = children_of(tmp_path, "termed")
    assert sorted(children) == [0, 1, 2, 3]
    assert all(run.info.status == "FINISHED" for run in children.values())
    trials = optuna.load_study(study_name="termed", storage=storage).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # A trial the signal stopped ran again in the same child run, as its second attempt.
    assert any(run.data.tags[tracking.TAG_ATTEMPT] == "2" for run in children.values())
    stopped = [n for n, run in interrupted.items() if run.info.status == "KILLED"]
    assert stopped and all(children[n].info.run_id == interrupted[n].info.run_id for n in stopped)


def test_two_sweeps_started_together_in_an_empty_folder_both_finish(tmp_path):
    # Both use the default stores in the folder (fresh sqlite files: one MLflow migration at a time) and
    # default names, which the two may compute in the same second.
    space = write_space(tmp_path, name="together", metric="val_loss",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}})
    drivers = [start_driver(tmp_path, "run", "--space", str(space), "--trials", "2", "--concurrency", "1",
                            "--trainer-cmd", PLAIN_FAKE) for _ in range(2)]
    outs = [finish(d) for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], "\n\n".join(outs)
    names = [re.search(r"^sweep (\S+): 2 trials", out, re.M).group(1) for out in outs]
    assert len(set(names)) == 2
    for name in names:
        children = children_of(tmp_path, name)
        assert sorted(children) == [0, 1] and all(r.info.status == "FINISHED" for r in children.values())
        assert completed_trials(f"sqlite:///{tmp_path}/optuna.db", name) == 2
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        tables = [row[0] for row in db.execute("select name from sqlite_master where type = 'table'")]
    assert "experiments" in tables and not [t for t in tables if t.startswith("_alembic_tmp")]


def test_the_local_ray_instance_listens_on_loopback_only(tmp_path):
    # The driver's own start: the loopback switch before Ray is imported, then start_ray, then a task, so
    # that a worker process is up as well.
    probe = ("import os, sys; from sweep.orchestration.local_ray import listen_on_loopback; listen_on_loopback(''); "
             "import ray; from sweep.orchestration.tuner import start_ray; start_ray(''); "
             "ray.get(ray.remote(lambda: 0).remote()); print(os.getpid(), flush=True); sys.stdin.readline(); "
             "ray.shutdown()")
    driver = subprocess.Popen([sys.executable, "-c", probe], cwd=tmp_path, text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        root = int(driver.stdout.readline())
        time.sleep(2)  # the agents Ray starts beside the raylet open their ports a moment later
        sockets = listening_sockets([root, *descendants(root)])
        commands = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode() for pid in sockets}
    finally:
        driver.communicate("\n", timeout=120)
    assert any("gcs_server" in c for c in commands.values()) and any("raylet" in c for c in commands.values())
    exposed = {pid: [s for s in socks if s[0] not in LOOPBACK] for pid, socks in sockets.items()}
    assert not any(exposed.values()), json.dumps({commands.get(p, p): s for p, s in exposed.items() if s})


def _plan(tmp_path: Path, name: str) -> SweepPlan:
    return SweepPlan(name=name, experiment="e", space_file="s.yaml", space_text="", preset="tiny", trials=1,
                     concurrency=1, gpus_per_trial=0, nproc_per_trial=1, cpus_per_trial=1, scheduler="fifo",
                     sampler="tpe", max_failures=0, mlflow_uri=f"sqlite:///{tmp_path}/mlflow.db",
                     storage=f"sqlite:///{tmp_path}/optuna.db", results_dir=str(tmp_path / "runs"), cwd=str(tmp_path))


def test_a_default_name_taken_meanwhile_moves_on_and_a_given_one_is_refused(tmp_path):
    space = load_space(write_space(tmp_path, name="claims", metric="val_loss",
                                   params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}}))
    create_study(f"sqlite:///{tmp_path}/optuna.db", "claims-1", "min", "val_loss")  # the other sweep won the race
    plan = _plan(tmp_path, "claims-1")
    claim_name(plan, space, name_given=False)
    assert plan.name == "claims-1-2"
    assert sorted(optuna.get_all_study_names(plan.storage)) == ["claims-1", "claims-1-2"]
    with pytest.raises(InputError, match="--name"):
        claim_name(_plan(tmp_path, "claims-1"), space, name_given=True)


@pytest.mark.parametrize("message, key", [
    ("the trainer rejected its input (exit code 2)\nerror event: data.path: no such folder: /d", "data.path"),
    ("error event: /d/fineweb_train_000001.bin: wrong magic number 7 (expected 20240520)", "data.path"),
    ("error event: model.num_heads: 3 does not divide model.model_dim 64", None),  # a swept key: the values
    ("error event: unrelated", None),
])
def test_a_rejection_is_shared_when_it_names_fixed_input_only(message, key):
    assert fixed_input_named(message, {"data.path": "/d", "seed": 1}, ["model.num_heads"]) == key
