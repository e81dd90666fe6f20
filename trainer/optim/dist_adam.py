"""DistAdam: Adam with its state sharded across ranks.

Each gradient is reduce-scattered (average) from a post-accumulate-grad hook as soon as backward has
finished accumulating it, so communication overlaps the rest of backward. In `step()` each rank
updates only its shard of every parameter and all-gathers the result. Shards are contiguous slices
of the flattened parameter, padded at the end to a multiple of the world size; for a parameter whose
first dim divides the world size these are exactly its dim-0 blocks. Without an initialised process
group the same code runs as rank 0 of 1.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from trainer.optim.grad_sync import GradSyncOptimizer, all_gather_single, rank_and_world, reduce_scatter_single


def _shard_size(numel: int, world: int) -> int:
    return -(-numel // world)


class DistAdam(GradSyncOptimizer):
    """Adam (decoupled weight decay as in AdamW) with exp_avg / exp_avg_sq sharded across ranks.

    Group options: lr, betas, eps, weight_decay; all are read at every step, so schedules can
    change them between steps.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        if lr < 0:
            raise ValueError(f"DistAdam lr must be >= 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"DistAdam betas must lie in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"DistAdam eps and weight_decay must be >= 0, got {eps}, {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def add_param(self, param: Tensor, lr: float, copy_state_from: Tensor | None = None, **options: Any) -> None:
        """Add one parameter in a group of its own (other options default to the constructor's);
        with copy_state_from, it starts from that parameter's Adam state (step, moments)."""
        self.add_param_group({"params": [param], "lr": lr, **options})
        if copy_state_from is not None:
            self.copy_state(copy_state_from, param)

    def copy_state(self, src: Tensor, dst: Tensor) -> None:
        """Give dst a copy of src's Adam state. Each rank copies its own shard: no communication."""
        if src.shape != dst.shape:
            raise ValueError(f"cannot copy Adam state from shape {tuple(src.shape)} to {tuple(dst.shape)}")
        self.state[dst] = {k: v.clone() for k, v in self.state[src].items()}
        if not self.state[dst]:
            del self.state[dst]

    def full_state(self, param: Tensor) -> dict[str, Tensor]:
        """The parameter's whole Adam state, gathered from all ranks (a collective: every rank must
        call it). Empty before the parameter's first step."""
        state = self.state.get(param)
        if not state:
            return {}
        _, world = rank_and_world()
        full = {"step": state["step"].clone()}
        for key in ("exp_avg", "exp_avg_sq"):
            shard = state[key]
            gathered = shard.new_empty(shard.numel() * world)
            if world == 1:
                gathered.copy_(shard)
            else:
                self._wait(all_gather_single(gathered, shard, async_op=True))
            full[key] = gathered[: param.numel()].view(param.shape)
        return full

    def _launch_reduction(self, p: Tensor) -> tuple[dist.Work | None, Tensor]:
        _, world = rank_and_world()
        flat = p.grad.reshape(-1)
        if world == 1:
            return None, flat
        size = _shard_size(flat.numel(), world)
        flat = F.pad(flat, (0, size * world - flat.numel()))
        shard = flat.new_empty(size)
        return reduce_scatter_single(shard, flat, op=dist.ReduceOp.AVG, async_op=True), shard

    def _param_shard(self, p: Tensor, rank: int, world: int) -> Tensor:
        """This rank's slice of the flattened parameter: a view when the sizes divide, else a
        zero-padded copy."""
        flat = p.detach().view(-1)
        size = _shard_size(flat.numel(), world)
        start = rank * size
        if flat.numel() % world == 0:
            return flat[start : start + size]
        shard = flat.new_zeros(size)
        valid = max(0, min(size, flat.numel() - start))
        shard[:valid] = flat[start : start + valid]
        return shard

    def _update_owned(self, rank: int, world: int):
        gathers = []
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = self._reduced_grad(p).float()
                shard = self._param_shard(p, rank, world)
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(grad)
                    state["exp_avg_sq"] = torch.zeros_like(grad)
                state["step"] += 1
                step = state["step"].item()
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]

                shard32 = shard.float()
                if wd:
                    shard32.mul_(1 - lr * wd)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
                shard32.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))
                if shard32 is not shard:
                    shard.copy_(shard32)

                if world > 1:
                    gathered = shard.new_empty(shard.numel() * world)
                    gathers.append((all_gather_single(gathered, shard, async_op=True),
                                    partial(_copy_prefix, gathered, p)))
        return gathers


def _copy_prefix(gathered: Tensor, p: Tensor) -> None:
    """The gathered shards hold p's elements first, then the padding of the last shard."""
    p.detach().view(-1).copy_(gathered[: p.numel()])
