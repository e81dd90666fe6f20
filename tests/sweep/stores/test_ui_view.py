"""The MLflow UI's saved view of a sweep's trials and the lines that open it, on a real sqlite MLflow store
(the browser's side: tests/sweep/stores/test_mlflow_ui.py)."""
from __future__ import annotations

import json

from mlflow import MlflowClient

from sweep.stores import tracking


def test_a_sweeps_view_lists_its_trials_best_first_and_survives_a_resume(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = tracking.ensure_experiment(client, uri, "fp8_scales")
    tracking.ensure_trials_view(client, experiment_id, "s1", ["fp8.x_s", "fp8.w_s"], "max")
    view = json.loads(client.get_experiment(experiment_id).tags["mlflow.sharedViewState.s1"])
    assert view["name"] == "sweep s1" and view["createdAt"] == view["updatedAt"] > 0
    state = json.loads(view["state"])
    assert state["searchFilter"] == "tags.`sweep.name` = 's1' and tags.`sweep.role` = 'trial'"
    assert state["orderByKey"] == "metrics.`objective`" and state["orderByAsc"] is False   # max: highest first
    assert state["selectedColumns"] == ["metrics.`objective`", "metrics.`val_loss`", "metrics.`wallclock_s`",
                                        "params.`fp8.x_s`", "params.`fp8.w_s`", "tags.`sweep.status`"]
    # The user may have changed it in the UI since: a resumed sweep leaves it as it is.
    client.set_experiment_tag(experiment_id, "mlflow.sharedViewState.s1", "changed")
    tracking.ensure_trials_view(client, experiment_id, "s1", ["fp8.grad_s"], "min")
    assert client.get_experiment(experiment_id).tags["mlflow.sharedViewState.s1"] == "changed"


def test_the_lines_that_open_the_ui_on_a_local_store_and_on_a_server():
    query = "viewStateShareKey=s1&workflowType=machine_learning"
    assert tracking.ui_lines("sqlite:////abs/mlflow.db", "4", "s1") == [
        "MLflow UI: mlflow ui --backend-store-uri sqlite:////abs/mlflow.db",
        f"  then open http://127.0.0.1:5000/#/experiments/4/runs?{query}"]
    # a server's page, without the user name a tracking URI may carry
    assert tracking.ui_lines("https://alice@mlflow.example.com/", "4", "s1") == [
        f"MLflow UI: https://mlflow.example.com/#/experiments/4/runs?{query}"]
