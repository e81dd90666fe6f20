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


# The largest counts the commands take: far beyond any real sweep, and small enough that nothing sized by one
# (the live view's time left, Optuna's history, the sequential design's tables) runs out of time or memory.
MAX_TRIALS = 100_000
MAX_CONCURRENT = 10_000         # trials (or seeds) at once
MAX_CONFIRMED = 100             # configurations a confirmation re-runs
MAX_SEEDS = 64                  # seeds of one configuration: the sequential design's tables grow with them
MAX_FAILURES = 100              # retries of one crashed trial
MAX_PER_TRIAL = 1024            # GPUs, processes or CPUs of one trial


def in_range(value: int, flag: str, minimum: int, maximum: int) -> int:
    if not minimum <= value <= maximum:
        raise InputError(flag, f"must be at least {minimum} and at most {maximum}, got {value}")
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
    in_range(gpus, "--gpus-per-trial", 0, MAX_PER_TRIAL)
    nproc = in_range(nproc or gpus or 1, "--nproc-per-trial", 1, MAX_PER_TRIAL)
    cpus = in_range(cpus or nproc, "--cpus-per-trial", 1, MAX_PER_TRIAL)
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
