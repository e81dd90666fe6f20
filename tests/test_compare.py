"""`sweep compare` on a real sweep (local Ray, sqlite MLflow and Optuna stores, the real tiny trainer)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from sweep import tracking
from sweep.cli import main as sweep_main
from sweep.plan import load_plan

SHORT = ["train.iterations=6", "train.val_every=2", "train.warmdown_iters=2", "train.log_every=1",
         "train.batch_tokens=2048", "train.micro_batches=1", "train.val_tokens=4096", "train.val_batch_tokens=4096"]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    import ray

    from sweep.driver import start_ray

    folder = tmp_path_factory.mktemp("compare")
    stores = {"mlflow": f"sqlite:///{folder}/mlflow.db", "optuna": f"sqlite:///{folder}/optuna.db"}
    start_ray("")
    try:
        rc = sweep_main(["run", "--mlflow-uri", stores["mlflow"], "--storage", stores["optuna"], "--trials", "5",
                         "--concurrency", "2", "--name", "cmp", "--results-dir", str(folder / "runs"),
                         *[a for s in SHORT for a in ("--set", s)]])
    finally:
        ray.shutdown()
    assert rc == 0
    return folder


def test_compare_table_matches_mlflow_and_writes_plots(finished_sweep, capsys):
    results = finished_sweep / "runs"
    out = finished_sweep / "plots"
    capsys.readouterr()
    assert sweep_main(["compare", "cmp", "--results-dir", str(results), "--out", str(out), "--top", "3"]) == 0
    printed = capsys.readouterr().out

    plan = load_plan(str(results), "cmp")
    client = tracking.client(plan.mlflow_uri)
    exp = client.get_experiment_by_name(plan.experiment)
    children = tracking.child_runs(client, exp.experiment_id, plan.parent_run_id)
    assert len(children) == 5
    rows = [line.split() for line in printed.splitlines() if re.match(r"^\s*\d+\s+\d+\s+ok\s", line)]
    assert len(rows) == 5
    by_number = {int(r.data.tags[tracking.TAG_TRIAL_NUMBER]): r for r in children}
    objectives = []
    for row in rows:
        run = by_number[int(row[1])]
        objective = float(row[3])
        assert objective == pytest.approx(run.data.metrics[tracking.OBJECTIVE_METRIC], rel=1e-5)
        assert float(row[4]) == pytest.approx(float(run.data.params["fp8.x_s"]), rel=1e-5)
        assert float(row[7]) == pytest.approx(run.data.metrics["final_val_loss"], rel=1e-5)
        objectives.append(objective)
    assert objectives == sorted(objectives)           # ranked, best first
    assert "parameter importance: fp8." in printed

    for name in ("loss_curves.png", "parallel_coordinates.png", "fp8_scale_contours.png", "compare.html"):
        path = out / name
        assert path.stat().st_size > 10_000, name
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "compare.html").read_text()
    assert html.count("Plotly.newPlot") >= 3 and "trial " in html
    logged = {Path(a.path).name for a in client.list_artifacts(plan.parent_run_id, "compare")}
    assert logged >= {"loss_curves.png", "parallel_coordinates.png", "fp8_scale_contours.png", "compare.html"}


def test_compare_lists_a_running_trial(finished_sweep, capsys):
    plan = load_plan(str(finished_sweep / "runs"), "cmp")
    client = tracking.client(plan.mlflow_uri)
    exp = client.get_experiment_by_name(plan.experiment)
    live = client.create_run(exp.experiment_id, run_name="live", tags={
        tracking.PARENT_RUN_TAG: plan.parent_run_id, tracking.TAG_TRIAL_NUMBER: "99",
        tracking.TAG_ROLE: "trial"})
    client.log_metric(live.info.run_id, "val_loss", 4.25, step=2)
    capsys.readouterr()
    assert sweep_main(["compare", "cmp", "--results-dir", str(finished_sweep / "runs"),
                       "--out", str(finished_sweep / "plots2")]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if re.match(r"^\s*-\s+99\s", ln))
    client.delete_run(live.info.run_id)
    assert "running" in line and line.rstrip().endswith("4.25")


def test_compare_unknown_sweep_exits_2(tmp_path, capsys):
    assert sweep_main(["compare", "nope", "--results-dir", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err


def test_verify_reruns_the_best_trial_over_seeds_and_tests_it(finished_sweep, capsys):
    import scipy.stats

    results = finished_sweep / "runs"
    source = load_plan(str(results), "cmp")
    client = tracking.client(source.mlflow_uri)
    exp = client.get_experiment_by_name(source.experiment)
    best = min((r for r in tracking.child_runs(client, exp.experiment_id, source.parent_run_id)
                if tracking.OBJECTIVE_METRIC in r.data.metrics),
               key=lambda r: r.data.metrics[tracking.OBJECTIVE_METRIC])
    capsys.readouterr()
    assert sweep_main(["verify", "cmp", "--seeds", "3", "--target", "9.0", "--results-dir", str(results)]) == 0
    printed = capsys.readouterr().out

    plan = load_plan(str(results), "cmp-verify")
    assert plan.experiment == source.experiment
    runs = sorted(tracking.child_runs(client, exp.experiment_id, plan.parent_run_id),
                  key=lambda r: int(r.data.tags[tracking.TAG_TRIAL_NUMBER]))
    assert [int(r.data.params["seed"]) for r in runs] == [0, 1, 2]
    for run in runs:
        for key in ("fp8.x_s", "fp8.w_s", "fp8.grad_s", "train.iterations"):
            assert run.data.params[key] == best.data.params[key]
    losses = [r.data.metrics["final_val_loss"] for r in runs]
    assert len(set(losses)) == 3                      # the seeds really differ
    p = scipy.stats.ttest_1samp(losses, 9.0, alternative="less").pvalue
    parent = client.get_run(plan.parent_run_id)
    assert parent.data.metrics["p_value"] == pytest.approx(p, rel=1e-9)
    note = parent.data.tags["mlflow.note.content"]
    for text in (note, printed):
        assert f"losses = [{', '.join(repr(x) for x in losses)}]" in text
        assert ("# p=%.4f" % p if p >= 1e-4 else "# p=%.2e" % p) in text


def test_verify_needs_a_target_for_the_tiny_preset(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("fp8: {enabled: true}\n")
    assert sweep_main(["verify", "--config", str(config), "--results-dir", str(tmp_path / "runs"),
                       "--mlflow-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    assert "--target" in capsys.readouterr().err
    assert not list((tmp_path / "runs").rglob("*.yaml")) and not (tmp_path / "m.db").exists()
