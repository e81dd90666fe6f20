"""Winners you can trust: a sweep's confirmation over paired seeds (`--confirm`), the noise floor of the
leaderboard, `--stop-at` and `--budget-gpu-hours`; on a real local Ray instance with real sqlite MLflow and
Optuna stores, the tiny preset of the real trainer where the seeds must matter, the stand-in trainer
elsewhere.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import optuna
import pytest
import scipy.stats
from paths import REPO, SPACES
from sweeping import (
    PLAIN_FAKE,
    confirm_runs,
    processes_with,
    run_sweep,
    study,
    sweep_run_in,
    sweep_runs,
    wait_for,
    write_space,
)

from sweep.cli import main as sweep_main
from sweep.commands.list_sweeps import sweeps
from sweep.inputs.plan import FIXED, PLAN_FILE, load_plan
from sweep.orchestration import confirm
from sweep.orchestration.confirm import TAG_WINNER
from sweep.report import stats
from sweep.stores import tracking

pytestmark = pytest.mark.slow  # starts Ray or torchrun processes

SHORT = ["train.iterations=4", "train.val_every=2", "train.warmdown_iters=2", "train.log_every=1",
         "train.batch_tokens=2048", "train.micro_batches=1", "train.val_tokens=4096", "train.val_batch_tokens=4096"]
PR175_X_S = 100 / 448




@pytest.mark.slow
def test_confirm_reruns_the_top_configurations_on_paired_seeds(ray_local, stores, workdir, capsys):
    # Trial 1 differs from the baseline only in whether it saves its weights: the same training, seed by seed.
    space = write_space(workdir, name="confirmtiny", metric="val_loss",
                        params={"fp8.x_s": {"type": "float", "low": 0.02, "high": 2.0, "log": True},
                                "train.save_model": {"type": "categorical", "choices": [True, False]}},
                        fixed={"fp8.enabled": True},
                        points_to_evaluate=[{"fp8.x_s": PR175_X_S, "train.save_model": True},
                                            {"fp8.x_s": PR175_X_S, "train.save_model": False},
                                            {"fp8.x_s": 0.5, "train.save_model": True}])
    rc, out = run_sweep(capsys, stores, "--space", str(space), "--trials", "3", "--concurrency", "2",
                        "--name", "confirmtiny", "--confirm", "2", "--confirm-seeds", "3", "--confirm-fixed",
                        *[a for s in SHORT for a in ("--set", s)])
    assert rc == 0, out
    client, parent, search = sweep_runs(stores, "confirmtiny")
    assert sorted(search) == [0, 1, 2]              # the confirmation's runs are not search trials
    assert [r for r in sweeps(stores["mlflow"]) if r["sweep"] == "confirmtiny"][0]["trials"] == 3
    plan = load_plan(workdir / "runs", "confirmtiny")
    assert plan.confirm_trials[0] == 0 and sorted(plan.confirm_trials[1:]) == [1, 2]

    confirmation, runs = confirm_runs(client, parent)
    assert confirmation.info.status == "FINISHED"
    assert sorted(runs) == list(range(9))           # 3 configurations x 3 seeds, nothing more
    losses = {}
    for number, run in sorted(runs.items()):
        config, seed = plan.confirm_trials[number // 3], number % 3 + 1
        assert run.info.status == "FINISHED"
        assert run.data.params["seed"] == str(seed)  # the seed each run got, as MLflow recorded it
        assert float(run.data.params["fp8.x_s"]) == float(search[config].data.params["fp8.x_s"])
        assert run.data.params["train.save_model"] == search[config].data.params["train.save_model"]
        assert run.data.params["train.iterations"] == "4"
        losses.setdefault(config, []).append(run.data.metrics["final_val_loss"])
    assert len(set(losses[0])) == 3                 # the seeds reach the trainer

    metrics = parent.data.metrics
    base = losses[0]
    for trial in (1, 2):
        p = metrics[f"confirm.trial_{trial}.p_value"]
        expected = scipy.stats.ttest_rel(losses[trial], base, alternative="less").pvalue
        if losses[trial] == base:
            assert expected != expected and p == 1.0   # scipy: NaN for zero differences; never a winner
        else:
            assert p == pytest.approx(expected, rel=1e-9)
        assert metrics[f"confirm.trial_{trial}.mean"] == pytest.approx(sum(losses[trial]) / 3, rel=1e-12)
        assert metrics[f"confirm.trial_{trial}.std"] == pytest.approx(scipy.stats.tstd(losses[trial]), rel=1e-9)
        low, high = scipy.stats.t.interval(0.95, 2, loc=sum(losses[trial]) / 3,
                                           scale=scipy.stats.sem(losses[trial]))
        assert (metrics[f"confirm.trial_{trial}.ci_low"], metrics[f"confirm.trial_{trial}.ci_high"]) == \
            (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    assert losses[1] == base                        # the same training gives the same losses on CPU
    winner = parent.data.tags[TAG_WINNER]
    assert winner != "1"
    assert winner == ("2" if metrics["confirm.trial_2.p_value"] < 0.01 else "none")

    report = client.download_artifacts(parent.info.run_id, "confirm.md", str(workdir))
    text = open(report).read()
    assert text.strip() in out
    assert "not significant" in text.split("| trial 1 |")[1].splitlines()[0]
    pooled = metrics["confirm.pooled_std"]
    assert pooled == pytest.approx(stats.pooled_std(losses.values()), rel=1e-9)
    assert f"(2 x std = {2 * pooled:.4g}, std {pooled:.4g} pooled over the confirmation's seeds)" in out
    assert metrics["cpu_hours"] == pytest.approx(metrics["cpu_hours_search"] + metrics["cpu_hours_confirm"])
    assert f"CPU-hours spent: {metrics['cpu_hours']:.4g}" in out


def kill_mid_confirmation(workdir, stores, space, name: str, marker: str, flags: list[str], at) -> dict[int, str]:
    """Start `sweep run` of `space` in a driver process, SIGKILL it once the states of its confirmation's runs
    satisfy `at`, wait for its trainers (their command lines hold `marker`) to exit; returns the finished
    confirmation runs' ids by trial number."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweep", "run", "--space", str(space), "--trials", "2", "--concurrency", "1",
         "--name", name, "--trainer-cmd", PLAIN_FAKE, "--mlflow-uri", stores["mlflow"],
         "--storage", stores["optuna"], *flags],
        cwd=workdir, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = tracking.client(stores["mlflow"])

    def confirmation_runs() -> list:
        path = workdir / "runs" / name / PLAN_FILE
        plan = json.loads(path.read_text()) if path.is_file() else {}
        if not plan.get("confirm_run_id"):
            return []
        exp = client.get_run(plan["confirm_run_id"]).info.experiment_id
        return tracking.child_runs(client, exp, plan["confirm_run_id"])

    try:
        wait_for(lambda: at([r.info.status for r in confirmation_runs()]), 180, f"{name}'s confirmation to get there")
    finally:
        driver.kill()
        driver.wait()
    wait_for(lambda: not processes_with(marker), 30, "the killed sweep's trainers to exit")
    return {int(r.data.tags[tracking.TAG_TRIAL_NUMBER]): r.info.run_id
            for r in confirmation_runs() if r.info.status == "FINISHED"}


