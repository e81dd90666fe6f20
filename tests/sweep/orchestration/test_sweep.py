"""Whole sweeps on a real local Ray instance, with a real sqlite MLflow store, a real Optuna storage and real
torchrun processes. One Ray instance and one pair of stores serve the whole module; each sweep has its
own name, so its own Optuna study and MLflow parent run.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import password_sqlite
import pytest
import yaml
from paths import REPO
from sweeping import (
    PLAIN_FAKE,
    TORCHRUN_FAKE,
    processes_with,
    run_sweep,
    study,
    sweep_run_in,
    sweep_runs,
    wait_for,
    write_space,
)

from sweep.cli import main as sweep_main
from sweep.inputs.objective import DIVERGED_VALUE
from sweep.inputs.plan import load_plan
from sweep.report.live_text import EVERY_ENV, MODE_ENV
from sweep.stores import tracking

pytestmark = pytest.mark.slow  # starts Ray or torchrun processes


def printed_best(out: str) -> tuple[int, float]:
    m = re.search(r"^best: trial_(\d{4}) \S+=(\S+) ", out, re.M)
    assert m, out
    return int(m.group(1)), float(m.group(2))


def test_default_sweep_with_the_real_trainer(ray_local, stores, workdir, capsys):
    short = ["train.iterations=4", "train.val_every=2", "train.warmdown_iters=2", "train.log_every=1",
             "train.batch_tokens=2048", "train.micro_batches=1", "train.val_tokens=4096",
             "train.val_batch_tokens=4096"]
    rc, out = run_sweep(capsys, stores, "--trials", "4", "--concurrency", "2", "--name", "default_cpu",
                        *[a for s in short for a in ("--set", s)])
    assert rc == 0, out
    client, parent, children = sweep_runs(stores, "default_cpu")
    assert parent.info.status == "FINISHED"
    assert yaml.safe_load(parent.data.tags[tracking.TAG_SPACE])["name"] == "fp8_scales"
    assert sorted(children) == [0, 1, 2, 3]
    swept = ["fp8.x_s", "fp8.w_s", "fp8.grad_s"]
    for run in children.values():
        assert run.info.status == "FINISHED"
        assert set(swept) | {"fp8.enabled", "train.iterations"} <= set(run.data.params)
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert steps == [2, 4]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert set(tracking.ARTIFACTS) <= artifacts
        # No export on the tiny preset: every final metric but the artifact's size and round trip.
        assert set(tracking.FINAL_METRICS) & set(run.data.metrics) == {
            "final_val_loss", "final_val_bpb", "wallclock_s", "gpu_hours"}
        assert run.data.metrics["gpu_hours"] == 0.0 and run.data.metrics["wallclock_s"] > 0
    # The first trial ran the space's first point: modded-nanogpt PR #175's scales.
    assert float(children[0].data.params["fp8.x_s"]) == pytest.approx(100 / 448)

    trials = study(stores, "default_cpu").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    for t in trials:
        mlflow_run = children[t.number]
        assert t.value == mlflow_run.data.metrics["objective"] == mlflow_run.data.metrics["final_val_loss"]
        assert {k: float(v) for k, v in t.params.items()} == {k: float(mlflow_run.data.params[k]) for k in swept}

    number, value = printed_best(out)
    best_in_mlflow = min(children.values(), key=lambda r: r.data.metrics["final_val_loss"])
    assert value == best_in_mlflow.data.metrics["final_val_loss"]
    assert number == int(best_in_mlflow.data.tags[tracking.TAG_TRIAL_NUMBER])
    # the last lines: the next commands with the sweep's name, and the page of MLflow's UI with its trials
    experiment_id = parent.info.experiment_id
    last = out.rstrip().splitlines()[-4:]
    assert re.fullmatch(rf"next: sweep list --mlflow-uri {re.escape(stores['mlflow'])} +# the sweeps of this store",
                        last[0]), last
    assert re.fullmatch(r" {6}sweep compare default_cpu +# this sweep's trials ranked, parameter importance, plots in "
                        + re.escape(str(workdir / "runs" / "default_cpu" / "compare")), last[1]), last
    assert last[2:] == [f"MLflow UI: mlflow ui --backend-store-uri {stores['mlflow']}",
                        f"  then open http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?viewStateShareKey="
                        f"default_cpu&workflowType=machine_learning"]
    view = json.loads(client.get_experiment(experiment_id).tags[tracking.SAVED_VIEW_PREFIX + "default_cpu"])
    assert view["name"] == "sweep default_cpu"
    assert json.loads(view["state"])["searchFilter"] == "tags.`sweep.name` = 'default_cpu' and tags.`sweep.role` = 'trial'"
    # one name per trial: the child run, the run directory, the leaderboard's row
    for number, run in children.items():
        assert run.info.run_name == f"trial_{number:04d}"
        assert (workdir / "runs" / "default_cpu" / "trials" / run.info.run_name / "events.jsonl").is_file()
        assert re.search(rf"^\d+\s+{run.info.run_name}\s+ok\s", out, re.M), out
    assert parent.data.metrics[tracking.BEST_METRIC] == value
    leaderboard = client.download_artifacts(parent.info.run_id, tracking.LEADERBOARD_ARTIFACT, str(workdir))
    assert Path(leaderboard).read_text().strip() in out
    assert re.search(r"^\[\s*\d+:\d\d\] 4 trials: 0 running, 4 done, 0 pruned, 0 failed", out, re.M)
    # The run's description in MLflow's UI says how to read the sweep, then holds the leaderboard.
    note = client.get_run(parent.info.run_id).data.tags[tracking.NOTE_TAG]
    assert f"metric `{tracking.OBJECTIVE_METRIC}`" in note and "lowest is best" in note
    assert Path(leaderboard).read_text().strip() in note


def test_asha_stopped_trials_are_pruned_in_optuna(ray_local, stores, workdir, capsys):
    # Trial 0 is the best at every validation; later, worse trials are stopped at their first rung.
    marker = f"ashatest-{uuid.uuid4().hex[:8]}"
    space = write_space(workdir, name="asha", metric="val_loss",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 5.0}},
                        fixed={"fake.tag": marker, "fake.step_s": 0.05, "train.iterations": 60},
                        points_to_evaluate=[{"fake.quality": q} for q in (0.0, 2.0, 3.0, 4.0)])
    rc, out = run_sweep(capsys, stores, "--space", str(space), "--trials", "4", "--concurrency", "1",
                        "--scheduler", "asha", "--name", "asha", "--trainer-cmd", PLAIN_FAKE)
    assert rc == 0, out
    trials = {t.number: t for t in study(stores, "asha").trials}
    assert trials[0].state == optuna.trial.TrialState.COMPLETE
    pruned = [n for n, t in trials.items() if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned == [1, 2, 3]
    for n in pruned:
        # As with Optuna's own pruners: the value that got the trial stopped is its last intermediate value.
        steps = sorted(trials[n].intermediate_values)
        assert steps == [10]
        assert trials[n].value == trials[n].intermediate_values[10] > trials[0].intermediate_values[10]
    assert study(stores, "asha").best_trial.number == 0
    _, _, children = sweep_runs(stores, "asha")
    for n in pruned:
        assert children[n].data.tags[tracking.TAG_STATUS] == "pruned"
        assert children[n].info.status == "KILLED"
        assert "objective" not in children[n].data.metrics
    assert children[0].data.tags[tracking.TAG_STATUS] == "ok"
    # A stopped trial's trainer was killed mid-run: it never wrote its final event.
    run_root = load_plan(workdir / "runs", "asha").run_root
    for n in pruned:
        events = (run_root / f"trial_{n:04d}" / "events.jsonl").read_text()
        assert '"event": "val"' in events and '"event": "final"' not in events
    assert processes_with(marker) == []


def test_crash_is_retried_then_failed_and_divergence_is_a_penalised_result(ray_local, stores, workdir, capsys):
    marker = f"crashtest-{uuid.uuid4().hex[:8]}"
    space = write_space(workdir, name="crash", metric="val_loss",
                        params={"seed": {"type": "categorical", "choices": [1, 2, 3]}},
                        fixed={"fake.crash_seed": 2, "fake.diverge_seed": 3, "fake.tag": marker},
                        points_to_evaluate=[{"seed": 1}, {"seed": 2}, {"seed": 3}])
    rc, out = run_sweep(capsys, stores, "--space", str(space), "--trials", "3", "--concurrency", "2",
                        "--name", "crash", "--trainer-cmd", TORCHRUN_FAKE, "--max-failures", "1")
    assert rc == 0, out
    trials = {t.number: t for t in study(stores, "crash").trials}
    assert trials[0].state == optuna.trial.TrialState.COMPLETE and trials[0].value < 10
    assert trials[1].state == optuna.trial.TrialState.FAIL
    assert trials[2].state == optuna.trial.TrialState.COMPLETE and trials[2].value == DIVERGED_VALUE

    _, parent, children = sweep_runs(stores, "crash")
    failed = children[1]
    assert failed.info.status == "FAILED"
    assert failed.data.tags[tracking.TAG_ATTEMPT] == "2"  # the first attempt, then one retry
    assert "crashed (exit code" in failed.data.tags[tracking.TAG_ERROR]
    assert "fake crash" in failed.data.tags[tracking.TAG_ERROR]
    assert children[2].data.tags[tracking.TAG_STATUS] == "diverged"
    assert children[2].data.metrics["objective"] == DIVERGED_VALUE

    run_root = load_plan(workdir / "runs", "crash").run_root
    assert (run_root / "trial_0001.attempt1" / "output.log").is_file()
    assert re.search(r"^\s*-\s+trial_0001\s+failed\s", out, re.M)
    # Each failure is one line of the live view, not Tune's traceback.
    assert re.search(r"trial_0001  failed; Tune runs it again .*\n(.*\n)*.*trial_0001  failed; it has used its "
                     r"--max-failures retries; why: its child run's sweep.error tag", out)
    assert "Traceback" not in out
    assert processes_with(marker) == []


def test_log_line_trainer_is_scored_on_its_roundtrip(ray_local, stores, workdir, capsys):
    space = write_space(workdir, name="golflines", metric="roundtrip_val_bpb",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}},
                        fixed={"fake.format": "golf"},
                        points_to_evaluate=[{"fake.quality": 0.0}, {"fake.quality": 1.0}])
    rc, out = run_sweep(capsys, stores, "--space", str(space), "--trials", "2", "--name", "golflines",
                        "--trainer-cmd", PLAIN_FAKE)
    assert rc == 0, out
    client, _, children = sweep_runs(stores, "golflines")
    for run in children.values():
        metrics = run.data.metrics
        assert metrics["objective"] == metrics["roundtrip_val_bpb"]
        assert metrics["roundtrip_val_bpb"] == pytest.approx(metrics["final_val_bpb"] + 0.002, abs=2e-4)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [10, 20, 30, 40]
    assert printed_best(out)[0] == 0


def test_resume_after_the_driver_is_killed(ray_local, stores, workdir, capsys):
    marker = f"resumetest-{uuid.uuid4().hex[:8]}"
    space = write_space(workdir, name="resumable", metric="val_loss",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}},
                        fixed={"fake.tag": marker, "fake.step_s": 0.05})
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweep", "run", "--space", str(space), "--trials", "5", "--concurrency", "2",
         "--name", "resumable", "--trainer-cmd", PLAIN_FAKE, "--mlflow-uri", stores["mlflow"],
         "--storage", stores["optuna"]],
        cwd=workdir, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)

    def completed() -> int:
        try:
            return len(study(stores, "resumable").get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
        except KeyError:
            return 0

    try:
        wait_for(lambda: completed() >= 2 and processes_with(marker), 180, "two finished trials and a running one")
    finally:
        driver.kill()
        driver.wait()
    wait_for(lambda: not processes_with(marker), 30, "the killed sweep's trainers to exit")

    assert sweep_main(["resume", "resumable"]) == 0
    out = capsys.readouterr().out
    trials = study(stores, "resumable").trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    client, parent, children = sweep_runs(stores, "resumable")
    assert parent.info.status == "FINISHED"
    assert sorted(children) == [0, 1, 2, 3, 4]
    for t in trials:
        run = children[t.number]
        assert run.info.status == "FINISHED" and run.data.metrics["objective"] == t.value
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert steps == [10, 20, 30, 40]
    # The trials cut off by the kill ran again: a second attempt, in a fresh run directory.
    restarted = [n for n, run in children.items() if run.data.tags[tracking.TAG_ATTEMPT] == "2"]
    assert restarted
    run_root = load_plan(workdir / "runs", "resumable").run_root
    assert all((run_root / f"trial_{n:04d}.attempt1").is_dir() for n in restarted)
    assert printed_best(out)[1] == min(t.value for t in trials)
    assert processes_with(marker) == []


@pytest.mark.parametrize("change, named", [
    ({"params": {"fp8.bogus": {"type": "float", "low": 0.1, "high": 1.0}}}, "params.fp8.bogus"),
    ({"params": {"fp8.x_s": {"type": "float", "low": 2.0, "high": 0.02}}}, "params.fp8.x_s"),
    ({"params": {"fp8.x_s": {"type": "float", "low": 0.0, "high": 2.0, "log": True}}}, "params.fp8.x_s.low"),
    ({"metric": "accuracy"}, "metric"),
])
def test_bad_space_exits_2_before_ray_starts_and_writes_nothing(tmp_path, change, named):
    space = {"name": "bad", "metric": "val_loss", "mode": "min", "preset": "tiny",
             "params": {"fp8.x_s": {"type": "float", "low": 0.02, "high": 2.0, "log": True}}, **change}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(space))
    done = sweep_run_in(tmp_path, "--space", "bad.yaml")
    assert done.returncode == 2, done.stderr
    assert "bad.yaml" in done.stderr and named in done.stderr
    assert done.stdout.strip() == "ray never imported"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_asha_refuses_a_space_that_sweeps_the_validation_interval(tmp_path):
    """ASHA's rungs count validations; with val_every swept they would compare trials at different steps."""
    space = {"name": "vals", "metric": "val_loss", "mode": "min", "preset": "tiny",
             "params": {"train.val_every": {"type": "int", "low": 10, "high": 50}}}
    (tmp_path / "vals.yaml").write_text(yaml.safe_dump(space))
    done = sweep_run_in(tmp_path, "--space", "vals.yaml", "--scheduler", "asha")
    assert done.returncode == 2, done.stderr
    assert "--scheduler" in done.stderr and "train.val_every" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vals.yaml"]


