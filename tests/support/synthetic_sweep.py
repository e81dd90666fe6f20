"""Synthetic sweeps of the fp8_scales space in real stores, without Ray or training: a saved plan, the sqlite
MLflow and Optuna stores written through their public APIs as the driver writes them (the parent run, one
child run per trial with its loss curve, FP8 range figures and final metrics, the MLflow UI's view of the
trials), and the study with the same values."""
from __future__ import annotations

import math
import random
from pathlib import Path

import optuna
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from paths import REPO

from sweep.inputs.plan import SweepPlan, load_plan
from sweep.stores import child_run, tracking

SPACE = REPO / "search_spaces" / "fp8_scales.yaml"
STEPS = range(0, 7001, 500)
MS_PER_STEP = 83.3     # golf-shaped: 7000 steps in about the 600 s of a parameter-golf record


def save_plan(folder: Path, name: str) -> SweepPlan:
    plan = SweepPlan(
        name=name, experiment="fp8_scales", space_file=str(SPACE), space_text=SPACE.read_text(), preset="golf",
        trials=50, concurrency=8, gpus_per_trial=8, nproc_per_trial=8, cpus_per_trial=8, scheduler="fifo",
        sampler="tpe", max_failures=1, mlflow_uri=f"sqlite:///{folder / 'mlflow.db'}",
        storage=f"sqlite:///{folder / 'optuna.db'}", results_dir=str(folder / "runs"), cwd=str(folder))
    plan.save()
    return plan


def make_sweep(folder: Path, name: str, trials: int) -> SweepPlan:
    """A finished sweep of the fp8_scales space: the parent run, one child run per trial with its loss curve,
    FP8 range figures and final metrics, and the Optuna study with the same values."""
    plan = save_plan(folder, name)
    space = plan.space()
    client = MlflowClient(plan.mlflow_uri)
    experiment_id = tracking.ensure_experiment(client, plan.mlflow_uri, plan.experiment)
    tracking.ensure_trials_view(client, experiment_id, name, list(space.params), space.mode)
    parent = client.create_run(experiment_id, run_name=name, tags={
        tracking.TAG_ROLE: "sweep", tracking.TAG_SWEEP: name, tracking.TAG_SPACE: plan.space_text,
        tracking.TAG_SPACE_FILE: plan.space_file, tracking.TAG_PRESET: plan.preset,
        tracking.TAG_METRIC: space.metric, tracking.TAG_MODE: space.mode})
    plan.parent_run_id = parent.info.run_id
    plan.save()

    study = optuna.create_study(study_name=name, storage=plan.storage, direction="minimize")
    rng = random.Random(0)
    distributions = space.distributions()
    for number in range(trials):
        params = {k: math.exp(rng.uniform(math.log(d.low), math.log(d.high))) for k, d in distributions.items()}
        # The loss floor rises as x_s leaves PR #175's value: fANOVA has a parameter to find.
        floor = 2.05 + 0.05 * abs(math.log(params["fp8.x_s"] / 0.22)) + 0.01 * rng.random()
        curve = {step: floor + 4.9 * math.exp(-step / 800) for step in STEPS}
        final = curve[STEPS[-1]]
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=final))
        run = client.create_run(experiment_id, run_name=f"trial_{number:04d}", tags={
            **child_run.identity_tags(plan.parent_run_id, number, name), tracking.TAG_STATUS: "ok"})
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param(k, repr(v)) for k, v in params.items()])
        metrics = [Metric(key, value, 0, step) for step, loss in curve.items()
                   for key, value in (("val_loss", loss), ("val_bpb", loss / 1.69),
                                      ("train_time_ms", step * MS_PER_STEP))]
        last = STEPS[-1]
        metrics += [Metric(f"fp8.{kind}_{what}", rng.random() * 1e-3, 0, last)
                    for kind in ("x", "w", "g") for what in ("flushed", "saturated")]
        metrics += [Metric(k, v, 0, last) for k, v in params.items()]
        metrics += [Metric(k, v, 0, last) for k, v in {
            "final_val_loss": final, "final_val_bpb": final / 1.69, "wallclock_s": last * MS_PER_STEP / 1000,
            "gpu_hours": 8 * last * MS_PER_STEP / 3.6e6, tracking.OBJECTIVE_METRIC: final}.items()]
        client.log_batch(run_id, metrics=metrics)
        client.set_terminated(run_id, "FINISHED")
    client.set_terminated(plan.parent_run_id, "FINISHED")
    return load_plan(plan.results_dir, name)
