"""`sweep compare` on a real sweep (local Ray, sqlite MLflow and Optuna stores, the real tiny trainer)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from paths import SPACES

from sweep.cli import main as sweep_main
from sweep.cli import parser as sweep_parser
from sweep.inputs.plan import load_plan
from sweep.stores import tracking

pytestmark = pytest.mark.slow  # starts Ray or torchrun processes

SHORT = ["train.iterations=6", "train.val_every=2", "train.warmdown_iters=2", "train.log_every=1",
         "train.batch_tokens=2048", "train.micro_batches=1", "train.val_tokens=4096", "train.val_batch_tokens=4096"]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    import ray

    from sweep.orchestration.tuner import start_ray

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
    rows = [line.split() for line in printed.splitlines() if re.match(r"^\s*\d+\s+trial_\d{4}\s+ok\s", line)]
    assert len(rows) == 5
    # CPU trials: CPU-hours, as the sweep's summary counts them; no column every trial leaves empty (no export:
    # no round trip; none running: no latest val_loss)
    header = next(line.split() for line in printed.splitlines() if line.startswith("rank "))
    assert header[-2:] == ["wallclock_s", "cpu_hours"] and "gpu_hours" not in header
    assert "roundtrip_val_bpb" not in header and "latest" not in header
    by_number = {int(r.data.tags[tracking.TAG_TRIAL_NUMBER]): r for r in children}
    objectives = []
    for row in rows:
        run = by_number[int(row[1].removeprefix("trial_"))]
        assert row[1] == run.info.run_name
        assert float(row[-1]) == pytest.approx(run.data.metrics["wallclock_s"] / 3600, rel=1e-4)   # 1 CPU a trial
        objective = float(row[3])
        assert objective == pytest.approx(run.data.metrics[tracking.OBJECTIVE_METRIC], rel=1e-5)
        assert row[4] == run.data.tags[tracking.TAG_OBJECTIVE_FROM] == "final"   # val_loss: the final event's
        assert float(row[5]) == pytest.approx(float(run.data.params["fp8.x_s"]), rel=1e-5)
        assert float(row[8]) == pytest.approx(run.data.metrics["final_val_loss"], rel=1e-5)
        objectives.append(objective)
    assert objectives == sorted(objectives)           # ranked, best first
    assert "parameter importance: fp8." in printed

    pictures = ("loss_curves.png", "optimization_history.png", "parallel_coordinates.png", "importance.png",
                "fp8_scale_contours.png", "fp8_ranges.png")
    for name in pictures:
        path = out / name
        assert path.stat().st_size > 10_000, name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    page = out / "compare.html"
    html = page.read_text()
    assert page.stat().st_size < 1_000_000  # the figures inlined as PNG: small, and it opens offline
    assert html.count("src='data:image/png;base64,") == len(pictures)
    assert "parameter importance: fp8." in html and "rank" in html
    assert (out / "trials.txt").read_text().strip() in printed
    logged = {Path(a.path).name for a in client.list_artifacts(plan.parent_run_id, "compare")}
    assert logged >= {"trials.txt", *pictures, "compare.html"}


def test_trials_log_the_fp8_range_figures_by_training_step(finished_sweep):
    plan = load_plan(str(finished_sweep / "runs"), "cmp")
    client = tracking.client(plan.mlflow_uri)
    exp = client.get_experiment_by_name(plan.experiment)
    for run in tracking.child_runs(client, exp.experiment_id, plan.parent_run_id):
        events = [json.loads(line) for line in
                  Path(client.download_artifacts(run.info.run_id, "events.jsonl")).read_text().splitlines()]
        fp8_events = [e for e in events if e["event"] == "fp8"]
        assert [e["step"] for e in fp8_events] == [1, 2, 3, 4, 5, 6]  # log_every=1: every step
        for name in ("x_s", "g_flushed", "w_saturated", "x_p999_ratio", "g_amax_ratio"):
            history = client.get_metric_history(run.info.run_id, f"fp8.{name}")
            assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
                [(e["step"], pytest.approx(e[name])) for e in fp8_events], name
        assert run.data.metrics["fp8.x_s"] == pytest.approx(float(run.data.params["fp8.x_s"]))


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
    line = next(ln for ln in capsys.readouterr().out.splitlines() if re.match(r"^\s*-\s+trial_0099\s", ln))
    client.delete_run(live.info.run_id)
    assert "running" in line and line.rstrip().endswith("4.25")


def test_compare_unknown_sweep_exits_2(tmp_path, capsys):
    assert sweep_main(["compare", "nope", "--results-dir", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err



def test_record_commands_are_on_the_command_line(tmp_path, capsys):
    help_text = sweep_parser().format_help()
    assert all(name in help_text for name in ("compare", "verify", "import-logs"))
    log = tmp_path / "record.txt"
    log.write_text("".join(f"step:{s}/20 val_loss:{4.0 - s / 10:.4f} train_time:{s * 100}ms step_avg:100.00ms\n"
                           for s in (0, 10, 20)))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert sweep_main(["import-logs", str(log), "--experiment", "records", "--mlflow-uri", uri]) == 0
    assert "1 imported" in capsys.readouterr().out
    client = tracking.client(uri)
    runs = client.search_runs([client.get_experiment_by_name("records").experiment_id])
    assert len(runs) == 1 and runs[0].data.metrics["final_val_loss"] == pytest.approx(2.0)


def test_importance_says_why_there_is_none_and_what_few_trials_are_worth():
    import optuna

    from sweep.commands.compare import importance
    from sweep.inputs.space import parse_space

    space = parse_space(SPACES.joinpath("fp8_scales.yaml").read_text(),
                        "fp8_scales.yaml")
    plan = SimpleNamespace(space=lambda: space)
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(params={"fp8.x_s": 0.2, "fp8.w_s": 0.003, "fp8.grad_s": 0.002},
                                              distributions=space.distributions(), value=3.3))
    scores, why = importance(study, plan)
    assert scores == {} and "at least 2 finished trials" in why and "(1 finished)" in why
    for x in (0.1, 0.5, 1.0):
        study.add_trial(optuna.trial.create_trial(params={"fp8.x_s": x, "fp8.w_s": 0.003, "fp8.grad_s": 0.002},
                                                  distributions=space.distributions(), value=3.3 + x))
    scores, why = importance(study, plan)
    assert max(scores, key=scores.get) == "fp8.x_s"
    assert why == "from 4 finished trials: unreliable below about 20, the order can change with a few more"
    for i in range(16):
        study.add_trial(optuna.trial.create_trial(params={"fp8.x_s": 0.05 + i / 20, "fp8.w_s": 0.003,
                                                          "fp8.grad_s": 0.002},
                                                  distributions=space.distributions(), value=3.3 + i / 20))
    scores, why = importance(study, plan)
    assert why == "" and max(scores, key=scores.get) == "fp8.x_s"   # 20 finished: no caveat


def test_list_shows_the_sweeps_of_a_store_with_their_counts(finished_sweep, capsys, tmp_path):
    plan = load_plan(str(finished_sweep / "runs"), "cmp")
    client = tracking.client(plan.mlflow_uri)
    best = client.get_run(plan.parent_run_id).data.metrics[tracking.BEST_METRIC]
    capsys.readouterr()
    assert sweep_main(["list", "--mlflow-uri", plan.mlflow_uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:8] == ["sweep", "experiment", "state", "trials", "done", "pruned", "failed", "running"]
    row = next(line.split() for line in lines[1:] if line.startswith("cmp "))
    # finished, 5 trials all done (a test above may add one live run: it shows as running)
    assert row[1:3] == ["cmp", "finished"] and int(row[4]) == 5 and row[5:7] == ["0", "0"]
    assert int(row[3]) == 5 + int(row[7])
    assert row[8] == "val_loss" and float(row[9]) == pytest.approx(best, rel=1e-5)
    missing = tmp_path / "none.db"
    assert sweep_main(["list", "--mlflow-uri", f"sqlite:///{missing}"]) == 2
    assert not missing.exists()