def test_rejected_fixed_input_is_not_retried_and_stops_the_sweep(ray_local, stores, workdir, capsys):
    # The data lives "on the workers" (another program's keys are not checked here): the first trial's
    # trainer rejects it, and every other trial would get the same path.
    space = write_space(workdir, name="rejected", metric="val_loss",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}})
    missing = workdir / "no-such-shards"
    rc = sweep_main(["run", "--mlflow-uri", stores["mlflow"], "--storage", stores["optuna"], "--space", str(space),
                     "--trials", "4", "--concurrency", "1", "--max-failures", "2", "--name", "rejected",
                     "--trainer-cmd", PLAIN_FAKE, "--set", f"data.path={missing}"])
    out, err = capsys.readouterr()
    assert rc == 2, out + err
    assert "stopped: the trainer rejects data.path, which every trial gets" in err
    assert f"data.path: no such folder: {missing}" in err
    _, parent, children = sweep_runs(stores, "rejected")
    assert parent.info.status == "FAILED"
    run_root = load_plan(workdir / "runs", "rejected").run_root
    ran = sorted(p.name for p in run_root.iterdir())
    assert ran == ["trial_0000"]  # one trainer run: no retry (no .attempt1), no second trial
    first = children[0]
    assert first.info.status == "FAILED" and first.data.tags[tracking.TAG_ATTEMPT] == "1"
    assert first.data.tags[tracking.TAG_EXIT_CODE] == "2"
    assert all(run.info.status != "RUNNING" for run in children.values())


