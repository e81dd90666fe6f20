"""What one trial holds (GPUs, torchrun processes, CPUs), the one rule that fills in what a command's flags
leave out, and how many trials fit on the cluster at once. `sweep run` and `sweep verify` both use it.

A trial is one placement-group bundle on one node (docs/cluster.md, "A trial is one whole node"): a GPU trial runs one
process per GPU, a CPU trial one process unless told more, and each process gets a CPU by default.
"""
from __future__ import annotations

from dataclasses import dataclass

from sweep.errors import InputError

CLUSTER_GPUS_PER_TRIAL = 8   # a whole 8-GPU node, the default when a cluster address is given
CPU_PRESET = "tiny"          # the trainer preset of trials without GPUs, unless one is named


def at_least(value: int, flag: str, minimum: int = 1) -> int:
    if value < minimum:
        raise InputError(flag, f"must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class TrialResources:
    gpus: int
    nproc: int
    cpus: int

    def bundle(self) -> dict[str, int]:
        return {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus else {})}


def resolve(gpus: int | None, nproc: int | None, cpus: int | None, *, address: str = "",
            like: TrialResources | None = None) -> TrialResources:
    """The flags' values (None or 0 = not given) completed by the rule: GPUs from `like` (the resources of the
    sweep a command continues) when its GPU count is not given, else 8 with a cluster address and 0 without;
    one process per GPU (or 1); one CPU per process."""
    if gpus is None and like is not None:
        gpus, nproc, cpus = like.gpus, nproc or like.nproc, cpus or like.cpus
    if gpus is None:
        gpus = CLUSTER_GPUS_PER_TRIAL if address else 0
    at_least(gpus, "--gpus-per-trial", minimum=0)
    nproc = at_least(nproc or gpus or 1, "--nproc-per-trial")
    cpus = at_least(cpus or nproc, "--cpus-per-trial")
    if gpus and nproc != gpus:
        raise InputError("--nproc-per-trial", f"{nproc} processes for {gpus} GPUs: a GPU trial runs one per GPU")
    return TrialResources(gpus, nproc, cpus)


def trials_that_fit(trials: int, resources: TrialResources) -> int:
    """How many of `trials` the cluster's CPUs (GPUs for GPU trials) hold at once right now (at least 1)."""
    import ray

    have = ray.cluster_resources()
    if resources.gpus:
        fits = int(have.get("GPU", 0)) // resources.gpus
    else:
        fits = int(have.get("CPU", 1)) // resources.cpus
    return max(1, min(trials, fits))
