"""Every input file is read and checked before a command does anything: a store file that is not its store
(not a database, another program's database, the other store, unreadable), a space, config or sweep.json
that is binary, unreadable or of the wrong shape, a results folder that is a file, a log to import that is
not one. Each ends in exit code 2 with a message naming the file, no traceback, and the folder as it was:
no store created or migrated, no study, no experiment, no lock file, no sweep folder, and no Ray."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from paths import LOGS, REPO
from sweeping import PLAIN_FAKE, write_space

from sweep.cli import main as sweep_main
from sweep.inputs.plan import SweepPlan
from sweep.stores import tracking
from sweep.stores.urls import SQLITE_PREFIX

GARBAGE = bytes(range(256)) * 8       # not UTF-8, NUL bytes: a binary file
TEXT = b"these are notes, not a database\n" * 20
# Root reads any file whatever its mode; the unreadable cases run the command without that override.
AS_A_USER = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """Empty stores of each kind, and another program's database, to copy."""
    folder = tmp_path_factory.mktemp("templates")
    MlflowClient(f"{SQLITE_PREFIX}{folder / 'mlflow.db'}").search_experiments()
    optuna.storages.RDBStorage(f"{SQLITE_PREFIX}{folder / 'optuna.db'}")
    with sqlite3.connect(folder / "other.db") as other:
        other.execute("create table notes (text)")
    return folder


