"""When a sweep stops launching trials (`--stop-at`, `--budget-gpu-hours`), and the GPU-hours it spent.

The searcher asks the gate before each new trial (sweep.orchestration.search: `suggest` returns Tune's
`Searcher.FINISHED` once the gate is closed); trials already running finish normally. The gate reads the
sweep's child runs, the one record that survives a driver restart, so a resumed sweep counts the trials of
every driver:

- `--stop-at X`: closed once a finished trial's objective is at or below X (at or above when maximising).
- `--budget-gpu-hours H`: a trial starts only if the hours spent by the trials that ended, plus the
  expected cost of the running ones and of the new one, stay within H. A trial's cost is its wallclock
  (the `wallclock_s` its run recorded, else the run's duration: pruned, failed and stopped trials) times
  its GPUs, or its CPUs for a CPU trial (CPU-hours); the expected cost of a trial is the mean wallclock of
  the trials that finished with a result so far. Before any trial has finished there is no estimate, and
  the first trials (up to the concurrency) start.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from sweep.report.verify_claim import RESULT_STATES
from sweep.stores import tracking


def unit(gpus_per_trial: int) -> str:
    """What the sweep's hours count: GPU-hours, or CPU-hours for CPU trials."""
    return "GPU" if gpus_per_trial else "CPU"


def trial_cost_s(run) -> float:
    """A trial's wallclock: what its finished run recorded, else how long its run was (or has been) open."""
    recorded = run.data.metrics.get(tracking.WALLCLOCK_METRIC)
    if recorded is not None:
        return float(recorded)
    end_ms = run.info.end_time or time.time() * 1000
    return max(0.0, (end_ms - run.info.start_time) / 1000.0)


def spent_hours(runs, per_trial: int) -> float:
    """The hours (GPU, or CPU) the trials of `runs` took, each holding `per_trial` devices."""
    return sum(trial_cost_s(r) for r in runs) * per_trial / 3600.0


@dataclass
class LaunchGate:
    mlflow_uri: str
    experiment_id: str
    parent_run_id: str
    mode: str                  # the space's: min | max
    metric: str
    stop_at: float | None
    budget_hours: float | None
    per_trial: int             # the trial's GPUs, or its CPUs for a CPU trial
    gpus_per_trial: int

    def __getstate__(self) -> dict:
        # Pickled with the searcher in Tune's state: the MLflow client is reopened, not pickled.
        return {k: v for k, v in self.__dict__.items() if k != "_client"}

    @property
    def active(self) -> bool:
        return self.stop_at is not None or self.budget_hours is not None

    def _mlflow(self):
        if "_client" not in self.__dict__:
            self.__dict__["_client"] = tracking.existing_client(self.mlflow_uri)
        return self.__dict__["_client"]

    def _runs(self) -> list:
        return tracking.child_runs(self._mlflow(), self.experiment_id, self.parent_run_id)

    def _reached(self, run) -> bool:
        value = run.data.metrics.get(tracking.OBJECTIVE_METRIC)
        if run.info.status != "FINISHED" or value is None or run.data.tags.get(tracking.TAG_STATUS) not in RESULT_STATES:
            return False
        return value <= self.stop_at if self.mode == "min" else value >= self.stop_at

    def closed(self, open_trials: set[int]) -> str | None:
        """Why no further trial may start, or None; `open_trials` are the numbers of the trials started and
        not yet ended (they count at their expected cost, whatever their runs say so far)."""
        if not self.active:
            return None
        runs = self._runs()
        if self.stop_at is not None:
            reached = [r for r in runs if self._reached(r)]
            if reached:
                best = min(reached, key=lambda r: int(r.data.tags[tracking.TAG_TRIAL_NUMBER]))
                return (f"trial {best.data.tags[tracking.TAG_TRIAL_NUMBER]} reached {self.metric} "
                        f"{best.data.metrics[tracking.OBJECTIVE_METRIC]:.6g} (--stop-at {self.stop_at:g})")
        if self.budget_hours is None:
            return None
        ended = [r for r in runs if int(r.data.tags[tracking.TAG_TRIAL_NUMBER]) not in open_trials]
        finished = [r.data.metrics[tracking.WALLCLOCK_METRIC] for r in ended
                    if tracking.WALLCLOCK_METRIC in r.data.metrics]
        if not finished:
            return None
        spent = spent_hours(ended, self.per_trial)
        expected = sum(finished) / len(finished) * self.per_trial / 3600.0
        would = spent + (len(open_trials) + 1) * expected
        if would <= self.budget_hours:
            return None
        name = unit(self.gpus_per_trial)
        return (f"the next trial would take the sweep to {would:.4g} {name}-hours (spent {spent:.4g}, "
                f"{len(open_trials)} running, {expected:.4g} expected per trial), over --budget-gpu-hours "
                f"{self.budget_hours:g}")

    def record(self, reason: str) -> None:
        """Note on the sweep's parent run why it stopped launching (read back for the summary)."""
        self._mlflow().set_tag(self.parent_run_id, tracking.TAG_STOPPED_LAUNCHING, reason)