@pytest.mark.slow
def test_resume_in_the_middle_of_the_confirmation(ray_local, stores, workdir, capsys):
    marker = f"confirmresume-{uuid.uuid4().hex[:8]}"
    space = write_space(workdir, name="confres", metric="val_loss",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}},
                        fixed={"fake.tag": marker, "fake.step_s": 0.04},
                        points_to_evaluate=[{"fake.quality": 0.5}, {"fake.quality": 0.2}],
                        confirm={"top": 1, "seeds": 3})
    client = tracking.client(stores["mlflow"])
    # Killed once two confirmation runs have finished and a third is running.
    before = kill_mid_confirmation(workdir, stores, space, "confres", marker, ["--confirm-fixed"],
                                   lambda states: states.count("FINISHED") >= 2 and "RUNNING" in states)
    assert load_plan(workdir / "runs", "confres").stage == "confirm"

    assert sweep_main(["resume", "confres"]) == 0
    out = capsys.readouterr().out
    _, parent, search = sweep_runs(stores, "confres")
    assert sorted(search) == [0, 1] and parent.info.status == "FINISHED"
    assert len(study(stores, "confres").trials) == 2             # the search did not run again
    confirmation, runs = confirm_runs(client, parent)
    assert sorted(runs) == list(range(6)) and confirmation.info.status == "FINISHED"
    for number, run in runs.items():
        assert run.info.status == "FINISHED" and run.data.params["seed"] == str(number % 3 + 1)
        assert run.data.params["fake.quality"] == str([0.5, 0.2][number // 3])
    for number, run_id in before.items():                       # reused, not trained again
        assert runs[number].info.run_id == run_id and runs[number].data.tags[tracking.TAG_ATTEMPT] == "1"
    assert any(r.data.tags[tracking.TAG_ATTEMPT] == "2" for r in runs.values())  # the one cut off ran again
    assert (workdir / "runs" / "confres-confirm").is_dir()
    assert "Confirmed leaderboard of sweep confres: 2 configurations x 3 seeds" in out
    assert processes_with(marker) == []


@pytest.mark.slow
def test_stop_at_stops_launching_and_lets_running_trials_finish(ray_local, stores, workdir, capsys):
    # Trial 0 is slow and poor; trial 1 reaches the target while trial 0 still runs.
    space = write_space(workdir, name="stopat", metric="val_loss",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0},
                                "fake.step_s": {"type": "categorical", "choices": [0.01, 0.1]}},
                        points_to_evaluate=[{"fake.quality": 0.6, "fake.step_s": 0.1},
                                            {"fake.quality": 0.0, "fake.step_s": 0.01},
                                            {"fake.quality": 0.0, "fake.step_s": 0.01}])
    rc, out = run_sweep(capsys, stores, "--space", str(space), "--trials", "6", "--concurrency", "2",
                        "--name", "stopat", "--trainer-cmd", PLAIN_FAKE, "--stop-at", "2.3")
    assert rc == 0, out
    _, parent, children = sweep_runs(stores, "stopat")
    assert sorted(children) == [0, 1]
    assert [t.state for t in study(stores, "stopat").trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(r.info.status == "FINISHED" and r.data.tags[tracking.TAG_STATUS] == "ok" for r in children.values())
    assert children[0].data.metrics["objective"] > 2.3 >= children[1].data.metrics["objective"]
    assert "stopped launching trials: trial 1 reached val_loss 2.20845 (--stop-at 2.3)" in out
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
def test_budget_stops_launching_before_the_budget_is_spent(ray_local, stores, workdir, capsys):
    space = write_space(workdir, name="budget", metric="val_loss",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}},
                        fixed={"fake.step_s": 0.02})
    budget = 6.0 / 3600   # about 5 trials of about a second each, on 1 CPU
    rc, out = run_sweep(capsys, stores, "--space", str(space), "--trials", "12", "--concurrency", "1",
                        "--name", "budget", "--trainer-cmd", PLAIN_FAKE, "--budget-gpu-hours", str(budget))
    assert rc == 0, out
    _, parent, children = sweep_runs(stores, "budget")
    costs = [children[n].data.metrics[tracking.WALLCLOCK_METRIC] / 3600 for n in sorted(children)]
    assert 2 <= len(costs) < 12
    # One trial at a time: trial k started when trials 0..k-1 had ended, and only if their hours plus their
    # mean (the new trial's expected cost) fit in the budget; the trial after the last did not fit.
    for k in range(1, len(costs)):
        assert sum(costs[:k]) + sum(costs[:k]) / k <= budget
    assert sum(costs) + sum(costs) / len(costs) > budget
    assert parent.data.metrics["cpu_hours"] == pytest.approx(sum(costs), rel=1e-9)
    assert f"CPU-hours spent: {sum(costs):.4g} (search {sum(costs):.4g} of a budget of {budget:g})" in out
    assert "stopped launching trials: the next trial would take the sweep to" in out


