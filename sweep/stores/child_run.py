"""A trial's MLflow child run, written from the trial itself (where its run directory and files are).

The run is found again by (parent run, Optuna trial number): a trial that Ray restarts after a crash or
after a driver restart reopens the run of its previous attempt, so every trial has exactly one child run;
a trial whose run already finished (the driver died after it ended but before it saved its state) gets its
recorded result back instead of training again, and one whose trainer rejected its input (exit code 2)
gets that rejection back instead of a retry.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import RunTag

from sweep.runlog.events import RunState
from sweep.stores import tracking
from sweep.stores.store_failure import require_file
from trainer.protocol import EXIT_BAD_INPUT, FINAL_FIELDS, FP8, OK, TRAIN, VAL

OUTPUT_LOG = "output.log"   # the command's stdout and stderr, kept in the run directory
RESULT_FROM_RUN = {f"final_{f}": f for f in FINAL_FIELDS}
NO_EVALUATIONS = "none"     # TAG_EVAL_LABELS of a trial that printed no evaluation after training


UNFINISHED = ("RUNNING", "SCHEDULED")


def has_result(run) -> bool:
    """Whether the run is a trial's recorded result: closed FINISHED by the trial, its objective logged
    before (ChildRun.finish)."""
    return run.info.status == "FINISHED" and tracking.OBJECTIVE_METRIC in run.data.metrics


def recorded_objective(mlflow_client, experiment_id: str, parent_run_id: str, number: int) -> float | None:
    """The objective trial `number` recorded in its child run, if it finished."""
    for run in tracking.child_runs(mlflow_client, experiment_id, parent_run_id, number):
        if has_result(run):
            return run.data.metrics[tracking.OBJECTIVE_METRIC]
    return None


@dataclass(frozen=True)
class SweepRecords:
    """Where a sweep's trials keep their child runs, for the driver's side to read what a trial recorded."""

    mlflow_uri: str
    experiment_id: str
    parent_run_id: str

    def objective(self, number: int) -> float | None:
        """Trial `number`'s recorded objective (sweep.stores.store_failure.StoreFailure if the store is gone)."""
        return recorded_objective(tracking.existing_client(self.mlflow_uri), self.experiment_id, self.parent_run_id,
                                  number)


def end_run(mlflow_client, run, status: str, mlflow_status: str, error: str | None = None) -> None:
    """Say how a trial ended (`sweep.status`, and `sweep.error` unless the run has one), closing the run
    if it is still open. A run the trial itself closed FINISHED keeps what it says: the trial got to its
    end before whatever stopped it (an orderly stop, the scheduler, its worker's death) reached the driver."""
    if run.info.status == "FINISHED":
        return
    tags = [RunTag(tracking.TAG_STATUS, status)]
    if error and tracking.TAG_ERROR not in run.data.tags:
        tags.append(RunTag(tracking.TAG_ERROR, tracking.clip(error)))
    mlflow_client.log_batch(run.info.run_id, tags=tags)
    if run.info.status in UNFINISHED:
        mlflow_client.set_terminated(run.info.run_id, mlflow_status)


def close_unfinished_children(mlflow_client, experiment_id: str, parent_run_id: str) -> int:
    """Close the child runs still open once no trial of the sweep runs (their trials were stopped or their
    workers killed before they could); returns how many there were."""
    runs = [r for r in tracking.child_runs(mlflow_client, experiment_id, parent_run_id) if r.info.status in UNFINISHED]
    for run in runs:
        end_run(mlflow_client, run, "stopped", "KILLED")
    return len(runs)


def identity_tags(parent_run_id: str, number: int, sweep: str) -> dict[str, str]:
    """The tags that make a run the child run of trial `number` of a sweep (docs/records.md, "MLflow layout")."""
    return {tracking.PARENT_RUN_TAG: parent_run_id, tracking.TAG_ROLE: tracking.TRIAL_ROLE,
            tracking.TAG_TRIAL_NUMBER: str(number), tracking.TAG_SWEEP: sweep}


def record_ended(mlflow_client, experiment_id: str, parent_run_id: str, sweep: str, number: int,
                 params: dict[str, str], status: str, error: str | None) -> None:
    """Say how trial `number` ended on its child run, writing the run first when the trial never could
    (stopped before it started, its worker killed): every trial ends with exactly one terminated run."""
    runs = tracking.child_runs(mlflow_client, experiment_id, parent_run_id, number)
    if not runs:
        run = mlflow_client.create_run(experiment_id, run_name=tracking.trial_label(number),
                                       tags=identity_tags(parent_run_id, number, sweep))
        tracking.log_params(mlflow_client, run.info.run_id, params)
        runs = [run]
    for run in runs:
        end_run(mlflow_client, run, status, "FAILED" if status == "failed" else "KILLED", error=error)


def result_tags(objective_from: str, run: RunState) -> dict[str, str]:
    """Where the trial's objective came from, and every evaluation it printed after training (so a trial
    that never printed the space's `eval.<label>` shows what it printed instead)."""
    return {tracking.TAG_OBJECTIVE_FROM: objective_from,
            tracking.TAG_EVAL_LABELS: ", ".join(run.evaluations) or NO_EVALUATIONS}


def final_metrics(run: RunState, objective: float, wallclock_s: float, gpus: int) -> dict[str, float]:
    """The run's final numbers under their MLflow names (docs/records.md, "MLflow layout"; plus `objective`:
    Optuna's value)."""
    values: dict[str, Any] = {f"final_{k}": v for k, v in (run.final or {}).items() if k in FINAL_FIELDS}
    for key in ("artifact_bytes", "total_bytes", "roundtrip_val_loss", "roundtrip_val_bpb"):
        if run.export and key in run.export:
            values[key] = run.export[key]
    values.update(gpu_hours=wallclock_s / 3600.0 * gpus,
                  **{tracking.WALLCLOCK_METRIC: wallclock_s, tracking.OBJECTIVE_METRIC: objective})
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


