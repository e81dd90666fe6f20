"""The training clock: time spent training, paused while validating, the same number on every rank.

Every decision that depends on elapsed time (the wallclock stop, the warmdown under a cap, the untie
point, FP8 schedules) must be taken on the same step by every rank, or one rank's collectives stop
matching the others' (a DistAdam parameter added on one rank only hangs the job). So the run reads one
agreed value per step: the maximum of the ranks' clocks.
"""
from __future__ import annotations

from collections.abc import Callable
from time import perf_counter

import torch
import torch.distributed as dist

from trainer import distributed


class TrainingClock:
    def __init__(self, device: torch.device, sync: Callable[[], None] = lambda: None):
        self.device = device
        self._sync = sync  # waits for queued device work, so the clock measures finished work
        self._ms = 0.0
        self._t0: float | None = None

    def start(self) -> None:
        self._sync()
        self._t0 = perf_counter()

    def pause(self) -> None:
        self._sync()
        self._ms = self.elapsed_ms()
        self._t0 = None

    def elapsed_ms(self) -> float:
        """This rank's training time so far."""
        return self._ms + (0.0 if self._t0 is None else 1000.0 * (perf_counter() - self._t0))

    def agreed_ms(self) -> float:
        """The largest training time over the ranks: a collective, every rank must call it."""
        t = torch.tensor([self.elapsed_ms()], dtype=torch.float64, device=self.device)
        return distributed.all_reduce_(t, dist.ReduceOp.MAX).item()
