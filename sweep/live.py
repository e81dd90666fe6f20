"""The live view of a running sweep: one short line whenever the picture changes, instead of Ray's tables.

    [  1:23] 6 trials: 2 running, 3 done, 1 pruned, 0 failed, 0 pending | best val_loss 4.81234 (trial 2)
"""
from __future__ import annotations

import sys
import time

from ray.tune import Callback

from sweep.trial import FINAL_KEY, OBJECTIVE_KEY, TRIAL_NUMBER_KEY


def trial_state(status: str, last_result: dict) -> str:
    """running | pending | done | pruned | failed, from a Tune trial's status and last result."""
    if status == "ERROR":
        return "failed"
    if status == "TERMINATED":
        return "done" if last_result.get(FINAL_KEY) else "pruned"
    return "running" if status == "RUNNING" else "pending"


def best_of(results: list[dict], mode: str) -> dict | None:
    finished = [r for r in results if r.get(FINAL_KEY) and r.get(OBJECTIVE_KEY) is not None]
    if not finished:
        return None
    pick = min if mode == "min" else max
    return pick(finished, key=lambda r: r[OBJECTIVE_KEY])


class LiveView(Callback):
    def __init__(self, metric: str, mode: str, total: int):
        self.metric = metric
        self.mode = mode
        self.total = total
        self._start = time.monotonic()
        self._last = ""

    def setup(self, **info) -> None:
        self._start = time.monotonic()
        self._last = ""

    def line(self, trials) -> str:
        counts = dict.fromkeys(("running", "done", "pruned", "failed", "pending"), 0)
        for t in trials:
            counts[trial_state(t.status, t.last_result or {})] += 1
        counts["pending"] += max(0, self.total - len(trials))
        text = f"{self.total} trials: " + ", ".join(f"{n} {k}" for k, n in counts.items())
        best = best_of([t.last_result or {} for t in trials], self.mode)
        if best is not None:
            text += f" | best {self.metric} {best[OBJECTIVE_KEY]:.6g} (trial {best.get(TRIAL_NUMBER_KEY)})"
        return text

    def on_step_end(self, iteration: int, trials, **info) -> None:
        text = self.line(trials)
        if text != self._last:
            self._last = text
            elapsed = int(time.monotonic() - self._start)
            print(f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {text}", file=sys.stdout, flush=True)