@pytest.mark.parametrize("args, message", [
    (["--confirm", "0"], "--confirm: must be at least 1"),
    (["--confirm", "2", "--confirm-seeds", "1"], "--confirm-seeds: must be at least 2"),
    (["--stop-at", "nan"], "--stop-at: must be a finite value of val_loss"),
    (["--budget-gpu-hours", "0"], "--budget-gpu-hours: must be a number above 0"),
    (["--noise-std", "-1"], "--noise-std: must be a number above 0"),
    (["--confirm", "2", "--confirm-fixed", "--set", "seed=3"], "--confirm: the confirmation runs seeds 1..3 through seed"),
    (["--confirm", "2"], "--min-effect: the sequential confirmation stops a configuration once an improvement of "
                         "--min-effect is implausible, and the tiny preset has no record rule"),
    (["--min-effect", "0.01"], "--min-effect: only a confirmation uses it: add --confirm K"),
    (["--confirm", "2", "--confirm-fixed", "--min-effect", "0.01"], "--min-effect: the fixed design"),
    (["--confirm", "2", "--min-effect", "0.01", "--confirm-power", "0.005"], "--confirm-power: must be above"),
])
def test_bad_confirmation_and_stopping_flags_exit_2_before_anything(tmp_path, args, message):
    done = sweep_run_in(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert done.stdout.strip() == "ray never imported"
    assert list(tmp_path.iterdir()) == []


def test_a_confirm_block_with_an_unknown_key_names_the_file_and_key(tmp_path):
    write_space(tmp_path, name="badconfirm", metric="val_loss",
                params={"fp8.x_s": {"type": "float", "low": 0.02, "high": 2.0}}, confirm={"top": 2, "runs": 3})
    done = sweep_run_in(tmp_path, "--space", "badconfirm.yaml")
    assert done.returncode == 2
    assert "badconfirm.yaml: confirm.runs: unknown field (known: top, seeds, min_effect, fixed)" in done.stderr


def test_paired_statistics_follow_scipy_and_never_crown_an_identical_configuration():
    base, better = [4.031, 4.029, 4.034], [4.028, 4.027, 4.030]
    assert stats.paired_test(better, base) == pytest.approx(
        scipy.stats.ttest_rel(better, base, alternative="less").pvalue, rel=1e-12)
    assert stats.paired_test(better, base, mode="max") == pytest.approx(
        scipy.stats.ttest_rel(better, base, alternative="greater").pvalue, rel=1e-12)
    assert stats.paired_test(base, base) == 1.0 and stats.paired_test(base, base, mode="max") == 1.0
    assert stats.paired_test([x - 0.001 for x in base], base) in (0.0, pytest.approx(0.0, abs=1e-6))
    std = 0.0015
    t = scipy.stats.t
    assert stats.detectable_difference(std, 3) == pytest.approx(
        (t.ppf(0.99, 2) + t.ppf(0.8, 2)) * 2 ** 0.5 * std / 3 ** 0.5, rel=1e-12)
    assert stats.pooled_std([[1.0, 3.0], [2.0, 2.0, 2.0]]) == pytest.approx((2.0 / 3) ** 0.5)


def test_a_plan_written_before_the_confirmation_fields_still_loads(tmp_path):
    space_text = (SPACES / "fp8_scales.yaml").read_text()
    old = {"name": "old", "experiment": "old", "space_file": "s.yaml", "space_text": space_text, "preset": "tiny",
           "trials": 2, "concurrency": 0, "gpus_per_trial": 0, "nproc_per_trial": 1, "cpus_per_trial": 1,
           "scheduler": "fifo", "sampler": "tpe", "max_failures": 1, "mlflow_uri": "sqlite:///m.db",
           "storage": "sqlite:///o.db", "results_dir": str(tmp_path), "cwd": str(tmp_path)}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / PLAN_FILE).write_text(json.dumps(old))
    plan = load_plan(tmp_path, "old")
    assert (plan.confirm, plan.stage, plan.stop_at, plan.budget_gpu_hours, plan.confirm_trials) == (0, "search", None,
                                                                                                    None, [])
    # A confirmation begun before the sequential design existed goes on as it began: every seed at once.
    old.update(confirm=2, confirm_seeds=3, stage="confirm", confirm_trials=[0, 4, 2], confirm_run_id="r")
    (tmp_path / "old" / PLAN_FILE).write_text(json.dumps(old))
    plan = load_plan(tmp_path, "old")
    assert (plan.confirm_design, plan.confirm_seeds) == (FIXED, 3)
    assert confirm.round_count(plan) == 1 and confirm.round_seeds(plan, 1) == [1, 2, 3]


