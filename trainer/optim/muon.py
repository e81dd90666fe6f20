"""Muon: momentum orthogonalised by Newton-Schulz, for the 2-D weight matrices of the blocks.

Distributed: gradients are all-reduced (average) from post-accumulate-grad hooks as soon as they are
ready. In `step()` the parameters of a group are dealt out round-robin (parameter i to rank
i % world_size); the owner keeps its momentum buffer, orthogonalises and updates the parameter, and
an all-gather hands every updated parameter to every rank. The result equals a single-process run,
and every rank ends with identical parameters.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor

from trainer.optim.grad_sync import GradSyncOptimizer, all_gather_single, rank_and_world
from trainer.optim.kernels import xxt

# Quintic iteration X <- aX + (bA + cA²)X with A = XXᵀ, tuned to push singular values near 1 quickly.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: Tensor, steps: int = 5) -> Tensor:
    """Approximate the orthogonal factor of g (last two dims) in bfloat16."""
    a, b, c = NS_COEFFS
    x = g.bfloat16()
    # Iterate on the wide orientation so that A = XXᵀ is the smaller Gram matrix.
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = xxt(x)
        # The Gram matrix is symmetric, so its square is again a symmetric product.
        poly = b * gram + c * xxt(gram)
        x = a * x + poly @ x
    return x.mT if tall else x


class Muon(GradSyncOptimizer):
    """Nesterov momentum, Newton-Schulz orthogonalisation, update scaled by sqrt(max(1, rows/cols)),
    cautious weight decay (decay only where update and parameter have the same sign).

    Group options lr, momentum, weight_decay and ns_steps are read at every step, so the trainer can
    schedule them (e.g. warm momentum up from 0.85 to 0.95).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.02,
        momentum: float = 0.95,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
    ):
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"Muon lr and weight_decay must be >= 0, got {lr}, {weight_decay}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Muon momentum must lie in [0, 1), got {momentum}")
        if ns_steps < 1:
            raise ValueError(f"Muon ns_steps must be >= 1, got {ns_steps}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, ns_steps=ns_steps))

    def _check_group(self, group: dict) -> None:
        super()._check_group(group)
        for p in group["params"]:
            if p.ndim != 2:
                raise ValueError(f"Muon only takes 2-D matrices, got a parameter of shape {tuple(p.shape)}")
        # Updated parameters are shared through one flat buffer per round.
        if len({(p.dtype, p.device) for p in group["params"]}) > 1:
            raise ValueError("Muon needs every parameter of a group to share one dtype and device")

    def _launch_reduction(self, p: Tensor) -> tuple[dist.Work | None, Tensor]:
        _, world = rank_and_world()
        if world == 1:
            return None, p.grad
        return dist.all_reduce(p.grad, op=dist.ReduceOp.AVG, async_op=True), p.grad

    def _update(self, p: Tensor, grad: Tensor, group: dict) -> None:
        momentum = group["momentum"]
        buf = self.state[p].get("momentum_buffer")
        if buf is None:
            buf = self.state[p]["momentum_buffer"] = torch.zeros_like(grad)
        buf.lerp_(grad, 1 - momentum)
        nesterov = grad.lerp(buf, momentum)
        update = newton_schulz(nesterov, group["ns_steps"]).to(p.dtype)
        rows, cols = p.shape
        update *= max(1.0, rows / cols) ** 0.5
        if group["weight_decay"]:
            update.addcmul_(p, (update * p > 0).to(p.dtype), value=group["weight_decay"])
        p.add_(update, alpha=-group["lr"])

    def _update_owned(self, rank: int, world: int):
        gathers = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [self._reduced_grad(p) for p in params]
            for base in range(0, len(params), world):
                chunk = params[base : base + world]
                if rank < len(chunk):
                    self._update(chunk[rank], grads[base + rank], group)
                if world > 1:
                    gathers.append(self._launch_share(chunk, rank, world))
        return gathers

    @staticmethod
    def _launch_share(chunk: list[Tensor], rank: int, world: int):
        """All-gather the chunk's updated parameters, each padded to the chunk's largest size."""
        width = max(p.numel() for p in chunk)
        send = chunk[0].new_zeros(width)
        if rank < len(chunk):
            send[: chunk[rank].numel()] = chunk[rank].view(-1)
        gathered = chunk[0].new_empty(width * world)

        def copy_back() -> None:
            for i, p in enumerate(chunk):
                if i != rank:
                    p.view(-1).copy_(gathered[i * width : i * width + p.numel()])

        return all_gather_single(gathered, send, async_op=True), copy_back
