"""Running a sweep: MLflow parent run, Ray, the Tune experiment, and the summary at the end.

Tune keeps the experiment state under `<results-dir>/<name>/` (so `Tuner.restore` can continue it), Optuna
keeps the study in its storage under the sweep's name, MLflow keeps one parent run per sweep and the trials'
child runs. `run_sweep` is used both for a new sweep and to resume one.
"""
from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from typing import Any

import optuna
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from sweep.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_STORE_FAILED, InputError
from sweep.inputs.plan import FIXED, SEARCH, SweepPlan, plan_path
from sweep.inputs.resources import trials_that_fit
from sweep.inputs.space import SearchSpace
from sweep.orchestration import confirm
from sweep.orchestration.interrupt import Interrupts
from sweep.orchestration.launch_gate import LaunchGate, spent_hours, unit
from sweep.orchestration.live import LiveView
from sweep.orchestration.rejection import StopOnRejectedInput, shared_rejection
from sweep.orchestration.search import StudySearcher
from sweep.orchestration.store_stop import StopOnStoreFailure, failure_in, settle
from sweep.orchestration.tune_state import restored
from sweep.orchestration.tuner import new_tuner, quiet_environment, result_number, start_ray
from sweep.report.confirm_report import ConfirmReport, build_report
from sweep.report.confirm_report import markdown as confirm_markdown
from sweep.report.confirm_report import metrics as confirm_metrics
from sweep.report.trial_rows import best, best_line, leaderboard, read_rows
from sweep.stores import credentials, sweep_lock, tracking, urls
from sweep.stores import results_dir as results
from sweep.stores.child_run import SweepRecords, close_unfinished_children, record_ended
from sweep.stores.store_failure import StoreFailure, attempt, require_file, store_error
from sweep.stores.study import create_study, load_study
from sweep.trial.command import TrialSettings, search_settings
from sweep.trial.runner import FINAL_KEY, TRIAL_NUMBER_KEY
from trainer.protocol import OK

ASHA_REDUCTION = 2
# ASHA's rungs sit at 1, 2, 4, ... reports whatever max_t is; max_t only stops a trial that reaches it, so
# it is set beyond any trial's number of validations rather than guessed from a config.
ASHA_MAX_REPORTS = 10**6


@dataclass(frozen=True)
class SweepRun:
    """What each step of a sweep's run reads: its plan, its space, and the MLflow experiment (with the client
    that writes to it) its parent run and the trials' child runs are in."""

    plan: SweepPlan
    space: SearchSpace
    mlflow_client: Any
    experiment_id: str


def resolve_concurrency(plan: SweepPlan) -> int:
    """`--concurrency`, or as many trials as the cluster holds right now."""
    if plan.concurrency > 0:
        return plan.concurrency
    return trials_that_fit(plan.trials, plan.resources)


def describe(plan: SweepPlan, space: SearchSpace) -> str:
    """The parent run's description in the MLflow UI: how to read the sweep there."""
    better = "lowest" if space.mode == "min" else "highest"
    return "\n".join([
        f"**Sweep {plan.name}**: {plan.trials} trials of `{plan.space_file}`, judged by {space.metric} "
        f"({better} is best), preset {plan.preset}.",
        "",
        f"- Each child run is one trial: its params are the values it ran with, tag `{tracking.TAG_TRIAL_NUMBER}` "
        f"its Optuna trial number, tag `{tracking.TAG_STATUS}` how it ended (ok, diverged, wallclock_cap, "
        f"pruned, failed, stopped).",
        f"- Rank the trials by the metric `{tracking.OBJECTIVE_METRIC}` (the value Optuna was given, penalties "
        f"included); `val_loss` and `train_time_ms` by step are the curves.",
        f"- `{tracking.LEADERBOARD_ARTIFACT}` holds the leaderboard once the sweep ends; `sweep compare {plan.name}` "
        f"adds plots under `compare/`.",
        "- A difference near the seed noise (between seeds of one configuration the final val_loss of the "
        "speedrun records varies by about 0.0015) is not a result until confirmed: "
        + (f"`{confirm.MARKDOWN_ARTIFACT}` holds the confirmation of the top {plan.confirm} configurations "
           f"against the baseline over {'' if plan.confirm_design == FIXED else 'at most '}seeds "
           f"1..{plan.confirm_seeds} (its runs: the nested run `{plan.confirm_name}`)." if plan.confirm else
           f"`sweep run --confirm K` confirms the top K, `sweep verify {plan.name}` the best."),
    ])