class ChildRun:
    """The trial's one child run. A later attempt of the trial (a retry after a crash, a restart after a
    driver restart) reopens the same run: its params stay, its `sweep.attempt` counts up, and each
    (metric, step) pair is recorded once, so the loss curve continues from where the earlier attempt
    stopped instead of starting a second run (docs/records.md, "MLflow layout")."""

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, sweep: str, number: int):
        self.uri = uri
        self.client = tracking.existing_client(uri)
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.sweep = sweep
        self.number = number
        self.run_id: str | None = None
        self.batch: tracking.MetricBatch | None = None
        self._extra_files: list[tuple[Path, str]] = []
        self._earlier = tracking.child_runs(self.client, experiment_id, parent_run_id, number)

    def also_log(self, path: Path, artifact_dir: str) -> None:
        """Upload `path` (if it exists by then) under `artifact_dir` when the run closes."""
        self._extra_files.append((path, artifact_dir))

    def attach_text(self, text: str, artifact_file: str) -> None:
        """Record `text` as the artifact `artifact_file` of the open run now (a later attempt replaces it)."""
        self.client.log_text(self.run_id, text, artifact_file)

    def recorded_result(self) -> dict[str, Any] | None:
        """The final result of an earlier attempt that finished, if there is one."""
        for run in self._earlier:
            if has_result(run):
                self.run_id = run.info.run_id
                result = {RESULT_FROM_RUN.get(k, k): v for k, v in run.data.metrics.items()}
                result["status"] = run.data.tags.get(tracking.TAG_STATUS, OK)
                return result
        return None

    def recorded_rejection(self) -> str | None:
        """The error of an earlier attempt whose trainer rejected its input (exit code 2): running the same
        input again would only be rejected again."""
        for run in self._earlier:
            if run.info.status == "FAILED" and run.data.tags.get(tracking.TAG_EXIT_CODE) == str(EXIT_BAD_INPUT):
                return run.data.tags.get(tracking.TAG_ERROR, "the trainer rejected its input (exit code 2)")
        return None

    def start(self, run_name: str, params: dict[str, str], tags: dict[str, str]) -> None:
        """Open the trial's run for this attempt: the earlier attempts' run if there is one, else a new one."""
        tags = {**tags, **identity_tags(self.parent_run_id, self.number, self.sweep)}
        logged: set[tuple[str, int]] = set()
        if self._earlier:
            run = self._earlier[0]
            self.run_id = run.info.run_id
            tags[tracking.TAG_ATTEMPT] = str(int(run.data.tags.get(tracking.TAG_ATTEMPT, "1")) + 1)
            self.client.update_run(self.run_id, status="RUNNING")
            for stale in (tracking.TAG_STATUS, tracking.TAG_ERROR, tracking.TAG_EXIT_CODE, tracking.TAG_OBJECTIVE_FROM,
                          tracking.TAG_EVAL_LABELS):
                if stale in run.data.tags:
                    self.client.delete_tag(self.run_id, stale)
            params = {k: v for k, v in params.items() if tracking.param_name(k) not in run.data.params}
            logged = tracking.logged_points(self.client, run)
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        else:
            tags[tracking.TAG_ATTEMPT] = "1"
            self.run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id
        tracking.log_params(self.client, self.run_id, params)
        self.batch = tracking.MetricBatch(self.client, self.run_id, logged)

    def add_event(self, event: dict[str, Any]) -> None:
        kind, step = event.get("event"), event.get("step")
        if not isinstance(step, int) or kind not in (TRAIN, VAL, FP8):
            return
        values = tracking.fp8_metrics(event) if kind == FP8 else {k: event.get(k) for k in tracking.STEP_METRICS}
        self.batch.add(values, step, int(float(event.get("time", 0)) * 1000) or None)

    def flush(self) -> None:
        # A sqlite file deleted under an open connection still takes writes, into nothing.
        require_file(self.uri, "MLflow")
        self.batch.flush()

    def _close(self, status: str, mlflow_status: str, run_dir: Path, metrics: dict[str, float] | None = None,
               error: str | None = None, step: int = 0, extra_tags: dict[str, str] | None = None) -> None:
        self.flush()
        tags = {tracking.TAG_STATUS: status, **(extra_tags or {})}
        if error:
            tags[tracking.TAG_ERROR] = tracking.clip(error)
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        tracking.log_artifacts(self.client, self.run_id, run_dir, (*tracking.ARTIFACTS, *tracking.EXPORT_ARTIFACTS, OUTPUT_LOG))
        for path, artifact_dir in self._extra_files:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path), artifact_dir)
        # The result last, just before the run closes: a run whose other writes failed holds no objective.
        if metrics:
            self.batch.add(metrics, step=step)
            self.flush()
        self.client.set_terminated(self.run_id, mlflow_status)

    def finish(self, status: str, metrics: dict[str, float], run_dir: Path, step: int,
               tags: dict[str, str] | None = None) -> None:
        self._close(status, "FINISHED", run_dir, metrics, step=step, extra_tags=tags)

    def fail(self, error: str, run_dir: Path, exit_code: int | None) -> None:
        tags = {} if exit_code is None else {tracking.TAG_EXIT_CODE: str(exit_code)}
        self._close("failed", "FAILED", run_dir, error=error, extra_tags=tags)

    def stop(self, run_dir: Path) -> None:
        self._close("stopped", "KILLED", run_dir)
