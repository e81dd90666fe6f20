import numpy as np
import pytest

from sweep.stores import tracking


def test_log_metrics_logs_numbers_of_any_numeric_type_and_refuses_anything_else(stores):
    client = tracking.client(stores["mlflow"])
    experiment_id = tracking.ensure_experiment(client, stores["mlflow"], "log-metrics")
    run_id = client.create_run(experiment_id).info.run_id
    tracking.log_metrics(client, run_id, {"gpu_hours": 0.25, "seeds": 3, "p_value": np.float64(0.01),
                                          "pooled_std": np.float32(0.5), "trials": np.int64(4)})
    assert client.get_run(run_id).data.metrics == {"gpu_hours": 0.25, "seeds": 3.0, "p_value": 0.01,
                                                   "pooled_std": 0.5, "trials": 4.0}
    with pytest.raises(TypeError, match="'passed': True"):
        tracking.log_metrics(client, run_id, {"mean": 3.1, "passed": True})
    assert "mean" not in client.get_run(run_id).data.metrics