def _new_tuner(plan: SweepPlan, space: SearchSpace, settings: TrialSettings, stop: StopOnRejectedInput, samples: int):
    gate = LaunchGate(plan.mlflow_uri, settings.experiment_id, plan.parent_run_id, space.mode, space.metric,
                      plan.stop_at, plan.budget_gpu_hours, plan.devices_per_trial, plan.gpus_per_trial)
    searcher = StudySearcher(space, study_name=plan.name, storage_url=plan.storage, sampler=plan.sampler,
                             seed=plan.seed, gate=gate if gate.active else None, records=_records(plan, settings.experiment_id))
    scheduler = (ASHAScheduler(time_attr="training_iteration", metric="val_loss", mode="min",
                               max_t=ASHA_MAX_REPORTS, grace_period=1, reduction_factor=ASHA_REDUCTION)
                 if plan.scheduler == "asha" else FIFOScheduler())
    slots = resolve_concurrency(plan)
    return new_tuner(settings, name=plan.name, results_dir=plan.results_dir, max_failures=plan.max_failures,
                     tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=samples,
                                                 max_concurrent_trials=slots, reuse_actors=True),
                     callbacks=[LiveView(space.metric, space.mode, samples, plan.name, slots), stop,
                                StopOnStoreFailure()], stop=stop)


def _records(plan: SweepPlan, experiment_id: str) -> SweepRecords:
    return SweepRecords(plan.mlflow_uri, experiment_id, plan.parent_run_id)


def result_state(result, pruned: set[int]) -> str:
    """How a trial of a Tune `ResultGrid` ended; `pruned` holds the trial numbers Optuna has as pruned
    (a trial without a final result that was not pruned was stopped by an interruption)."""
    metrics = result.metrics or {}
    if result.error is not None:
        return "failed"
    if metrics.get(FINAL_KEY):
        return str(metrics.get("status", OK))
    return "pruned" if result_number(result) in pruned else "stopped"


def _reconcile(grid, run: SweepRun, pruned: set[int]) -> None:
    """Make each trial's child run say how the trial ended, also when the trial could not (it was
    stopped by the scheduler, or its worker died): every trial ends with exactly one terminated run."""
    plan, space = run.plan, run.space
    for result in grid:
        number = result_number(result)
        status = result_state(result, pruned)
        if number is None or status not in ("failed", "pruned", "stopped"):
            continue
        params = {k: space.trainer.text(v) for k, v in {**space.fixed, **(result.config or {})}.items()
                  if k != TRIAL_NUMBER_KEY}
        record_ended(run.mlflow_client, run.experiment_id, plan.parent_run_id, plan.name, int(number), params, status,
                     None if result.error is None else str(result.error))


def claim_name(plan: SweepPlan, space: SearchSpace, name_given: bool) -> None:
    """Create the sweep's Optuna study, the one atomic step that makes a name this sweep's: another sweep
    started at the same moment may have picked the same default name, which then moves on to the next
    free one; a `--name` taken since `sweep run` checked it is refused."""
    base = plan.name
    for k in itertools.count(2):
        if name_given or not results.exists(plan_path(plan.results_dir, plan.name)):
            try:
                create_study(plan.storage, plan.name, space.mode, space.metric)
                return
            except optuna.exceptions.DuplicatedStudyError:
                if name_given:
                    raise InputError("--name", f"a sweep named {plan.name!r} was started meanwhile; "
                                               f"pick another --name") from None
        plan.name = f"{base}-{k}"


