"""Store passwords outside the URLs the sweep keeps (sweep.stores.credentials): taken out of a URL or read from
the environment, and handed to the connections that need them."""
from __future__ import annotations

import os

import optuna
import password_sqlite
import pytest
import sqlalchemy

from sweep.stores import credentials
from sweep.trial.command import TrialSettings, trial_env


@pytest.mark.parametrize("url, bare, password", [
    ("postgresql+psycopg2://sweep:s3cret@10.0.0.5:5432/optuna", "postgresql+psycopg2://sweep@10.0.0.5:5432/optuna",
     "s3cret"),
    ("https://alice:p%40ss@mlflow.example.com/", "https://alice@mlflow.example.com/", "p@ss"),
    ("sqlite:////tmp/optuna.db", "sqlite:////tmp/optuna.db", None),
    ("http://mlflow.internal:5000", "http://mlflow.internal:5000", None),
])
def test_split_takes_the_password_out_of_a_url(url, bare, password):
    assert credentials.split(url) == (bare, password)


def test_redact_hides_every_password_in_a_text():
    text = "sweep run --storage postgresql://sweep:s3cret@db/optuna --mlflow-uri=http://a:b@h:5000 --name x"
    assert credentials.redact(text) == ("sweep run --storage postgresql://sweep:***@db/optuna "
                                        "--mlflow-uri=http://a:***@h:5000 --name x")


def test_a_storage_password_from_the_environment_reaches_its_connections_only(tmp_path, monkeypatch):
    password_sqlite.register()
    bare = password_sqlite.url(tmp_path / "optuna.db", password=None)
    with pytest.raises(sqlalchemy.exc.OperationalError, match="password authentication failed"):
        optuna.storages.RDBStorage(bare)
    monkeypatch.setenv(credentials.STORAGE_PASSWORD_ENV, password_sqlite.PASSWORD)
    assert credentials.storage_url(bare) == bare
    optuna.create_study(study_name="s", storage=optuna.storages.RDBStorage(bare))
    # The driver's children (Ray, the trainers) do not inherit it.
    assert credentials.STORAGE_PASSWORD_ENV not in os.environ


def test_an_mlflow_server_password_goes_to_mlflow_and_the_trials_workers_not_the_trainer(tmp_path, monkeypatch):
    # A copy of the environment, so that what the test sets goes with it.
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()
                                        if k not in (*credentials.SECRET_ENV, credentials.MLFLOW_USERNAME_ENV)})
    assert credentials.mlflow_uri("http://alice:s3cret@mlflow.internal:5000") == "http://alice@mlflow.internal:5000"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("alice", "s3cret")
    assert credentials.worker_env() == {credentials.MLFLOW_PASSWORD_ENV: "s3cret"}
    settings = TrialSettings(sweep="s", preset="tiny", objective=None, run_root=str(tmp_path), cwd=str(tmp_path),
                             mlflow_uri="http://alice@mlflow.internal:5000", experiment_id="1", parent_run_id="p")
    env = trial_env(settings, tmp_path, {})
    assert "s3cret" not in env.values()
