"""Helpers of the sweep tests: the stand-in trainer's command lines, space files, a sweep's records in the
stores, and waiting for processes."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml
from paths import REPO, SUPPORT

from sweep.cli import main as sweep_main
from sweep.orchestration.confirm import ROLE as CONFIRM_ROLE
from sweep.stores import tracking

FAKE = SUPPORT / "fake_trainer.py"
PLAIN_FAKE = f"{sys.executable} {FAKE}"
TORCHRUN_FAKE = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node=1 {FAKE}"


def write_space(folder: Path, **data) -> Path:
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump({"mode": "min", "preset": "tiny", **data}, sort_keys=False))
    return path


def run_sweep(capsys, stores, *args) -> tuple[int, str]:
    rc = sweep_main(["run", "--mlflow-uri", stores["mlflow"], "--storage", stores["optuna"], *args])
    return rc, capsys.readouterr().out


def sweep_runs(stores, name: str, experiment: str | None = None):
    """(parent run, {trial number: child run}) of a sweep; fails on two live runs for one trial."""
    client = tracking.client(stores["mlflow"])
    exp = client.get_experiment_by_name(experiment or name)
    parents = client.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_SWEEP}` = '{name}' "
                                                      f"and tags.`{tracking.TAG_ROLE}` = 'sweep'")
    assert len(parents) == 1
    children = tracking.child_runs(client, exp.experiment_id, parents[0].info.run_id)
    numbers = [int(r.data.tags[tracking.TAG_TRIAL_NUMBER]) for r in children]
    assert len(numbers) == len(set(numbers)), f"duplicate child runs: {sorted(numbers)}"
    return client, parents[0], {int(r.data.tags[tracking.TAG_TRIAL_NUMBER]): r for r in children}


def study(stores, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=stores["optuna"])


def processes_with(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def sweep_run_in(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """`sweep run ARGS` in a fresh interpreter started in `folder`; its last line of stdout says whether
    it imported Ray."""
    return sweep_in(folder, "run", *args)


def sweep_in(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """`sweep ARGS` in a fresh interpreter started in `folder`; its last line of stdout says whether it
    imported Ray."""
    probe = (f"import sys; from sweep.cli import main; rc = main({list(args)!r}); "
             "print('ray imported' if 'ray' in sys.modules else 'ray never imported'); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", probe], cwd=folder, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)


def confirm_runs(client, sweep_parent):
    """(the confirmation's parent run, its child runs by trial number)."""
    exp = sweep_parent.info.experiment_id
    parents = client.search_runs([exp], f"tags.`{tracking.PARENT_RUN_TAG}` = '{sweep_parent.info.run_id}' "
                                        f"and tags.`{tracking.TAG_ROLE}` = '{CONFIRM_ROLE}'")
    assert len(parents) == 1
    children = tracking.child_runs(client, exp, parents[0].info.run_id)
    numbers = [int(r.data.tags[tracking.TAG_TRIAL_NUMBER]) for r in children]
    assert len(numbers) == len(set(numbers)), f"duplicate confirmation runs: {sorted(numbers)}"
    return parents[0], {int(r.data.tags[tracking.TAG_TRIAL_NUMBER]): r for r in children}
