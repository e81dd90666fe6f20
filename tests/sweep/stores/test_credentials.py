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


@pytest.fixture
def clean_environment(monkeypatch):
    """A copy of the environment without the stores' credentials, so that what a test sets goes with it."""
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()
                                        if k not in (*credentials.SECRET_ENV, credentials.MLFLOW_USERNAME_ENV)})


def test_an_mlflow_server_password_goes_to_mlflow_and_not_the_trainer(tmp_path, clean_environment):
    assert credentials.mlflow_uri("http://alice:s3cret@mlflow.internal:5000") == "http://alice@mlflow.internal:5000"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("alice", "s3cret")
    # MLflow gets the server's address: requests would send the URL's user name with an empty password.
    assert credentials.address("http://alice@mlflow.internal:5000/") == "http://mlflow.internal:5000/"
    settings = TrialSettings(sweep="s", preset="tiny", objective=None, run_root=str(tmp_path), cwd=str(tmp_path),
                             mlflow_uri="http://alice@mlflow.internal:5000", experiment_id="1", parent_run_id="p")
    env = trial_env(settings, tmp_path, {})
    assert "s3cret" not in env.values()


def test_the_trials_password_file_is_the_users_alone_and_gone_after(tmp_path, clean_environment):
    uri = credentials.mlflow_uri("https://alice:s3cret@mlflow.example.com")
    folder = tmp_path / "runs" / "sweep"
    path = credentials.password_file(uri, folder)
    assert path == str(folder / credentials.PASSWORD_FILE)
    folder.mkdir(parents=True)
    (folder / credentials.PASSWORD_FILE).write_text("left by a driver that was killed")
    with credentials.handed_to_trials(uri, folder):
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)
        del os.environ[credentials.MLFLOW_PASSWORD_ENV], os.environ[credentials.MLFLOW_SERVER_PASSWORD_ENV]
        assert credentials.from_driver(path) is None   # a trial on this node
        assert credentials.mlflow_uri(uri) == uri
        assert os.environ[credentials.MLFLOW_SERVER_PASSWORD_ENV] == "s3cret"
    assert not os.path.exists(path)
    instead = credentials.from_driver(path)   # a trial on another node
    assert path in instead and "~/.mlflow/credentials" in instead and "~/.pgpass" in instead


def test_a_driver_without_an_mlflow_password_hands_over_no_file(tmp_path, clean_environment):
    uri = credentials.mlflow_uri("http://mlflow.internal:5000")
    assert credentials.password_file(uri, tmp_path) == ""
    with credentials.handed_to_trials(uri, tmp_path):
        assert list(tmp_path.iterdir()) == []
    assert credentials.from_driver("") is None


def test_the_processes_started_meanwhile_inherit_no_secret(clean_environment):
    credentials.mlflow_uri("http://alice:s3cret@mlflow.internal:5000")
    os.environ[credentials.STORAGE_PASSWORD_ENV] = "other"
    with credentials.withheld():
        assert not any(k in os.environ for k in credentials.SECRET_ENV)
    assert os.environ[credentials.MLFLOW_SERVER_PASSWORD_ENV] == "s3cret"
    assert os.environ[credentials.STORAGE_PASSWORD_ENV] == "other"
