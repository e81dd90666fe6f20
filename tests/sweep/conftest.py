"""Fixtures of the sweep tests: one local Ray instance and one pair of sqlite stores per test module, and
a fresh working folder per test."""
from __future__ import annotations

import pytest

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


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path
