"""A password given for a sqlite store (in SWEEP_MLFLOW_PASSWORD, SWEEP_STORAGE_PASSWORD or the URL) is bad input:
exit 2 at once, naming where it was given, before Ray starts or any store is written."""
from __future__ import annotations

import pytest
from sweeping import PLAIN_FAKE, sweep_in, write_space
from synthetic_sweep import save_plan

from sweep.stores import credentials

SECRET = "hunter2-sqlite"


@pytest.mark.parametrize("variable", [credentials.MLFLOW_PASSWORD_ENV, credentials.STORAGE_PASSWORD_ENV])
def test_a_password_variable_with_the_default_sqlite_stores_is_exit_2_before_anything(tmp_path, monkeypatch, variable):
    monkeypatch.setenv(variable, SECRET)
    space = write_space(tmp_path, name="plain", metric="val_loss",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}})
    done = sweep_in(tmp_path, "run", "--space", str(space), "--trials", "2", "--trainer-cmd", PLAIN_FAKE)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"error: {variable}: a password was given for sqlite:" in done.stderr
    assert f"unset {variable}" in done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "ray never imported"
    assert sorted(p.name for p in tmp_path.iterdir()) == [space.name]


def test_a_password_in_a_sqlite_url_is_exit_2_naming_the_flag(tmp_path):
    space = write_space(tmp_path, name="plain", metric="val_loss",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}})
    done = sweep_in(tmp_path, "run", "--space", str(space), "--mlflow-uri", f"sqlite://sweep:{SECRET}@/mlflow.db",
                    "--trainer-cmd", PLAIN_FAKE)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error: --mlflow-uri: a password was given for sqlite://sweep@/mlflow.db" in done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "ray never imported"
    assert sorted(p.name for p in tmp_path.iterdir()) == [space.name]


def test_resuming_a_sqlite_sweep_with_a_password_variable_is_exit_2_before_ray(tmp_path, monkeypatch):
    plan = save_plan(tmp_path, "stored")
    monkeypatch.setenv(credentials.MLFLOW_PASSWORD_ENV, SECRET)
    done = sweep_in(tmp_path, "resume", "stored", "--results-dir", plan.results_dir)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"error: {credentials.MLFLOW_PASSWORD_ENV}: a password was given for {plan.mlflow_uri}" in done.stderr
    assert done.stdout.splitlines()[-1] == "ray never imported"
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()
