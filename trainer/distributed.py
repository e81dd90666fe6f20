"""Process-group setup shared by torchrun and single-process runs.

The same code path runs everywhere: nccl when CUDA is used, gloo otherwise, and no process group at all
for a plain single-process launch (the optimizers treat that as rank 0 of 1).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class DeviceError(RuntimeError):
    pass


def int_env(name: str, default: int = 0) -> int:
    return int(os.environ.get(name, default))


def world_size_from_env() -> int:
    return int_env("WORLD_SIZE", 1)


def setup(device_choice: str) -> Dist:
    world_size = world_size_from_env()
    rank, local_rank = int_env("RANK"), int_env("LOCAL_RANK")
    use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise DeviceError("device=cuda was asked for but CUDA is not available")
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def all_reduce_(tensor: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=op)
    return tensor


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
