"""The number a trial is judged by: the space's `metric`, with fixed rules for runs that give none.

- A final event field (`val_loss`, `val_bpb`, `train_time_ms`, `step_avg_ms`, `peak_mem_mib`, `step`):
  its value in the `final` event.
- `roundtrip_val_bpb`: from the `export` event: the score of the parameter-golf track, the last
  evaluation after training of the model as submitted (docs/golf_score.md).
- `eval.<label>.val_bpb` / `eval.<label>.val_loss`: one evaluation the program prints after training, by
  the label the log parser gives it (`eval.quantized_ttt_phased.val_bpb`; sweep.runlog.logparse).
- `time_to_target`: the `train_time_ms` of the first validation (a `val` event or the `final` event)
  whose `val_loss` is at or below the space's `target`.
- A diverged run (final status `diverged`, or a metric that is missing, NaN or infinite: an evaluation
  the run never printed) and a run that never reaches the target get the space's `diverged_value`: by
  default 1e6 when minimising and -1e6 when maximising. It is a large finite number rather than a failure
  so the sampler still learns that the region is bad; a space for the GP sampler, which models values
  directly, may set a gentler one.

`Objective.judge` also says where the value came from (`Judgement.source`: the evaluation's label, `final`,
or why the run got the penalty), which the child run, the leaderboard and `sweep compare` show.

Intermediate results (one per `val` event) carry the metric's field from that event when it has one,
otherwise `val_loss`, so the searcher and the scheduler always find a value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from sweep.errors import InputError
from sweep.runlog.events import RunState
from trainer.protocol import DIVERGED, FINAL_FIELDS

METRICS = FINAL_FIELDS + ("roundtrip_val_bpb", "time_to_target")
EVAL_PREFIX = "eval."
EVAL_FIELDS = ("val_bpb", "val_loss")
EVAL_METRIC = "eval.<label>.val_bpb or eval.<label>.val_loss"
OBJECTIVE_MODES = ("min", "max")
DIVERGED_VALUE = 1.0e6
FROM_FINAL = "final"              # Judgement.source of a final-event metric
FROM_VAL = "val"                  # of time_to_target: the first validation that reached the target
FROM_EXPORT = "export"            # of roundtrip_val_bpb from an export event that does not name its evaluation
PENALTY = "penalty"               # how the source of a penalty starts


class Judgement(NamedTuple):
    value: float        # what the searcher gets
    source: str         # where it came from: an evaluation's label, FROM_*, or "penalty: <why>"


def eval_metric(metric: str) -> tuple[str, str] | None:
    """(label, field) of an `eval.<label>.<field>` metric; None for any other metric."""
    if not metric.startswith(EVAL_PREFIX):
        return None
    label, _, field = metric[len(EVAL_PREFIX):].rpartition(".")
    return label, field


def check_metric(metric: Any, where: str) -> None:
    """An InputError unless `metric` is one of METRICS or a well-formed `eval.<label>.<field>`."""
    known = f"known: {', '.join(METRICS)}, or {EVAL_METRIC} for an evaluation the program prints"
    if not isinstance(metric, str) or not metric.startswith(EVAL_PREFIX):
        if metric not in METRICS:
            raise InputError(where, f"unknown metric {metric!r} ({known})")
        return
    label, field = eval_metric(metric)
    if field not in EVAL_FIELDS or not label:
        raise InputError(where, f"{metric!r} is not {EVAL_METRIC} (e.g. eval.quantized_ttt_phased.val_bpb)")
    words = label.split()
    fixed = "_".join(words).lower()
    if fixed.endswith("_exact"):
        fixed = fixed[: -len("_exact")]
    if fixed != label:
        raise InputError(where, f"{metric!r}: evaluation labels are read as one lower-case word, the words "
                                f"of the log line joined by _ and its _exact copy folded in; write "
                                f"eval.{fixed}.{field}")


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

    @property
    def evaluation(self) -> tuple[str, str] | None:
        """(label, field) of an `eval.<label>.<field>` metric."""
        return eval_metric(self.metric)

    @property
    def from_export(self) -> bool:
        """Whether the value comes from the evaluations after training (the `export` event)."""
        return self.metric == "roundtrip_val_bpb" or self.evaluation is not None

    def intermediate(self, val_event: dict[str, Any]) -> float | None:
        field_name = self.evaluation[1] if self.evaluation else self.metric
        return _finite(val_event.get(field_name if field_name in val_event else "val_loss"))

    def time_to_target(self, run: RunState) -> float | None:
        for event in [*run.vals, *([run.final] if run.final else [])]:
            loss = _finite(event.get("val_loss"))
            if loss is not None and self.target is not None and loss <= self.target:
                return _finite(event.get("train_time_ms"))
        return None

    def _read(self, run: RunState) -> tuple[float | None, str]:
        """The metric as the run reported it (None when it has none) and where it came from, or why not."""
        if self.metric == "time_to_target":
            value = self.time_to_target(run)
            return value, FROM_VAL if value is not None else "target not reached"
        if self.metric == "roundtrip_val_bpb":
            value = _finite((run.export or {}).get("roundtrip_val_bpb"))
            return value, (run.export or {}).get("score_label", FROM_EXPORT) if value is not None else "no score"
        if self.evaluation:
            label, field_name = self.evaluation
            if label not in run.evaluations:
                return None, f"{label} not printed"
            value = _finite(run.evaluations[label].get(field_name))
            return value, label if value is not None else f"{label} printed no finite {field_name}"
        value = _finite((run.final or {}).get(self.metric))
        return value, FROM_FINAL if value is not None else f"no finite {self.metric}"

    def judge(self, run: RunState) -> Judgement:
        """The value handed to the searcher for a run that reached its final event, and its source."""
        if run.status == DIVERGED:
            return Judgement(self.penalty, f"{PENALTY}: diverged")
        value, source = self._read(run)
        return Judgement(self.penalty, f"{PENALTY}: {source}") if value is None else Judgement(value, source)
