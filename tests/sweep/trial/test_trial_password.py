"""A trial reaches an MLflow server behind basic auth with the password the driver handed over in its file; where
the file is not (a trial on another node than the driver's), it connects with the node's own credentials, and a
refusal says that the file was missing and which credentials it used instead (docs/cluster.md, "Passwords")."""
from __future__ import annotations

import pytest
from auth_mlflow import PASSWORD, USER

from sweep.stores import credentials
from sweep.trial.command import TrialSettings
from sweep.trial.runner import TrialFailed, open_child_run


@pytest.fixture
def settings(authed_mlflow, tmp_path, monkeypatch):
    for name in (*credentials.SECRET_ENV, credentials.MLFLOW_USERNAME_ENV):
        monkeypatch.setenv(name, "")   # set, then deleted: monkeypatch restores what the trial sets
        monkeypatch.delenv(name)
    return TrialSettings(sweep="s", preset="tiny", objective=None, run_root=str(tmp_path), cwd=str(tmp_path),
                         mlflow_uri=authed_mlflow.uri(USER), experiment_id="0", parent_run_id="p",
                         mlflow_password_file=str(tmp_path / credentials.PASSWORD_FILE))


def test_a_trial_connects_with_the_password_from_the_drivers_file(settings, authed_mlflow, tmp_path):
    (tmp_path / credentials.PASSWORD_FILE).write_text(PASSWORD)
    passed = authed_mlflow.passed
    child = open_child_run(settings, 0)
    assert child.recorded_result() is None and authed_mlflow.passed > passed


def test_a_trial_without_the_file_says_it_used_its_nodes_own_credentials(settings):
    with pytest.raises(TrialFailed) as failed:
        open_child_run(settings, 0)
    message = str(failed.value)
    assert "401" in message
    assert f"the driver's MLflow password file {settings.mlflow_password_file} is on the driver's node only" in message
    assert "MLFLOW_TRACKING_PASSWORD" in message and "~/.mlflow/credentials" in message
