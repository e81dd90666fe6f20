"""Running a sweep: MLflow parent run, Ray, the Tune experiment, and the summary at the end.

Tune keeps the experiment state under `<results-dir>/<name>/` (so `Tuner.restore` can continue it), Optuna
keeps the study in its storage under the sweep's name, MLflow keeps one parent run per sweep and the trials'
child runs. `run_sweep` is used both for a new sweep and to resume one.
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import sys

import mlflow
import optuna
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from sweep import credentials, tracking
from sweep import results_dir as results
from sweep.errors import InputError
from sweep.interrupt import EXIT_INTERRUPTED, Interrupts
from sweep.live import LiveView
from sweep.plan import DEFAULT_RESULTS_DIR, SweepPlan, plan_path
from sweep.process import package_pythonpath
from sweep.rejection import StopOnRejectedInput, shared_rejection
from sweep.report import best, best_line, leaderboard, result_state, rows_from_results
from sweep.search import StudySearcher
from sweep.space import SearchSpace
from sweep.study import create_study, load_study
from sweep.trial import TRIAL_NUMBER_KEY, TrialSettings, run_trial
from trainer.protocol import EXIT_BAD_INPUT
from trainer.source import git_sha

# Tune snapshots its state at most this often; a short period keeps what a killed driver loses small.
CHECKPOINT_PERIOD_S = "2"
ASHA_REDUCTION = 2
# ASHA's rungs sit at 1, 2, 4, ... reports whatever max_t is; max_t only stops a trial that reaches it, so
# it is set beyond any trial's number of validations rather than guessed from a config.
ASHA_MAX_REPORTS = 10**6


def quiet_environment() -> None:
    """Ray, MLflow and Optuna report through the live view and the summary, not their own logs."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # mlflow sets its loggers up when imported (above), so this has to come after the import.
    for name in (mlflow.__name__, "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", CHECKPOINT_PERIOD_S)
    # Tune's newer console output prints its configuration box even at verbose=0; the classic one is silent.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def start_ray(address: str = "") -> bool:
    """Connect to the cluster at `address`, or start a local instance (on 127.0.0.1: sweep.local_ray);
    returns whether this call started Ray. The trials' workers get the MLflow password, if there is one,
    in their environment (sweep.credentials).

    `ray.init` installs a SIGTERM handler of its own that exits with status 15; the caller's handler is put
    back afterwards, and a SIGTERM during `ray.init` is an interrupt like any other (README, "Signals")."""
    if ray.is_initialized():
        return False
    common = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    secrets = credentials.worker_env()
    handler = signal.getsignal(signal.SIGTERM)
    try:
        if address:
            ray.init(address=address, **({"runtime_env": {"env_vars": secrets}} if secrets else {}), **common)
        else:
            ray.init(address="local", runtime_env={"env_vars": {"PYTHONPATH": package_pythonpath(), **secrets}},
                     dashboard_host="127.0.0.1", **common)
    except ConnectionError as e:
        raise InputError("--address", f"cannot connect to the Ray cluster at {address}: {e}") from None
    except SystemExit as e:
        if e.code != signal.SIGTERM:
            raise
        raise KeyboardInterrupt(signal.SIGTERM.name) from None
    finally:
        signal.signal(signal.SIGTERM, handler)
    return True


def trials_that_fit(trials: int, gpus_per_trial: int, cpus_per_trial: int) -> int:
    """How many of `trials` the cluster's CPUs (GPUs for GPU trials) hold at once right now (at least 1)."""
    resources = ray.cluster_resources()
    if gpus_per_trial:
        fits = int(resources.get("GPU", 0)) // gpus_per_trial
    else:
        fits = int(resources.get("CPU", 1)) // cpus_per_trial
    return max(1, min(trials, fits))


def resolve_concurrency(plan: SweepPlan) -> int:
    """`--concurrency`, or as many trials as the cluster holds right now."""
    if plan.concurrency > 0:
        return plan.concurrency
    return trials_that_fit(plan.trials, plan.gpus_per_trial, plan.cpus_per_trial)


def open_parent_run(plan: SweepPlan, space: SearchSpace, mlflow_client, experiment_id: str, command: str) -> str:
    run = mlflow_client.create_run(experiment_id, run_name=plan.name, tags={
        tracking.TAG_ROLE: "sweep", tracking.TAG_SWEEP: plan.name,
        tracking.TAG_SPACE: tracking.clip(plan.space_text), tracking.TAG_SPACE_FILE: plan.space_file,
        tracking.TAG_GIT_SHA: git_sha() or "unknown", tracking.TAG_RAY_ADDRESS: plan.address or "local",
        tracking.TAG_PRESET: plan.preset, tracking.TAG_METRIC: space.metric, tracking.TAG_MODE: space.mode,
        tracking.TAG_COMMAND: tracking.clip(command)})
    return run.info.run_id