def open_records(plan: SweepPlan, space: SearchSpace, mlflow_client, resume: bool, command: str) -> str:
    """Write what the sweep needs before its trials start (after the study, the claim on the name, and the
    driver's lock): `sweep.json`, the MLflow experiment and parent run, then `sweep.json` again with the run's
    id, and the MLflow UI's view of its trials. A driver killed between two of these leaves what `sweep resume`
    needs to do the rest. A resumed parent run keeps its status until trials run (`_run_trials`). Returns the
    experiment id."""
    if not resume:
        plan.save()
    experiment_id = tracking.ensure_experiment(mlflow_client, plan.mlflow_uri, plan.experiment)
    if not plan.parent_run_id:
        plan.parent_run_id = tracking.open_parent(
            mlflow_client, experiment_id, plan.name, "sweep", plan.preset, plan.address, command,
            {tracking.TAG_SPACE: tracking.clip(plan.space_text), tracking.TAG_SPACE_FILE: plan.space_file,
             tracking.TAG_METRIC: space.metric, tracking.TAG_MODE: space.mode}, description=describe(plan, space))
        plan.save()
    tracking.ensure_trials_view(mlflow_client, experiment_id, plan.name, list(space.params), space.mode)
    return experiment_id


def resume_command(plan: SweepPlan) -> str:
    return f"sweep resume {plan.name}{plan.results_flag}"


def next_steps(plan: SweepPlan, experiment_id: str) -> list[str]:
    """The last lines of a sweep: the commands that look at it next, and the page of MLflow's UI with its
    trials."""
    store = "" if plan.mlflow_uri == urls.absolute(urls.DEFAULT_MLFLOW_URI) else f" --mlflow-uri {plan.mlflow_uri}"
    commands = [(f"sweep list{store}", "the sweeps of this store"),
                (f"sweep compare {plan.name}{plan.results_flag}",
                 f"this sweep's trials ranked, parameter importance, plots in {plan.sweep_dir / 'compare'}")]
    width = max(len(command) for command, _ in commands)
    return ["next: " + "\n      ".join(f"{command.ljust(width)}  # {what}" for command, what in commands),
            *tracking.ui_lines(plan.mlflow_uri, experiment_id, plan.name)]


def run_sweep(plan: SweepPlan, resume: bool = False, command: str = "", name_given: bool = True) -> int:
    """Run (or resume) the sweep, printing the live view and the summary on stdout; returns the exit
    code: 0 when every trial ended, 1 if the sweep was interrupted (SIGINT, SIGTERM: interrupt.py) or a store
    stopped taking writes (store_stop.py), 2 if it stopped because the trainer rejects input every trial gets
    (rejection.py)."""
    quiet_environment()
    space = plan.space()
    interrupts = Interrupts()
    interrupts.install()
    experiment_id = None
    started = False
    held = None   # a resume comes holding the sweep's lock already (sweep.commands.resume)
    try:
        # Ray first: a cluster that cannot be reached is found before anything is written.
        started = start_ray(plan.address)
        with interrupts.deferred():  # a first open of a sqlite store migrates it: never stopped half-way
            if not resume:
                claim_name(plan, space, name_given)
                held = sweep_lock.take(plan.sweep_dir, plan.name, command)
            mlflow_client = tracking.client(plan.mlflow_uri)
            experiment_id = open_records(plan, space, mlflow_client, resume, command)
        with credentials.handed_to_trials(plan.mlflow_uri, plan.sweep_dir):
            code = _run_trials(SweepRun(plan, space, mlflow_client, experiment_id), resume, interrupts, command)
    except KeyboardInterrupt:
        if experiment_id is None and not resume:
            print("sweep run: interrupted before the sweep started; nothing was written", file=sys.stderr)
            return EXIT_INTERRUPTED
        code = EXIT_INTERRUPTED
    except Exception as e:
        what = store_error(e, plan.mlflow_uri, plan.storage, plan.sweep_dir)
        if what is None:
            raise
        print(f"sweep {plan.name}: stopped: {what}; fix it and run `{resume_command(plan)}`", file=sys.stderr,
              flush=True)
        return EXIT_STORE_FAILED
    finally:
        if started:
            with interrupts.deferred():
                ray.shutdown()
        if held is not None:
            held.release()
    if code == EXIT_INTERRUPTED:
        print(f"interrupted: continue with `{resume_command(plan)}`", flush=True)
    return code