def test_a_rejected_swept_value_fails_its_trial_only(ray_local, stores, workdir, capsys):
    (workdir / "shards").mkdir()
    space = write_space(workdir, name="onebad", metric="val_loss",
                        params={"data.path": {"type": "categorical", "choices": ["shards", "missing"]}},
                        points_to_evaluate=[{"data.path": "missing"}, {"data.path": "shards"}])
    rc, out = run_sweep(capsys, stores, "--space", str(space), "--trials", "2", "--concurrency", "1",
                        "--max-failures", "2", "--name", "onebad", "--trainer-cmd", PLAIN_FAKE)
    assert rc == 0, out
    _, _, children = sweep_runs(stores, "onebad")
    assert children[0].info.status == "FAILED" and children[0].data.tags[tracking.TAG_ATTEMPT] == "1"
    assert children[1].info.status == "FINISHED"
    assert not (load_plan(workdir / "runs", "onebad").run_root / "trial_0000.attempt1").exists()


def test_the_storage_password_is_written_nowhere(ray_local, workdir, capsys, monkeypatch):
    password_sqlite.register()
    storage = password_sqlite.url(workdir / "optuna.db")
    mlflow_uri = f"sqlite:///{workdir}/mlflow.db"
    space = write_space(workdir, name="secret", metric="val_loss",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}})
    args = ["run", "--mlflow-uri", mlflow_uri, "--storage", storage, "--space", str(space), "--trials", "2",
            "--name", "secret", "--trainer-cmd", PLAIN_FAKE]
    monkeypatch.setattr(sys, "argv", ["sweep", *args])  # what the sweep.command tag records
    rc = sweep_main(args)
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    secret = password_sqlite.PASSWORD
    assert secret not in out + err
    assert "process list shows it" in err  # the one place it is: the command line
    # The store needed the password: the sweep's study is there, opened through the password-checking driver.
    assert [t.state for t in optuna.load_study(study_name="secret", storage=storage).trials] == \
        [optuna.trial.TrialState.COMPLETE] * 2
    plan = load_plan(workdir / "runs", "secret")
    assert plan.storage == password_sqlite.url(workdir / "optuna.db", password=None)
    written = [p for p in (workdir / "runs").rglob("*") if p.is_file()]
    assert any(p.suffix == ".pkl" for p in written)  # Tune's pickles are among them
    assert [p for p in written if secret.encode() in p.read_bytes()] == []
    _, parent, children = sweep_runs({"mlflow": mlflow_uri}, "secret")
    assert storage.replace(secret, "***") in parent.data.tags[tracking.TAG_COMMAND]
    for run in [parent, *children.values()]:
        assert not any(secret in v for v in [*run.data.tags.values(), *run.data.params.values()])