def state(folder: Path) -> dict[str, tuple]:
    """Every path under `folder` with its size and modification time: what a command must leave as it was."""
    return {str(p.relative_to(folder)): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


def sweep_in(folder: Path, *argv: str, as_a_user: bool = False) -> subprocess.CompletedProcess:
    """`python -m sweep ARGV` in `folder`, as from the command line; `as_a_user`: without root's override of
    file modes. Its stdout ends with whether it imported Ray."""
    probe = (f"import sys; from sweep.cli import main; rc = main({list(argv)!r}); "
             "print('ray imported' if 'ray' in sys.modules else 'ray never imported'); sys.exit(rc)")
    return subprocess.run([*(AS_A_USER if as_a_user else []), sys.executable, "-c", probe], cwd=folder,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)


def space(folder: Path) -> Path:
    return write_space(folder, name="files", metric="val_loss", trainer={"command": PLAIN_FAKE},
                       params={"fp8.x_s": {"type": "float", "low": 0.1, "high": 1.0}})


def run_args(folder: Path) -> list[str]:
    return ["run", "--space", str(space(folder)), "--trials", "1", "--name", "files"]


def refused(capsys, folder: Path, argv: list[str], *named: str) -> str:
    """Run `sweep ARGV` in this process: exit 2, a message naming each of `named`, `folder` as it was."""
    before = state(folder)
    assert sweep_main(argv) == 2
    err = capsys.readouterr().err
    for text in named:
        assert text in err, err
    assert state(folder) == before
    return err


def bad(path: Path, kind: str, templates: Path) -> None:
    if kind in ("mlflow", "optuna", "other"):
        shutil.copy(templates / f"{kind}.db", path)
    else:
        path.write_bytes({"binary": GARBAGE, "text": TEXT}[kind])


@pytest.mark.parametrize("store, kind, problem", [
    ("mlflow.db", "text", "is not an SQLite database"),
    ("mlflow.db", "binary", "is not an SQLite database"),
    ("mlflow.db", "other", "is another program's database (tables: notes), not an MLflow tracking store"),
    ("mlflow.db", "optuna", "is an Optuna storage (--storage), not an MLflow tracking store"),
    ("optuna.db", "text", "is not an SQLite database"),
    ("optuna.db", "mlflow", "is an MLflow tracking store (--mlflow-uri), not an Optuna storage"),
])
def test_sweep_run_refuses_a_store_file_that_is_not_its_store_and_leaves_it_alone(capsys, workdir, templates, store,
                                                                                   kind, problem):
    bad(workdir / store, kind, templates)
    flag = "--mlflow-uri" if store == "mlflow.db" else "--storage"
    refused(capsys, workdir, run_args(workdir), f"{flag}: {workdir / store} {problem}")


@pytest.mark.parametrize("command", [["list"], ["import-logs", str(LOGS / "parameter_golf_int8.txt")]])
def test_list_and_import_logs_refuse_an_mlflow_store_that_is_not_one(capsys, workdir, templates, command):
    bad(workdir / "mlflow.db", "other", templates)
    refused(capsys, workdir, command, f"--mlflow-uri: {workdir / 'mlflow.db'} is another program's database")


@pytest.mark.parametrize("store, flag", [("mlflow.db", "--mlflow-uri"), ("optuna.db", "--storage")])
def test_an_unreadable_store_is_exit_2_before_ray_with_nothing_written(tmp_path, templates, store, flag):
    """MLflow retried an unreadable database for minutes, with Ray started; the check reads it first."""
    shutil.copy(templates / store, tmp_path / store)
    (tmp_path / store).chmod(0)
    args = run_args(tmp_path)
    before = state(tmp_path)
    done = sweep_in(tmp_path, *args, as_a_user=True)
    assert done.returncode == 2, done.stderr
    assert f"{flag}: cannot read {tmp_path / store}: Permission denied" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.splitlines()[-1] == "ray never imported"
    assert state(tmp_path) == before


def prepared_sweep(folder: Path, templates: Path, **fields) -> Path:
    """The sweep `made` as `sweep run` leaves it (its plan, experiment, parent run and study); `fields` replace
    the plan's in its file. Returns the plan's path."""
    for store in ("mlflow.db", "optuna.db"):
        shutil.copy(templates / store, folder / store)
    mlflow_uri, storage = (f"{SQLITE_PREFIX}{folder / s}" for s in ("mlflow.db", "optuna.db"))
    client = tracking.client(mlflow_uri)
    experiment = tracking.ensure_experiment(client, mlflow_uri, "made")
    parent = tracking.open_parent(client, experiment, "made", "sweep", "", "", "sweep run", {})
    optuna.create_study(study_name="made", storage=storage)
    path = space(folder)
    plan = SweepPlan(name="made", experiment="made", space_file=str(path), space_text=path.read_text(), preset="",
                     trials=1, concurrency=1, gpus_per_trial=0, nproc_per_trial=1, cpus_per_trial=1,
                     scheduler="fifo", sampler="tpe", max_failures=0, mlflow_uri=mlflow_uri, storage=storage,
                     results_dir=str(folder / "runs"), cwd=str(folder), trainer_cmd=PLAIN_FAKE,
                     trainer_params="args", parent_run_id=parent)
    plan.save()
    plan_file = folder / "runs" / "made" / "sweep.json"
    if fields:
        plan_file.write_text(json.dumps({**json.loads(plan_file.read_text()), **fields}))
    return plan_file


@pytest.mark.parametrize("command", [["resume", "made"], ["compare", "made"], ["verify", "made"],
                                     ["import-logs", str(LOGS / "parameter_golf_int8.txt"), "--sweep", "made"]])
def test_a_binary_sweep_json_is_named_by_every_command_that_reads_it(capsys, workdir, templates, command):
    plan = prepared_sweep(workdir, templates)
    plan.write_bytes(GARBAGE)
    refused(capsys, workdir, command, f"{plan}: not a text file")


@pytest.mark.parametrize("fields, problem", [
    ({"trials": "many"}, "trials: expected int, got 'many'"),
    ({"sets": [1, 2]}, "sets: expected dict[str, Any], got [1, 2]"),
    ({"seed": 1.5}, "seed: expected int | None, got 1.5"),
    ({"space_text": "colour: blue\n"}, "space_text: colour: unknown field"),
    ({"colour": "blue"}, "colour: unknown field of a sweep plan"),
    ({"name": "other"}, "name: the plan is of sweep 'other', not 'made'"),
])
def test_a_sweep_json_with_a_field_of_the_wrong_type_is_named_with_the_field(capsys, workdir, templates, fields,
                                                                             problem):
    plan = prepared_sweep(workdir, templates, **fields)
    refused(capsys, workdir, ["resume", "made"], f"{plan}: {problem}")


@pytest.mark.parametrize("damage", ["truncated", "list", "folder"])
def test_a_sweep_json_that_is_no_plan_is_named(capsys, workdir, templates, damage):
    plan = prepared_sweep(workdir, templates)
    if damage == "truncated":
        plan.write_text(plan.read_text()[:100])
    elif damage == "list":
        plan.write_text("[1, 2]")
    else:
        plan.unlink()
        plan.mkdir()
    refused(capsys, workdir, ["resume", "made"], str(plan))


def test_an_unreadable_sweep_json_is_exit_2(tmp_path, templates):
    plan = prepared_sweep(tmp_path, templates)
    plan.chmod(0)
    before = state(tmp_path)
    done = sweep_in(tmp_path, "resume", "made", as_a_user=True)
    assert done.returncode == 2, done.stderr
    assert f"{plan}: cannot read it: Permission denied" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout.splitlines()[-1] == "ray never imported"
    assert state(tmp_path) == before


@pytest.mark.parametrize("store, kind", [("optuna.db", "text"), ("mlflow.db", "binary"), ("optuna.db", "mlflow")])
def test_a_sweeps_store_that_is_not_its_store_is_named_before_it_is_opened(capsys, workdir, templates, store, kind):
    plan = prepared_sweep(workdir, templates)
    bad(workdir / store, kind, templates)
    for command in (["resume", "made"], ["compare", "made"], ["verify", "made"]):
        refused(capsys, workdir, command, f"{plan}: {workdir / store}")


def test_a_sweeps_vanished_store_is_named_not_made_again(capsys, workdir, templates):
    plan = prepared_sweep(workdir, templates)
    (workdir / "mlflow.db").unlink()
    refused(capsys, workdir, ["compare", "made"],
            f"made: the sweep's MLflow store {workdir / 'mlflow.db'} does not exist (moved or deleted?); put it back "
            f"where {plan} says it is")


@pytest.mark.parametrize("what, argv", [
    ("space", ["run", "--space", "space.yaml"]),
    ("config", ["verify", "--config", "space.yaml", "--target", "3.5"]),
])
def test_a_binary_space_or_config_file_is_named(capsys, workdir, what, argv):
    (workdir / "space.yaml").write_bytes(GARBAGE)
    refused(capsys, workdir, argv, "not a text file (byte 128, 0x80, is not UTF-8)")


@pytest.mark.parametrize("results, problem", [("results", "results is a file, so the folder"),
                                              ("results/sub", "results is a file, so the folder")])
def test_a_results_dir_that_is_a_file_is_refused_before_the_study_is_created(capsys, workdir, templates, results,
                                                                             problem):
    shutil.copy(templates / "optuna.db", workdir / "optuna.db")
    (workdir / "results").write_text("a file")
    argv = [*run_args(workdir), "--results-dir", results]
    refused(capsys, workdir, argv, "--results-dir: ", problem)
    assert optuna.study.get_all_study_names(f"{SQLITE_PREFIX}{workdir / 'optuna.db'}") == []
    refused(capsys, workdir, argv, "--results-dir: ")   # the name is still free: refused for the folder again


@pytest.mark.parametrize("log, problem", [("notes.txt", "not a training log"), ("model.log", "a binary file")])
def test_import_logs_of_a_non_log_creates_no_experiment(capsys, workdir, templates, log, problem):
    shutil.copy(templates / "mlflow.db", workdir / "mlflow.db")
    (workdir / "notes.txt").write_bytes(TEXT)
    (workdir / "model.log").write_bytes(GARBAGE)
    experiments = [e.name for e in MlflowClient(f"{SQLITE_PREFIX}{workdir / 'mlflow.db'}").search_experiments()]
    refused(capsys, workdir, ["import-logs", log], f"{log}: {problem}")
    after = [e.name for e in MlflowClient(f"{SQLITE_PREFIX}{workdir / 'mlflow.db'}").search_experiments()]
    assert after == experiments and "imported-logs" not in after


def test_import_logs_of_a_folder_without_a_log_names_each_file_and_creates_nothing(capsys, workdir):
    (workdir / "logs").mkdir()
    (workdir / "logs" / "notes.txt").write_bytes(TEXT)
    refused(capsys, workdir, ["import-logs", "logs"], "logs: no training log to import: logs/notes.txt: not a training log")
    assert not (workdir / "mlflow.db").exists()


@pytest.mark.parametrize("flags, message", [
    (["--mlflow-uri", "mlruns"], "--mlflow-uri: 'mlruns' is not a tracking URI"),
    (["--preset", "speedrunn"], "--preset: unknown preset 'speedrunn'"),
])
def test_a_bare_path_as_mlflow_uri_or_an_unknown_preset_is_refused_before_anything_is_written(capsys, workdir, flags,
                                                                                             message):
    refused(capsys, workdir, [*run_args(workdir), *flags], message)