def _run_trials(run: SweepRun, resume: bool, interrupts: Interrupts, command: str) -> int:
    plan, space, mlflow_client, experiment_id = run.plan, run.space, run.mlflow_client, run.experiment_id
    keys_as = {"env": "as environment variables", "args": "as arguments",
               "source": "written into a copy of its script"}[space.trainer.params]
    runs = f"`{plan.trainer_cmd}` with the keys {keys_as}" if plan.trainer_cmd else f"preset {plan.preset}"
    print(f"sweep {plan.name}: {plan.trials} trials of {plan.space_file} ({space.metric}, {space.mode}), "
          f"{runs}, {plan.scheduler} scheduler, {plan.sampler} sampler", flush=True)
    outcome, running = "KILLED", not resume   # a new sweep's parent run is RUNNING since open_records
    try:
        tuner, samples = _search_tuner(run, resume) if plan.stage == SEARCH else (None, 0)
        # Only now does the sweep run again: a resume that failed before leaves the parent's status as it was.
        if resume:
            mlflow_client.update_run(plan.parent_run_id, status="RUNNING")
        running = True
        code = EXIT_OK if tuner is None else _search(run, tuner, samples, interrupts, resume)
        rows = read_rows(mlflow_client, experiment_id, plan.parent_run_id, list(space.params))
        report = None
        if code == EXIT_OK and plan.confirm:
            report, code = _confirm(run, rows, interrupts, command)
        _summarize(run, rows, report)
        if code == EXIT_OK:
            outcome = "FINISHED"
        elif code == EXIT_BAD_INPUT:
            outcome = "FAILED"
        print(f"MLflow: experiment {plan.experiment!r}, parent run {plan.parent_run_id}")
        print("\n".join(next_steps(plan, experiment_id)), flush=True)
    except BaseException:
        # A store that failed may refuse these writes too; a resume writes what they could not.
        if running:
            with interrupts.deferred():
                if _mlflow_present(plan):
                    attempt(close_unfinished_children, mlflow_client, experiment_id, plan.parent_run_id)
                    attempt(mlflow_client.set_terminated, plan.parent_run_id, outcome)
        raise
    # fit() has stopped every trial by now; one whose worker died could not close its own run.
    with interrupts.deferred():
        require_file(plan.mlflow_uri, "MLflow")
        close_unfinished_children(mlflow_client, experiment_id, plan.parent_run_id)
        mlflow_client.set_terminated(plan.parent_run_id, outcome)
    return code


def _mlflow_present(plan: SweepPlan) -> bool:
    """Whether the MLflow store can be written without creating it: a sqlite file deleted mid-sweep stays
    deleted (sweep.stores.store_failure.require_file)."""
    return attempt(require_file, plan.mlflow_uri, "MLflow")


def _search_tuner(run: SweepRun, resume: bool):
    """The search's Tune experiment, continued or new, and how many trials it runs."""
    plan, space, experiment_id = run.plan, run.space, run.experiment_id
    settings = search_settings(plan, space, experiment_id)
    if resume:
        # Trials that recorded their result in MLflow after the Optuna store stopped taking writes.
        settle(load_study(plan.storage, plan.name), _records(plan, experiment_id), ended=set())
    tuner = restored(settings, plan.tune_path) if resume else None
    if tuner is not None:
        return tuner, plan.trials
    # Also a resume whose driver died before Tune saved anything, or whose Tune state was torn: the
    # searcher then adopts the study's running and complete trials, enqueues only the points the study has
    # not taken yet, and the trials that ended otherwise (failed, pruned) are not run again.
    ended = len(load_study(plan.storage, plan.name).get_trials(
        deepcopy=False, states=(TrialState.FAIL, TrialState.PRUNED)))
    stop = StopOnRejectedInput(plan.mlflow_uri, experiment_id, plan.parent_run_id,
                               {**space.trainer.env, **space.fixed}, list(space.params))
    samples = max(plan.trials - ended, 0)
    return (_new_tuner(plan, space, settings, stop, samples) if samples else None), samples


