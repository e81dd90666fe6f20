"""One trial: launch the trainer on the trial's node, follow its events, report to Tune, record in MLflow.

What it launches is sweep.trial.command's: the built-in trainer, or another program (sweep.inputs.trainer_spec)
with the keys as arguments, environment variables, or written into the trial's copy of its script (source
mode, whose child run also records the copy's diff to the original and its sha256); in env mode `RUN_ID`
is `<sweep>_trial_NNNN`. Every `val`
event is reported to Tune as an intermediate result and the `final` event as the trial's result. A
trainer that exits non-zero, or without a `final` event, fails the trial with the tail of its output (Tune
then retries it per `FailureConfig`, but the retry of a trainer that rejected its input, exit code 2, ends
at once with the same error: sweep.orchestration.rejection). Whatever ends the trial (done, stopped by the scheduler,
failed, the worker killed), every process the trainer started is ended with it (sweep.trial.supervisor).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from sweep.errors import InputError
from sweep.inputs.objective import Objective
from sweep.runlog.events import EventTail, LineTail, RunState
from sweep.runlog.logparse import LiveLog
from sweep.stores import credentials, tracking
from sweep.stores.child_run import OUTPUT_LOG, RESULT_FROM_RUN, ChildRun, final_metrics, result_tags
from sweep.stores.store_failure import attempt, guarded
from sweep.stores.tracking import trial_label
from sweep.trial.command import (
    RUN_ID_ENV,
    SOURCE_DIFF,
    TrialSettings,
    build_command,
    edit_script,
    source_diff,
    trial_env,
    trial_params,
    trial_variables,
    write_copy,
)
from sweep.trial.process import SupervisedProcess
from sweep.trial.progress import TrialProgress
from trainer.protocol import EVENTS_FILE, EXIT_BAD_INPUT, VAL

TRIAL_NUMBER_KEY = "trial_number"   # put into each trial's config by the searcher
FINAL_KEY = "reached_final"         # True only on a result made from the trainer's final event
OBJECTIVE_KEY = tracking.OBJECTIVE_METRIC
SCRIPT_LOGS = "logs"                      # where upstream scripts write logs/<RUN_ID>.txt, from their cwd
TAIL_LINES = 40


class TrialFailed(RuntimeError):
    """The trainer crashed, was rejected, or ended without a result."""


def fresh_run_dir(run_root: str, number: int) -> Path:
    """The trial's run directory, emptied of an earlier attempt (kept beside it as `.attemptK`)."""
    run_dir = Path(run_root) / trial_label(number)
    if run_dir.exists():
        k = 1
        while run_dir.with_name(f"{run_dir.name}.attempt{k}").exists():
            k += 1
        run_dir.rename(run_dir.with_name(f"{run_dir.name}.attempt{k}"))
    run_dir.mkdir(parents=True)
    return run_dir


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def failure_message(rc: int | None, run: RunState, run_dir: Path) -> str:
    if rc == 0:
        head = "the trainer exited 0 without a final event"
    elif rc == EXIT_BAD_INPUT:
        head = f"the trainer rejected its input (exit code {EXIT_BAD_INPUT})"
    elif rc is not None and rc < 0:
        head = f"the trainer was killed by signal {-rc}"
    else:
        head = f"the trainer crashed (exit code {rc})"
    parts = [head]
    if run.error:
        parts.append(f"error event: {run.error.strip()}")
    output = tail(run_dir / OUTPUT_LOG)
    if output:
        parts.append(f"last lines of {OUTPUT_LOG}:\n{output}")
    return "\n".join(parts)


def intermediate_result(event: dict[str, Any], objective: Objective, number: int) -> dict[str, Any]:
    result = {k: event[k] for k in ("step", "val_loss", "val_bpb", "train_time_ms", "step_avg_ms")
              if isinstance(event.get(k), (int, float))}
    proxy = objective.intermediate(event)
    result[OBJECTIVE_KEY] = objective.penalty if proxy is None else proxy
    return {**result, FINAL_KEY: False, TRIAL_NUMBER_KEY: number}


def final_result(metrics: dict[str, float], status: str, number: int) -> dict[str, Any]:
    result: dict[str, Any] = {RESULT_FROM_RUN.get(k, k): v for k, v in metrics.items()}
    return {**result, "status": status, FINAL_KEY: True, TRIAL_NUMBER_KEY: number}


class _Source:
    """The trial's events: `events.jsonl` if the trainer writes one, else reference lines in its output."""

    def __init__(self, run_dir: Path, read_lines: bool):
        self.events = EventTail(run_dir / EVENTS_FILE)
        self.lines = LineTail(run_dir / OUTPUT_LOG) if read_lines else None
        self.live_log = LiveLog()
        self.mode: str | None = None

    def read(self) -> list[dict[str, Any]]:
        events = self.events.read() if self.mode != "lines" else []
        if events:
            self.mode = "events"
        if self.lines is None or self.mode == "events":
            return events
        parsed = [e for line in self.lines.read() for e in self.live_log.feed(line)]
        if parsed:
            self.mode = "lines"
        return parsed

    def finish(self) -> list[dict[str, Any]]:
        return self.live_log.finish() if self.mode == "lines" else []