def trial_trainable(settings: TrialSettings):
    """`run_trial` bound to `settings`, on one placement-group bundle holding the trial's whole node."""
    bundle = {"CPU": settings.cpus}
    if settings.gpus:
        bundle["GPU"] = settings.gpus
    return tune.with_resources(tune.with_parameters(run_trial, settings=settings),
                               tune.PlacementGroupFactory([bundle]))


def _new_tuner(plan: SweepPlan, space: SearchSpace, trainable, concurrency: int, stop: StopOnRejectedInput):
    searcher = StudySearcher(space, study_name=plan.name, storage_url=plan.storage, sampler=plan.sampler,
                             seed=plan.seed)
    scheduler = (ASHAScheduler(time_attr="training_iteration", metric="val_loss", mode="min",
                               max_t=ASHA_MAX_REPORTS, grace_period=1, reduction_factor=ASHA_REDUCTION)
                 if plan.scheduler == "asha" else FIFOScheduler())
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=plan.trials,
                                    max_concurrent_trials=concurrency, reuse_actors=True),
        run_config=tune.RunConfig(
            name=plan.name, storage_path=plan.results_dir, verbose=0, stop=stop,
            failure_config=tune.FailureConfig(max_failures=plan.max_failures),
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
            callbacks=[LiveView(space.metric, space.mode, plan.trials), stop]))


def _reconcile(results, plan: SweepPlan, space: SearchSpace, pruned: set[int], mlflow_client,
               experiment_id: str) -> None:
    """Make each trial's child run say how the trial ended, also when the trial could not (it was
    stopped by the scheduler, or its worker died): every trial ends with exactly one terminated run."""
    for result in results:
        number = (result.config or {}).get(TRIAL_NUMBER_KEY)
        status = result_state(result, pruned)
        if number is None or status not in ("failed", "pruned", "stopped"):
            continue
        runs = tracking.child_runs(mlflow_client, experiment_id, plan.parent_run_id, int(number))
        if not runs:
            run = mlflow_client.create_run(experiment_id, run_name=f"trial_{number:04d}", tags={
                tracking.PARENT_RUN_TAG: plan.parent_run_id, tracking.TAG_ROLE: "trial",
                tracking.TAG_TRIAL_NUMBER: str(number), tracking.TAG_SWEEP: plan.name})
            tracking.log_params(mlflow_client, run.info.run_id, {
                k: space.trainer.text(v) for k, v in {**space.fixed, **result.config}.items() if k != TRIAL_NUMBER_KEY})
            runs = [run]
        for run in runs:
            tracking.end_run(mlflow_client, run, status, "FAILED" if status == "failed" else "KILLED",
                             error=None if result.error is None else str(result.error))


def claim_name(plan: SweepPlan, space: SearchSpace, name_given: bool) -> None:
    """Create the sweep's Optuna study, the one atomic step that makes a name this sweep's: another sweep
    started at the same moment may have picked the same default name, which then moves on to the next
    free one; a `--name` taken since `sweep run` checked it is refused."""
    base = plan.name
    for k in itertools.count(2):
        if name_given or not results.exists(plan_path(plan.results_dir, plan.name)):
            try:
                create_study(plan.storage, plan.name, space.mode)
                return
            except optuna.exceptions.DuplicatedStudyError:
                if name_given:
                    raise InputError("--name", f"a sweep named {plan.name!r} was started meanwhile; "
                                               f"pick another --name") from None
        plan.name = f"{base}-{k}"


def open_records(plan: SweepPlan, space: SearchSpace, mlflow_client, resume: bool, command: str,
                 name_given: bool) -> str:
    """Write what the sweep needs before its trials start: the study (the claim on the name), `sweep.json`,
    the MLflow experiment and parent run, then `sweep.json` again with the run's id. A driver killed between
    two of these leaves what `sweep resume` needs to do the rest. Returns the experiment id."""
    if not resume:
        claim_name(plan, space, name_given)
        plan.save()
    experiment_id = tracking.ensure_experiment(mlflow_client, plan.mlflow_uri, plan.experiment)
    if plan.parent_run_id:
        mlflow_client.update_run(plan.parent_run_id, status="RUNNING")
    else:
        plan.parent_run_id = open_parent_run(plan, space, mlflow_client, experiment_id, command)
        plan.save()
    return experiment_id


def resume_command(plan: SweepPlan) -> str:
    default = results.normalize(DEFAULT_RESULTS_DIR)
    return f"sweep resume {plan.name}" + ("" if plan.results_dir == default else f" --results-dir {plan.results_dir}")


