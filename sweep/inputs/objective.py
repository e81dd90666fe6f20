"""The number a trial is judged by: the space's `metric`, with fixed rules for runs that give none.

- A final event field (`val_loss`, `val_bpb`, `train_time_ms`, `step_avg_ms`, `peak_mem_mib`, `step`):
  its value in the `final` event.
- `roundtrip_val_bpb`: from the `export` event (the score of the parameter-golf track).
- `time_to_target`: the `train_time_ms` of the first validation (a `val` event or the `final` event)
  whose `val_loss` is at or below the space's `target`.
- A diverged run (final status `diverged`, or a metric that is missing, NaN or infinite) and a run that
  never reaches the target get the space's `diverged_value`: by default 1e6 when minimising and -1e6
  when maximising. It is a large finite number rather than a failure so the sampler still learns that
  the region is bad; a space for the GP sampler, which models values directly, may set a gentler one.

Intermediate results (one per `val` event) carry the metric's field from that event when it has one,
otherwise `val_loss`, so the searcher and the scheduler always find a value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sweep.runlog.events import RunState
from trainer.protocol import DIVERGED, FINAL_FIELDS

METRICS = FINAL_FIELDS + ("roundtrip_val_bpb", "time_to_target")
OBJECTIVE_MODES = ("min", "max")
DIVERGED_VALUE = 1.0e6


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str = "min"
    target: float | None = None
    diverged_value: float | None = None

    @property
    def penalty(self) -> float:
        if self.diverged_value is not None:
            return self.diverged_value
        return DIVERGED_VALUE if self.mode == "min" else -DIVERGED_VALUE

    def intermediate(self, val_event: dict[str, Any]) -> float | None:
        field_name = self.metric if self.metric in val_event else "val_loss"
        return _finite(val_event.get(field_name))

    def time_to_target(self, run: RunState) -> float | None:
        for event in [*run.vals, *([run.final] if run.final else [])]:
            loss = _finite(event.get("val_loss"))
            if loss is not None and self.target is not None and loss <= self.target:
                return _finite(event.get("train_time_ms"))
        return None

    def raw_value(self, run: RunState) -> float | None:
        """The metric as the run reported it, or None when it has none."""
        if self.metric == "time_to_target":
            return self.time_to_target(run)
        if self.metric == "roundtrip_val_bpb":
            return _finite((run.export or {}).get("roundtrip_val_bpb"))
        return _finite((run.final or {}).get(self.metric))

    def final(self, run: RunState) -> float:
        """The value handed to the searcher for a run that reached its final event."""
        if run.status == DIVERGED:
            return self.penalty
        value = self.raw_value(run)
        return self.penalty if value is None else value
