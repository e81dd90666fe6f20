"""Stores and data that `sweep run` refuses before it writes anything or starts Ray: each exits 2 naming the
flag and the problem, leaves the folder as it was, and starts no Ray (each runs in a fresh interpreter, as
from the command line)."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
from sweeping import sweep_run_in

from sweep.commands.run import check_new_name
from trainer.data.shards import write_shard

PASSWORD = "pw-3b7e-not-to-be-shown"


def _written(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_an_unreachable_mlflow_server_exits_2_at_once_with_nothing_written(tmp_path):
    started = time.monotonic()
    done = sweep_run_in(tmp_path, "--mlflow-uri", "http://127.0.0.1:9")
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert took < 30, f"took {took:.1f} s"
    assert "--mlflow-uri" in done.stderr and "no MLflow server answers at http://127.0.0.1:9" in done.stderr
    assert done.stdout.strip() == "ray never imported"
    assert _written(tmp_path) == []


def test_an_mlflow_server_that_never_answers_exits_2_within_30_s(tmp_path):
    # A port that accepts connections (the kernel's backlog) but whose server never reads or writes.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        started = time.monotonic()
        done = sweep_run_in(tmp_path, "--mlflow-uri", f"http://127.0.0.1:{silent.getsockname()[1]}")
        took = time.monotonic() - started
    finally:
        silent.close()
    assert done.returncode == 2, done.stderr
    assert took < 30, f"took {took:.1f} s"
    assert "no answer within 5 s" in done.stderr
    assert _written(tmp_path) == []


def test_an_unopenable_storage_exits_2_with_nothing_written_and_the_name_still_free(tmp_path):
    done = sweep_run_in(tmp_path, "--storage", "sqlite:////nonexistent/dir/optuna.db", "--name", "kept")
    assert done.returncode == 2, done.stderr
    assert "--storage" in done.stderr and "/nonexistent/dir does not exist" in done.stderr
    assert done.stdout.strip() == "ray never imported"
    # No sweep.json, no MLflow parent run, no study: nothing holds the name.
    assert _written(tmp_path) == []
    check_new_name("kept", str(tmp_path / "runs"), f"sqlite:///{tmp_path}/optuna.db")


def test_a_storage_whose_driver_is_missing_is_named_without_its_password(tmp_path):
    done = sweep_run_in(tmp_path, "--storage", f"postgresql+psycopg2://sweep:{PASSWORD}@127.0.0.1:5432/optuna")
    assert done.returncode == 2, done.stderr
    assert "--storage" in done.stderr and "psycopg2" in done.stderr and "pip install psycopg2-binary" in done.stderr
    assert "Traceback" not in done.stderr and PASSWORD not in done.stderr
    assert _written(tmp_path) == []


def _shards(folder: Path) -> Path:
    for split in ("train", "val"):
        write_shard(folder / f"data_{split}_000000.bin", np.arange(4096) % 500)
    return folder


def _wrong_magic(folder: Path) -> None:
    shard = folder / "data_val_000000.bin"
    raw = bytearray(shard.read_bytes())
    raw[:4] = (12345).to_bytes(4, "little")
    shard.write_bytes(bytes(raw))


def _truncated(folder: Path) -> None:
    shard = folder / "data_train_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-7])


@pytest.mark.parametrize("damage, problem", [(_wrong_magic, "wrong magic number 12345"),
                                             (_truncated, "truncated or corrupt")])
def test_a_bad_shard_given_with_set_exits_2_before_ray_starts(tmp_path, damage, problem):
    data = _shards(tmp_path / "data")
    damage(data)
    done = sweep_run_in(tmp_path, "--set", f"data.path={data}")
    assert done.returncode == 2, done.stderr
    assert "--set data.path" in done.stderr and problem in done.stderr
    assert done.stdout.strip() == "ray never imported"
    assert _written(tmp_path) == ["data"]


def test_a_missing_tokenizer_given_with_set_exits_2_before_ray_starts(tmp_path):
    done = sweep_run_in(tmp_path, "--set", f"data.tokenizer={tmp_path / 'none.model'}")
    assert done.returncode == 2, done.stderr
    assert "--set data.tokenizer" in done.stderr and "no such file" in done.stderr
    assert done.stdout.strip() == "ray never imported"
    assert _written(tmp_path) == []


def test_a_sqlite_storage_that_is_not_optunas_is_refused_and_left_as_it_was(tmp_path):
    import sqlite3

    db = tmp_path / "other.db"
    with sqlite3.connect(db) as connection:
        connection.execute("create table mine (a)")
    before = db.read_bytes()
    done = sweep_run_in(tmp_path, "--storage", f"sqlite:///{db}", "--name", "kept")
    assert done.returncode == 2, done.stderr
    assert f"--storage: {db} is another program's database (tables: mine), not an Optuna storage" in done.stderr
    assert db.read_bytes() == before and _written(tmp_path) == ["other.db"]   # no tables added, no lock file