def run_sweep(plan: SweepPlan, resume: bool = False, command: str = "", name_given: bool = True) -> int:
    """Run (or resume) the sweep, printing the live view and the summary on stdout; returns the exit
    code: 0 when every trial ended, 1 if the sweep was interrupted (SIGINT, SIGTERM: sweep.interrupt),
    2 if it stopped because the trainer rejects input every trial gets (sweep.rejection)."""
    quiet_environment()
    space = plan.space()
    interrupts = Interrupts()
    interrupts.install()
    experiment_id = None
    started = False
    try:
        # Ray first: a cluster that cannot be reached is found before anything is written.
        started = start_ray(plan.address)
        with interrupts.deferred():  # a first open of a sqlite store migrates it: never stopped half-way
            mlflow_client = tracking.client(plan.mlflow_uri)
            experiment_id = open_records(plan, space, mlflow_client, resume, command, name_given)
        code = _run_trials(plan, space, mlflow_client, experiment_id, resume, interrupts)
    except KeyboardInterrupt:
        if experiment_id is None and not resume:
            print("sweep run: interrupted before the sweep started; nothing was written", file=sys.stderr)
            return EXIT_INTERRUPTED
        code = EXIT_INTERRUPTED
    finally:
        if started:
            with interrupts.deferred():
                ray.shutdown()
    if code == EXIT_INTERRUPTED:
        print(f"interrupted: continue with `{resume_command(plan)}`", flush=True)
    return code


def _run_trials(plan: SweepPlan, space: SearchSpace, mlflow_client, experiment_id: str, resume: bool,
                interrupts: Interrupts) -> int:
    keys_as = "environment variables" if space.trainer.env_mode else "arguments"
    runs = f"`{plan.trainer_cmd}` with the keys as {keys_as}" if plan.trainer_cmd else f"preset {plan.preset}"
    print(f"sweep {plan.name}: {plan.trials} trials of {plan.space_file} ({space.metric}, {space.mode}), "
          f"{runs}, {plan.scheduler} scheduler, {plan.sampler} sampler", flush=True)
    settings = TrialSettings(
        sweep=plan.name, preset=plan.preset, objective=space.objective, run_root=str(plan.run_root.resolve()),
        cwd=plan.cwd, mlflow_uri=plan.mlflow_uri, experiment_id=experiment_id,
        parent_run_id=plan.parent_run_id, fixed=dict(space.fixed), nproc=plan.nproc_per_trial,
        gpus=plan.gpus_per_trial, cpus=plan.cpus_per_trial, trainer=space.trainer, seed=plan.seed or 0)
    shared_input = {**space.trainer.env, **space.fixed}
    outcome = "KILLED"
    try:
        trainable = trial_trainable(settings)
        experiment = plan.tune_path
        if resume and tune.Tuner.can_restore(experiment):
            tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=False,
                                       restart_errored=False)
        else:
            # Also a resume whose driver died before Tune saved anything: the searcher then adopts the
            # study's trials, and enqueues only the points the study has not taken yet.
            stop = StopOnRejectedInput(plan.mlflow_uri, experiment_id, plan.parent_run_id, shared_input,
                                       list(space.params))
            tuner = _new_tuner(plan, space, trainable, resolve_concurrency(plan), stop)
        with interrupts.tune():
            results = tuner.fit()
        pruned = {t.number for t in load_study(plan.storage, plan.name).get_trials(
            deepcopy=False, states=(TrialState.PRUNED,))}
        _reconcile(results, plan, space, pruned, mlflow_client, experiment_id)
        rows = rows_from_results(results, list(space.params), pruned)
        top = best(rows, space.objective)
        summary = leaderboard(rows, space.objective) + "\n" + best_line(top, space.objective)
        print("\n" + summary)
        mlflow_client.log_text(plan.parent_run_id, summary + "\n", tracking.LEADERBOARD_ARTIFACT)
        if top is not None:
            mlflow_client.log_metric(plan.parent_run_id, tracking.BEST_METRIC, top.objective)
        rejected = shared_rejection(mlflow_client, experiment_id, plan.parent_run_id, shared_input,
                                    list(space.params))
        if rejected is not None:
            key, message = rejected
            outcome, code = "FAILED", EXIT_BAD_INPUT
            print(f"sweep {plan.name}: stopped: the trainer rejects {key}, which every trial gets:\n{message}",
                  file=sys.stderr)
        elif results.num_terminated + results.num_errors >= plan.trials and not interrupts.received:
            outcome, code = "FINISHED", 0
        else:
            code = EXIT_INTERRUPTED
        print(f"MLflow: experiment {plan.experiment!r}, parent run {plan.parent_run_id}")
        print(f"open the MLflow UI: {tracking.ui_command(plan.mlflow_uri)}", flush=True)
        return code
    finally:
        # fit() has stopped every trial by now; one whose worker died could not close its own run.
        with interrupts.deferred():
            tracking.close_unfinished_children(mlflow_client, experiment_id, plan.parent_run_id)
            mlflow_client.set_terminated(plan.parent_run_id, outcome)
