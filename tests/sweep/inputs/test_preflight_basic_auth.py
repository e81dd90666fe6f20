"""`--mlflow-uri http://USER:PASSWORD@host:port`, as docs/cluster.md documents it, against a real MLflow server
behind basic auth: the pre-check probes the server's address with the credentials and passes; a wrong password
or none is exit 2 before anything starts, and no message holds the password. (A whole sweep with such a URI:
tests/sweep/orchestration/test_secrets_out_of_ray.py.)"""
from __future__ import annotations

import os

import pytest
from auth_mlflow import PASSWORD, USER
from sweeping import PLAIN_FAKE, sweep_in, write_space

from sweep.stores import credentials

WRONG = "wrong-4e1d90"


@pytest.fixture
def space(tmp_path, monkeypatch):
    for name in (*credentials.SECRET_ENV, credentials.MLFLOW_USERNAME_ENV):
        monkeypatch.delenv(name, raising=False)
    return write_space(tmp_path, name="authed", metric="val_loss",
                       params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}})


def dry_run(folder, uri: str):
    return sweep_in(folder, "run", "--space", str(folder / "authed.yaml"), "--mlflow-uri", uri, "--dry-run",
                    "--trainer-cmd", PLAIN_FAKE)


def test_the_password_in_the_url_passes_the_pre_check(authed_mlflow, tmp_path, space):
    passed = authed_mlflow.passed
    done = dry_run(tmp_path, authed_mlflow.uri(f"{USER}:{PASSWORD}"))
    assert done.returncode == 0, done.stdout + done.stderr
    # Both probes (the health page, then MLflow's API) went through with the credentials.
    assert authed_mlflow.passed >= passed + 2
    assert PASSWORD not in done.stdout + done.stderr
    assert "process list shows it" in done.stderr


@pytest.mark.parametrize("userinfo", [f"{USER}:{WRONG}", USER])
def test_a_refused_or_missing_password_is_exit_2_naming_the_server(authed_mlflow, tmp_path, space, userinfo):
    done = dry_run(tmp_path, authed_mlflow.uri(userinfo))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"error: --mlflow-uri: the MLflow server at {authed_mlflow.uri()} refuses" in done.stderr
    assert WRONG not in done.stdout + done.stderr
    assert "ray never imported" in done.stdout
    assert sorted(os.listdir(tmp_path)) == ["authed.yaml"]
