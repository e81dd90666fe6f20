"""Fixtures of the sweep tests: one local Ray instance and one pair of sqlite stores per test module, an MLflow
server behind basic auth per test module that asks for one, and a fresh working folder per test."""
from __future__ import annotations

import pytest
from auth_mlflow import mlflow_behind_auth

from sweep.stores import tracking


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from sweep.orchestration.tuner import start_ray

    start_ray("")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stores")
    uris = {"mlflow": f"sqlite:///{folder}/mlflow.db", "optuna": f"sqlite:///{folder}/optuna.db"}
    tracking.client(uris["mlflow"]).search_experiments()  # creates the schema once for the module
    return uris


@pytest.fixture(scope="module")
def authed_mlflow(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 behind a basic-auth proxy (auth_mlflow.USER / auth_mlflow.PASSWORD)."""
    with mlflow_behind_auth(tmp_path_factory.mktemp("authed-mlflow")) as server:
        yield server


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path
