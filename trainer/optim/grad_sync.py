"""Gradient synchronisation shared by DistAdam and Muon: reductions launched from post-accumulate-grad hooks.

Without an initialised process group the same code runs as rank 0 of 1.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

# torch 2.13 renamed the single-tensor collectives and deprecated the old names.
reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class GradSyncOptimizer(torch.optim.Optimizer):
    """Base for optimizers whose gradient reduction is launched by post-accumulate-grad hooks.

    Every rank must produce gradients for the same parameters (SPMD training): a parameter whose
    grad is None is skipped on every rank. With gradient accumulation, call `set_grad_sync(False)`
    before all but the last micro-batch's backward; reductions not launched by a hook are launched
    in `step()`.
    """

    def __init__(self, params: Iterable, defaults: dict[str, Any]):
        self._grad_sync = True
        self._pending: dict[Tensor, tuple[dist.Work | None, Tensor]] = {}
        # Completed collectives stay referenced until the next step. Gloo's worker thread otherwise
        # may drop the last reference to a finished work, and freeing its tensors takes the GIL: if
        # that happens while the interpreter shuts down, the process aborts (std::terminate).
        self._finished_works: list[dist.Work] = []
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._check_group(group)
        except ValueError:
            self.param_groups.pop()
            raise
        for p in group["params"]:
            p.register_post_accumulate_grad_hook(self._on_grad_ready)

    def _check_group(self, group: dict[str, Any]) -> None:
        """Raise ValueError for parameters this optimizer cannot handle."""
        for p in group["params"]:
            # Parameters are communicated and updated through flat views.
            if not p.is_contiguous():
                raise ValueError(f"got a non-contiguous parameter of shape {tuple(p.shape)}")

    def set_grad_sync(self, enabled: bool) -> None:
        """Whether the next backward launches gradient reductions from its hooks."""
        self._grad_sync = enabled

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._drain_pending()
        super().zero_grad(set_to_none)

    def _drain_pending(self) -> None:
        for work, _ in self._pending.values():
            self._wait(work)
        self._pending.clear()

    def _wait(self, work: dist.Work | None) -> None:
        if work is not None:
            work.wait()
            self._finished_works.append(work)

    def _release_finished_works(self) -> None:
        self._finished_works = []

    def _on_grad_ready(self, p: Tensor) -> None:
        if not self._grad_sync:
            return
        if p in self._pending:
            raise RuntimeError(
                f"gradient of a parameter of shape {tuple(p.shape)} was reduced twice before step(); "
                "with gradient accumulation call set_grad_sync(False) for all but the last micro-batch"
            )
        self._pending[p] = self._launch_reduction(p)

    def _launch_reduction(self, p: Tensor) -> tuple[dist.Work | None, Tensor]:
        """Start reducing p.grad; returns the async work (None when nothing to wait for) and the
        tensor that holds the result once it completes."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._release_finished_works()
        for work, copy_back in self._update_owned(*rank_and_world()):
            self._wait(work)
            copy_back()
        self._drain_pending()
        return loss

    def _update_owned(self, rank: int, world: int) -> list[tuple[dist.Work | None, Callable[[], None]]]:
        """Update what this rank owns and launch the all-gathers that share it; returns each launched
        work with what to copy into the parameters once it completes."""
        raise NotImplementedError

    def _reduced_grad(self, p: Tensor) -> Tensor:
        work, result = self._pending.pop(p, None) or self._launch_reduction(p)
        self._wait(work)
        return result
