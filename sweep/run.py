"""`sweep run`: start a sweep. With no arguments, the embedded default: a local Ray instance, CPU trials of
the `tiny` preset on the generated corpus, search_spaces/fp8_scales.yaml, 6 trials, MLflow in
sqlite:///mlflow.db and Optuna in sqlite:///optuna.db next to it.

Every check (the space file, the flags, the trainer accepting each value the space names) happens before
anything is written or Ray starts; a problem exits with code 2 and a message naming the file and key.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from sweep import results_dir as results
from sweep.errors import InputError
from sweep.overrides import parse_set
from sweep.plan import DEFAULT_RESULTS_DIR, SweepPlan, plan_path
from sweep.space import check_with_trainer, load_space
from sweep.study import SAMPLERS, make_sampler, study_exists

HELP = "run a sweep (no arguments: the embedded CPU default)"
DEFAULT_SPACE = "fp8_scales"
DEFAULT_TRIALS = 6
CLUSTER_GPUS_PER_TRIAL = 8
CPU_PRESET = "tiny"
SCHEDULERS = ("fifo", "asha")
DEFAULT_MLFLOW_URI = "sqlite:///mlflow.db"
SPACES_DIR = "search_spaces"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", help=f"search space file, or the name of one in {SPACES_DIR}/ (default {DEFAULT_SPACE})")
    p.add_argument("--preset", help="trainer preset (default: the space's; tiny when trials have no GPUs)")
    p.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help=f"number of trials (default {DEFAULT_TRIALS})")
    p.add_argument("--concurrency", type=int, default=0,
                   help="trials at once (default: as many as the cluster's CPUs, or GPUs, hold at the start)")
    p.add_argument("--gpus-per-trial", type=int,
                   help=f"GPUs of one trial (default {CLUSTER_GPUS_PER_TRIAL} with --address, else 0: CPU)")
    p.add_argument("--nproc-per-trial", type=int,
                   help="torchrun processes of one trial (default: one per GPU, or 1 on CPU)")
    p.add_argument("--cpus-per-trial", type=int, help="CPUs reserved for one trial (default: one per process)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="fifo",
                   help="asha stops trials early on their intermediate val_loss (default fifo)")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="Optuna sampler (default tpe, multivariate)")
    p.add_argument("--seed", type=int, help="seed of the sampler")
    p.add_argument("--name", help="sweep name, also the MLflow experiment (default: <space>-<date>-<time>, "
                                  "in the experiment named after the space)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--mlflow-uri", default=DEFAULT_MLFLOW_URI,
                   help=f"MLflow tracking URI (default {DEFAULT_MLFLOW_URI})")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite optuna.db next to the MLflow database)")
    p.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR,
                   help=f"folder or URI (s3://bucket/tune) for Tune's state and the sweep plan: shared "
                        f"storage on a cluster; the trials' run directories stay on their nodes' disks "
                        f"(default {DEFAULT_RESULTS_DIR})")
    p.add_argument("--trainer-cmd", default="",
                   help="run this command instead of the built-in trainer: it gets key=value overrides as "
                        "arguments and its run directory in $SWEEP_RUN_DIR")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="fix a config key for every trial (repeatable)")
    p.add_argument("--max-failures", type=int, default=1, help="retries of a crashed trial (default 1)")


def find_space(name: str | None) -> Path:
    name = name or DEFAULT_SPACE
    path = Path(name)
    if path.is_file():
        return path
    if path.suffix == "" and len(path.parts) == 1:
        for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
            candidate = root / SPACES_DIR / f"{name}.yaml"
            if candidate.is_file():
                return candidate
    raise InputError("--space", f"no such search space file: {name}")


def absolute_sqlite(uri: str) -> str:
    """sqlite URIs with an absolute path: trials run in other processes and other folders."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def default_storage(mlflow_uri: str) -> str:
    if mlflow_uri.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(mlflow_uri[len("sqlite:///"):]).parent / "optuna.db")
    return absolute_sqlite("sqlite:///optuna.db")


def at_least(value: int, flag: str, minimum: int = 1) -> int:
    if value < minimum:
        raise InputError(flag, f"must be at least {minimum}, got {value}")
    return value