def _search(run: SweepRun, tuner, samples: int, interrupts: Interrupts, resume: bool) -> int:
    """Run the search's `samples` trials; returns its exit code."""
    plan, space, mlflow_client, experiment_id = run.plan, run.space, run.mlflow_client, run.experiment_id
    shared_input = {**space.trainer.env, **space.fixed}
    records = _records(plan, experiment_id)
    # Trials that failed under an earlier driver: their errors are in a restored grid.
    failed_before = {t.number for t in load_study(plan.storage, plan.name).get_trials(
        deepcopy=False, states=(TrialState.FAIL,))} if resume else set()
    StopOnStoreFailure.clear()
    with interrupts.tune():
        grid = tuner.fit()
    failure = StopOnStoreFailure.found or failure_in(grid, skip=failed_before)
    if failure is not None:
        _wind_down(grid, run)
        raise StoreFailure(failure)
    for url, store in ((plan.mlflow_uri, "MLflow"), (plan.storage, "Optuna")):
        require_file(url, store)
    study = load_study(plan.storage, plan.name)
    if not interrupts.received:
        settle(study, records, ended=set(_numbers(grid)))
    pruned = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))}
    _reconcile(grid, run, pruned)
    close_unfinished_children(mlflow_client, experiment_id, plan.parent_run_id)
    rejected = shared_rejection(mlflow_client, experiment_id, plan.parent_run_id, shared_input,
                                list(space.params))
    if rejected is not None:
        key, message = rejected
        print(f"sweep {plan.name}: stopped: the trainer rejects {key}, which every trial gets:\n{message}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    stopped = tracking.TAG_STOPPED_LAUNCHING in mlflow_client.get_run(plan.parent_run_id).data.tags
    if (grid.num_terminated + grid.num_errors >= samples or stopped) and not interrupts.received:
        return EXIT_OK
    return EXIT_INTERRUPTED


def _numbers(grid) -> list[int]:
    return [n for n in map(result_number, grid) if n is not None]


def _wind_down(grid, run: SweepRun) -> None:
    """After a trial's store failure stopped the experiment: write what the stores still take, each write on
    its own (the store that failed refuses its share), opening nothing that is gone. A failed trial is FAIL in
    Optuna; the trials the stop ended run again on resume, as after an interrupt."""
    plan = run.plan
    failed = {result_number(r) for r in grid if r.error is not None} - {None}
    pruned: set[int] = set()

    def settle_study() -> None:
        require_file(plan.storage, "Optuna")
        study = load_study(plan.storage, plan.name)
        settle(study, _records(plan, run.experiment_id), failed)
        pruned.update(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))

    attempt(settle_study)
    if _mlflow_present(plan):
        attempt(_reconcile, grid, run, pruned)


def _confirm(run: SweepRun, rows, interrupts: Interrupts, command: str) -> tuple[ConfirmReport | None, int]:
    """Run (or continue) the confirmation; returns its report (None when there was nothing to confirm or it
    was interrupted) and exit code."""
    plan, space, mlflow_client, experiment_id = run.plan, run.space, run.mlflow_client, run.experiment_id
    values = confirm.prepare(plan, space, rows, mlflow_client, experiment_id, command)
    if len(plan.confirm_trials) < 2:
        print("confirmation: no finished trial besides the baseline (trial 0) to confirm", flush=True)
        mlflow_client.set_terminated(plan.confirm_run_id, "FINISHED")
        return None, EXIT_OK
    outcome = "KILLED"
    try:
        rounds = None
        if plan.confirm_design == FIXED:
            confirm.run_fixed(plan, space, values, experiment_id, interrupts)
        else:
            rounds = confirm.run_rounds(plan, space, values, mlflow_client, experiment_id, interrupts)
        close_unfinished_children(mlflow_client, experiment_id, plan.confirm_run_id)
        if interrupts.received:
            return None, EXIT_INTERRUPTED
        report = build_report(confirm.configs(plan, values, mlflow_client, experiment_id, rounds), space.objective,
                              confirm.seeds(plan), plan.confirm_alpha, plan.confirm_power, rounds,
                              confirm.paired(space))
        text = confirm_markdown(report, confirm_title(plan))
        for run_id in (plan.confirm_run_id, plan.parent_run_id):
            mlflow_client.log_text(run_id, text, confirm.MARKDOWN_ARTIFACT)
        mlflow_client.set_tag(plan.confirm_run_id, tracking.NOTE_TAG, tracking.clip(text))
        mlflow_client.set_tag(plan.parent_run_id, confirm.TAG_WINNER,
                              "none" if report.winner is None else str(report.winner.config.trial))
        tracking.log_metrics(mlflow_client, plan.parent_run_id, confirm_metrics(report))
        outcome = "FINISHED"
        return report, EXIT_OK
    finally:
        with interrupts.deferred():
            close_unfinished_children(mlflow_client, experiment_id, plan.confirm_run_id)
            mlflow_client.set_terminated(plan.confirm_run_id, outcome)