def lr_point(lr: float, save_model: bool = True) -> dict:
    return {"optim.tied_embed_lr": lr, "optim.matrix_lr": 0.8 * lr, "train.save_model": save_model}


@pytest.mark.slow
def test_the_sequential_design_stops_a_bad_configuration_early_and_spends_fewer_runs(ray_local, stores, workdir,
                                                                                     capsys):
    # Trial 1's learning rates are 100x too small: after 4 steps its loss is about 2 nats above the baseline's
    # on every seed. Trial 2 trains exactly like the baseline (it only skips saving its weights).
    space = write_space(workdir, name="seqlr", metric="val_loss",
                        params={"optim.tied_embed_lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
                                "optim.matrix_lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
                                "train.save_model": {"type": "categorical", "choices": [True, False]}},
                        points_to_evaluate=[lr_point(0.05), lr_point(0.0005), lr_point(0.05, save_model=False)])
    common = ["--space", str(space), "--trials", "3", "--concurrency", "2", "--confirm", "2", "--confirm-seeds", "3",
              *[a for s in SHORT for a in ("--set", s)]]
    rc, out = run_sweep(capsys, stores, *common, "--name", "seqlr", "--min-effect", "0.01")
    assert rc == 0, out
    rc, fixed_out = run_sweep(capsys, stores, *common, "--name", "fixedlr", "--confirm-fixed")
    assert rc == 0, fixed_out

    client, parent, _ = sweep_runs(stores, "seqlr")
    plan = load_plan(workdir / "runs", "seqlr")
    assert (plan.confirm_design, plan.confirm_trials[0], sorted(plan.confirm_trials[1:])) == ("sequential", 0, [1, 2])
    _, runs = confirm_runs(client, parent)
    seeds = {}
    for number, run in runs.items():
        assert run.info.status == "FINISHED"
        seeds.setdefault(number // 3, set()).add(int(run.data.params["seed"]))
    assert seeds == {0: {1, 2}, 1: {1, 2}, 2: {1, 2}}      # one round: seeds 1 and 2, and all was decided
    assert parent.data.metrics["confirm.trial_1.stop_round"] == 1
    assert parent.data.tags[TAG_WINNER] == "none"
    row = next(line for line in out.splitlines() if line.startswith("| trial 1 |"))
    assert row.startswith("| trial 1 | 2 |") and row.endswith("| round 1 | not better (futility) |")
    assert "Seeds spent: 6 runs (baseline (trial 0) 2, " in out

    fixed_client, fixed_parent, _ = sweep_runs(stores, "fixedlr")
    _, fixed_runs = confirm_runs(fixed_client, fixed_parent)
    assert sorted(fixed_runs) == list(range(9))
    assert len(runs) < len(fixed_runs)
    assert parent.data.metrics["confirm.runs"] == len(runs)


@pytest.mark.slow
def test_resume_in_the_middle_of_a_round_continues_it_without_repeating_a_seed(ray_local, stores, workdir, capsys):
    from fake_trainer import val_loss

    from sweep.report.sequential import Design, Rounds, Sample

    # Seeds move the stand-in's loss by 0.01 (std); trial 1 is better by 0.02, which takes all 4 rounds of
    # at most 5 seeds to show: the same stand-in values replayed here give the rounds the sweep must go through.
    marker = f"seqresume-{uuid.uuid4().hex[:8]}"
    fixed = {"fake.tag": marker, "fake.step_s": 0.04, "fake.seed_noise": 0.01}
    qualities = [0.5, 0.48]
    expected = Rounds(Design(5, 0.005))
    for number in range(1, 5):
        loss = [[val_loss({**fixed, "fake.quality": q, "seed": s}, 40) for s in range(1, number + 2)] for q in qualities]
        expected.add({0: Sample(tuple(b - c for b, c in zip(*loss)))}, last=number == 4)
    assert (expected.courses[0].verdict, expected.courses[0].stopped) == ("better", 4)

    space = write_space(workdir, name="seqres", metric="val_loss",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}}, fixed=fixed,
                        points_to_evaluate=[{"fake.quality": q} for q in qualities],
                        confirm={"top": 1, "seeds": 5, "min_effect": 0.005})
    client = tracking.client(stores["mlflow"])
    # Round 1 ran seeds 1 and 2 of both configurations; killed in round 2, which runs seed 3 of both.
    before = kill_mid_confirmation(workdir, stores, space, "seqres", marker, [],
                                   lambda states: states.count("FINISHED") == 5 and "RUNNING" in states)
    assert len(before) == 5 and (workdir / "runs" / "seqres-confirm" / "round-2").is_dir()

    assert sweep_main(["resume", "seqres"]) == 0
    out = capsys.readouterr().out
    assert "round 1 of at most 4" not in out                     # round 1 is replayed from its runs
    assert "round 2 of at most 4: seed 3 of trials 0, 1: 2 runs" in out
    _, parent, _ = sweep_runs(stores, "seqres")
    confirmation, runs = confirm_runs(client, parent)            # fails on two runs of one seed
    assert sorted(runs) == list(range(10)) and confirmation.info.status == "FINISHED"
    for number, run in runs.items():
        assert run.info.status == "FINISHED" and run.data.params["seed"] == str(number % 5 + 1)
    for number, run_id in before.items():                       # reused, not trained again
        assert runs[number].info.run_id == run_id and runs[number].data.tags[tracking.TAG_ATTEMPT] == "1"
    assert sum(r.data.tags[tracking.TAG_ATTEMPT] == "2" for r in runs.values()) == 1  # the one cut off
    assert parent.data.tags[TAG_WINNER] == "1" and parent.data.metrics["confirm.trial_1.stop_round"] == 4
    assert parent.data.metrics["confirm.trial_1.p_adjusted"] == pytest.approx(expected.adjusted_p()[0], rel=1e-6)
    assert processes_with(marker) == []