def _open_child_run(settings: TrialSettings, number: int) -> ChildRun:
    """The trial's child run, reached with the MLflow password the driver handed over, or where its file is not
    on this node, with the node's own credentials: a failure to connect then says so."""
    instead = credentials.from_driver(settings.mlflow_password_file)
    try:
        return ChildRun(settings.mlflow_uri, settings.experiment_id, settings.parent_run_id, settings.sweep, number)
    except Exception as e:  # whatever the store's client raises when it cannot connect or is refused
        if instead is None:
            raise
        raise TrialFailed(f"cannot open the MLflow store {settings.mlflow_uri}: {credentials.redact(str(e))}\n"
                          f"{instead}") from None


def run_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    """The Tune function trainable (bound to `settings` with `tune.with_parameters`). A write that the MLflow
    store or the disk refuses fails the trial with a sweep.stores.store_failure.StoreFailure, which stops the
    sweep (sweep.orchestration.store_stop)."""
    with guarded(settings.mlflow_uri):
        _run_trial(config, settings)


def _run_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    ctx = tune.get_context()
    number = int(config[TRIAL_NUMBER_KEY])
    values = {k: v for k, v in config.items() if k != TRIAL_NUMBER_KEY}
    child = _open_child_run(settings, number)
    recorded = child.recorded_result()
    if recorded is not None:
        tune.report({**recorded, FINAL_KEY: True, TRIAL_NUMBER_KEY: number})
        return
    rejection = child.recorded_rejection()
    if rejection is not None:
        raise TrialFailed(rejection)
    run_dir = fresh_run_dir(settings.run_root, number)
    # RUN_ID names the script's logs/<RUN_ID>.txt in a folder every sweep started there shares: the sweep's name
    # keeps two sweeps' trial_0000 apart.
    variables = trial_variables(settings, values, f"{settings.sweep}_{trial_label(number)}", number)
    if settings.trainer.env_mode:
        child.also_log(Path(settings.cwd) / SCRIPT_LOGS / f"{variables[RUN_ID_ENV]}.txt", SCRIPT_LOGS)
    source, rejected = None, None
    if settings.trainer.source_mode:
        try:
            source = edit_script(settings.trainer, settings.cwd, {**settings.fixed, **values})
        except InputError as e:
            rejected = str(e)
    child.start(trial_label(number), trial_params(settings, values, variables, source), {
        tracking.TAG_TRIAL_ID: ctx.get_trial_id(), tracking.TAG_PRESET: settings.preset, tracking.TAG_GPUS: str(settings.gpus),
        tracking.TAG_NPROC: str(settings.nproc), tracking.TAG_NODE: ray.get_runtime_context().get_node_id(),
        tracking.TAG_VISIBLE_GPUS: os.environ.get("CUDA_VISIBLE_DEVICES", "")})
    if rejected is not None:
        child.fail(rejected, run_dir, EXIT_BAD_INPUT)
        raise TrialFailed(rejected)
    if source is not None:
        write_copy(settings, source, run_dir)
        child.attach_text(source_diff(settings, source, run_dir), SOURCE_DIFF)
    _monitor(settings, values, number, run_dir, child, variables, TrialProgress(settings.sweep, ctx.get_trial_id()))


def _monitor(settings: TrialSettings, values: dict[str, Any], number: int, run_dir: Path, child: ChildRun,
             variables: dict[str, str], progress: TrialProgress) -> None:
    objective = settings.objective
    source = _Source(run_dir, read_lines=bool(settings.trainer.command))
    run = RunState()
    closed = False
    started = time.monotonic()
    proc = SupervisedProcess(build_command(settings, values, run_dir), run_dir / OUTPUT_LOG,
                             env=trial_env(settings, run_dir, variables), cwd=settings.cwd)
    try:
        last_flush = time.monotonic()
        while True:
            rc = proc.poll()  # read before draining: every event written before the exit gets read
            for event in source.read() + (source.finish() if rc == 0 else []):
                run.apply(event)
                child.add_event(event)
                progress.apply(event)
                if event["event"] == VAL:
                    child.flush()
                    last_flush = time.monotonic()
                    tune.report(intermediate_result(event, objective, number))
            if rc is not None:
                break
            progress.tick()
            if time.monotonic() - last_flush > settings.flush_s and len(child.batch):
                child.flush()
                last_flush = time.monotonic()
            time.sleep(settings.poll_s)
        wallclock_s = time.monotonic() - started
        if rc != 0 or run.final is None:
            message = failure_message(rc, run, run_dir)
            closed = True
            child.fail(message, run_dir, rc)
            raise TrialFailed(message)
        judged = objective.judge(run)
        metrics = final_metrics(run, judged.value, wallclock_s, settings.gpus)
        closed = True
        child.finish(run.status, metrics, run_dir, step=int(run.final.get("step") or 0),
                     tags=result_tags(judged.source, run))
        tune.report(final_result(metrics, run.status, number))
    except BaseException:
        proc.kill()
        if not closed:
            attempt(child.stop, run_dir)  # a store that refuses this too: the error in flight says so
        raise
    proc.kill()