def confirm_title(plan: SweepPlan) -> str:
    seeds = f"{plan.confirm_seeds} seeds" if plan.confirm_design == FIXED else f"at most {plan.confirm_seeds} seeds"
    return f"Confirmed leaderboard of sweep {plan.name}: {len(plan.confirm_trials)} configurations x {seeds}"


def _hours(run: SweepRun) -> dict[str, float]:
    """The hours (GPU, or CPU on CPU trials) the search's and the confirmation's trials took."""
    plan, mlflow_client, experiment_id = run.plan, run.mlflow_client, run.experiment_id
    name = unit(plan.gpus_per_trial).lower()
    hours = {f"{name}_hours_search": spent_hours(
        tracking.child_runs(mlflow_client, experiment_id, plan.parent_run_id), plan.devices_per_trial)}
    if plan.confirm_run_id:
        hours[f"{name}_hours_confirm"] = spent_hours(
            tracking.child_runs(mlflow_client, experiment_id, plan.confirm_run_id), plan.devices_per_trial)
    hours[f"{name}_hours"] = sum(hours.values())
    return hours


def _summarize(run: SweepRun, rows, report: ConfirmReport | None) -> None:
    """Print the leaderboard (with the noise floor when there is a noise estimate), the confirmed
    leaderboard and the hours spent, and log them on the sweep's parent run."""
    plan, space, mlflow_client = run.plan, run.space, run.mlflow_client
    if report is not None and report.pooled_std is not None:
        noise, source = report.pooled_std, "pooled over the confirmation's seeds"
    else:
        noise, source = plan.noise_std, "from --noise-std"
    top = best(rows, space.objective)
    parts = [leaderboard(rows, space.objective, noise, source), best_line(top, space.objective)]
    reason = mlflow_client.get_run(plan.parent_run_id).data.tags.get(tracking.TAG_STOPPED_LAUNCHING)
    if reason:
        parts.append(f"stopped launching trials: {reason}")
    hours = _hours(run)
    name = unit(plan.gpus_per_trial)
    spent = [f"{name}-hours spent: {hours[f'{name.lower()}_hours']:.4g}",
             f"search {hours[f'{name.lower()}_hours_search']:.4g}"]
    if plan.budget_gpu_hours is not None:
        spent[-1] += f" of a budget of {plan.budget_gpu_hours:g}"
    if f"{name.lower()}_hours_confirm" in hours:
        spent.append(f"confirmation {hours[f'{name.lower()}_hours_confirm']:.4g}")
    parts.append(f"{spent[0]} ({', '.join(spent[1:])})")
    summary = "\n".join(parts)
    print("\n" + summary)
    if report is not None:
        print("\n" + confirm_markdown(report, confirm_title(plan)), end="", flush=True)
    mlflow_client.log_text(plan.parent_run_id, summary + "\n", tracking.LEADERBOARD_ARTIFACT)
    note = f"{describe(plan, space)}\n\n```\n{summary}\n```"
    if report is not None:
        note += "\n\n" + confirm_markdown(report, confirm_title(plan))
    mlflow_client.set_tag(plan.parent_run_id, tracking.NOTE_TAG, tracking.clip(note))
    tracking.log_metrics(mlflow_client, plan.parent_run_id,
                         {**hours, **({} if top is None else {tracking.BEST_METRIC: top.objective})})