def test_a_dead_board_costs_a_trial_nothing(ray_local, capsys):
    import ray

    from sweep.trial.progress import BoardReader, TrialProgress

    reader = BoardReader("deadboard")
    progress = TrialProgress("deadboard", "t1", every_s=0.0)
    progress.apply({"event": "train", "step": 3, "total_steps": 10, "train_loss": 4.5, "step_avg_ms": 10.0})
    progress.tick()
    deadline = time.monotonic() + 20
    while reader.latest().get("t1", {}).get("step") != 3:
        assert time.monotonic() < deadline, "the board never passed the trial's news on"
        time.sleep(0.05)
    ray.kill(reader.board)
    progress.apply({"event": "train", "step": 4, "total_steps": 10, "train_loss": 4.4, "step_avg_ms": 10.0})
    progress.tick()  # fire and forget: no error reaches the trial
    while reader.board is not None:
        assert time.monotonic() < deadline, "the driver never noticed the board was gone"
        reader.latest()
        time.sleep(0.05)
    assert reader.latest()["t1"]["step"] == 3  # the last news it had
    assert capsys.readouterr().err.count("live progress: the progress board is gone") == 1
    # No board at all (a trial of a sweep that has no live view): nothing to send to, nothing fails.
    lone = TrialProgress("no-such-sweep", "t2")
    lone.apply({"event": "val", "step": 5, "val_loss": 4.0})
    lone.tick()