def _check_trainer_cmd(cmd: str) -> None:
    try:
        argv = shlex.split(cmd)
    except ValueError as e:
        raise InputError("--trainer-cmd", f"cannot split {cmd!r}: {e}") from None
    if not argv:
        raise InputError("--trainer-cmd", "is empty")
    if shutil.which(argv[0]) is None and not Path(argv[0]).is_file():
        raise InputError("--trainer-cmd", f"no such program: {argv[0]}")


def _check_local_gpus(gpus: int) -> None:
    import torch

    have = torch.cuda.device_count()
    if have < gpus:
        raise InputError("--gpus-per-trial", f"{gpus} GPUs per trial, but this machine has {have}; "
                                             f"use --address to run on a cluster")


def unique_name(base: str, results_dir: str) -> str:
    """`base`, or `base-K` when the results dir already holds a sweep (or verification) folder of that name."""
    name, k = base, 2
    while results.exists(results.join(results_dir, name)):
        name, k = f"{base}-{k}", k + 1
    return name


def _check_new_name(name: str, results_dir: str, storage: str) -> None:
    resume_hint = f"continue it with `sweep resume {name}` or pick another --name"
    if results.exists(plan_path(results_dir, name)):
        raise InputError("--name", f"a sweep named {name!r} already exists in {results_dir}; {resume_hint}")
    db = storage[len("sqlite:///"):] if storage.startswith("sqlite:///") else None
    if db is not None and not Path(db).exists():
        return
    if study_exists(storage, name):
        raise InputError("--name", f"the Optuna storage already holds a study {name!r}; {resume_hint}")


def build_plan(args: argparse.Namespace) -> SweepPlan:
    """Every check of `sweep run`'s input; nothing is written."""
    space_path = find_space(args.space)
    space = load_space(space_path)
    sets = dict(parse_set(item) for item in args.sets)
    space = space.with_fixed(sets)
    trials = at_least(args.trials, "--trials")
    concurrency = at_least(args.concurrency, "--concurrency", minimum=0)
    gpus = args.gpus_per_trial
    if gpus is None:
        gpus = CLUSTER_GPUS_PER_TRIAL if args.address else 0
    at_least(gpus, "--gpus-per-trial", minimum=0)
    nproc = at_least(args.nproc_per_trial or gpus or 1, "--nproc-per-trial")
    cpus = at_least(args.cpus_per_trial or nproc, "--cpus-per-trial")
    if gpus and nproc != gpus:
        raise InputError("--nproc-per-trial", f"{nproc} processes for {gpus} GPUs: a GPU trial runs one per GPU")
    at_least(args.max_failures, "--max-failures", minimum=0)
    preset = args.preset or (space.preset if gpus else CPU_PRESET)
    if args.trainer_cmd:
        _check_trainer_cmd(args.trainer_cmd)
    else:
        check_with_trainer(space, preset, world_size=nproc)
    make_sampler(args.sampler)
    if gpus and not args.address:
        _check_local_gpus(gpus)
    mlflow_uri = absolute_sqlite(args.mlflow_uri)
    storage = absolute_sqlite(args.storage) if args.storage else default_storage(mlflow_uri)
    results_dir = results.normalize(args.results_dir)
    if args.name:
        if not all(c.isalnum() or c in "-_." for c in args.name):
            raise InputError("--name", f"use letters, digits, '-', '_' or '.', got {args.name!r}")
        name = args.name
        _check_new_name(name, results_dir, storage)
    else:
        name = unique_name(f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}", results_dir)
    return SweepPlan(
        name=name, experiment=args.name or space.name, space_file=str(space_path.resolve()),
        space_text=space.text, preset=preset, trials=trials, concurrency=concurrency, gpus_per_trial=gpus,
        nproc_per_trial=nproc, cpus_per_trial=cpus, scheduler=args.scheduler, sampler=args.sampler,
        max_failures=args.max_failures, mlflow_uri=mlflow_uri, storage=storage, results_dir=results_dir,
        cwd=os.getcwd(), address=args.address or "", trainer_cmd=args.trainer_cmd, seed=args.seed, sets=sets)


def main(args: argparse.Namespace) -> int:
    plan = build_plan(args)
    from sweep.driver import run_sweep

    return run_sweep(plan, command=shlex.join(["sweep", *sys.argv[1:]]))