def test_plain_output_shows_each_running_trial(ray_local, stores, workdir, capsys, monkeypatch):
    monkeypatch.delenv(MODE_ENV, raising=False)  # pytest's captured stdout is not a terminal
    monkeypatch.setenv(EVERY_ENV, "1")
    space = write_space(workdir, name="liveplain", metric="val_loss",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}},
                        fixed={"fake.step_s": 0.1, "train.iterations": 40})
    rc, out = run_sweep(capsys, stores, "--space", str(space), "--trials", "2", "--concurrency", "2",
                        "--name", "liveplain", "--trainer-cmd", PLAIN_FAKE)
    assert rc == 0, out
    lines = re.findall(r"^\[\s*\d+:\d\d\]   (trial_000[01])  step (\d+)/40  train_loss (\d+\.\d{4})  "
                       r"val_loss (\S+)  step_avg 100\.0 ms  left \d+:\d\d$", out, re.M)
    assert {label for label, *_ in lines} == {"trial_0000", "trial_0001"}, out
    assert any(int(step) < 40 for _, step, _, _ in lines), out  # seen while running
    assert any(val != "-" for *_, val in lines), out
    assert re.search(r"^\[\s*\d+:\d\d\] 2 trials: 2 running, .* \| time left ~\d+:\d\d$", out, re.M), out
    # The end is as before: the last summary line, then the leaderboard.
    assert re.search(r"^\[\s*\d+:\d\d\] 2 trials: 0 running, 2 done, 0 pruned, 0 failed, 0 pending \| best "
                     r"val_loss \S+ \(trial_000\d\)\n\nrank", out, re.M), out
