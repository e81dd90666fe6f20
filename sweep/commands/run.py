"""`sweep run`: start a sweep. With no arguments, the embedded default: a local Ray instance, CPU trials of
the `tiny` preset on the generated corpus, search_spaces/fp8_scales.yaml, 6 trials, MLflow in
sqlite:///mlflow.db and Optuna in sqlite:///optuna.db next to it.

Every check (the space file, the flags, the trainer accepting each value the space names, or another
program's script reading each key an env-mode space sets, or holding exactly one site for each key a
source-mode space sets, the stores answering, a fixed `data.path` and `data.tokenizer` reading as the
trainer reads them) happens before anything is written or Ray starts; a problem exits with code 2 and a
message naming the file and key, or the flag. `--dry-run` makes every check, then prints what the first
trials would run (sweep.dry_run) and stops there.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import sweep
from sweep.errors import InputError
from sweep.inputs import preflight
from sweep.inputs.input_files import check_output_folder, read_input_bytes
from sweep.inputs.overrides import parse_set
from sweep.inputs.plan import DEFAULT_RESULTS_DIR, FIXED, SEQUENTIAL, SweepPlan, plan_path
from sweep.inputs.resources import (
    CLUSTER_GPUS_PER_TRIAL,
    CPU_PRESET,
    MAX_CONCURRENT,
    MAX_CONFIRMED,
    MAX_FAILURES,
    MAX_SEED,
    MAX_SEEDS,
    MAX_TRIALS,
    in_range,
    resolve,
)
from sweep.inputs.script_keys import SKIP_FLAG, check_script_keys
from sweep.inputs.source_sites import ScriptSites, edit, sha256
from sweep.inputs.space import SearchSpace, check_with_trainer, load_space
from sweep.inputs.trainer_spec import PARAMS_MODES, script_of, split_command
from sweep.orchestration import dry_run, local_ray
from sweep.report.live_text import display_settings
from sweep.report.sequential import ALPHA as CONFIRM_ALPHA
from sweep.report.sequential import POWER as CONFIRM_POWER
from sweep.report.verify_claim import track_min_effect
from sweep.stores import credentials, urls
from sweep.stores import results_dir as results
from sweep.stores.study import SAMPLERS, make_sampler, study_exists
from trainer.config import preset_names

HELP = "run a sweep (no arguments: the embedded CPU default)"
DEFAULT_SPACE = "fp8_scales"
DEFAULT_TRIALS = 6
SCHEDULERS = ("fifo", "asha")
SPACES_DIR = "search_spaces"
DEFAULT_CONFIRM_SEEDS = 8        # the sequential design's maximum
DEFAULT_FIXED_SEEDS = 3          # --confirm-fixed's seeds
CONFIRM_FLAGS = ("--confirm-seeds", "--confirm-fixed", "--min-effect", "--confirm-alpha", "--confirm-power")


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
    p.add_argument("--seed", type=int, help="seed of the sampler; in env mode trial N also gets SEED = this + N "
                                            "(default 0 there)")
    p.add_argument("--name", help="sweep name, also the MLflow experiment (default: <space>-<date>-<time>, "
                                  "in the experiment named after the space)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--mlflow-uri", default=urls.DEFAULT_MLFLOW_URI,
                   help=f"MLflow tracking URI (default {urls.DEFAULT_MLFLOW_URI})")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite optuna.db next to the MLflow database)")
    p.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR,
                   help=f"folder or URI (s3://bucket/tune) for Tune's state and the sweep plan: shared "
                        f"storage on a cluster; the trials' run directories stay on their nodes' disks "
                        f"(default {DEFAULT_RESULTS_DIR})")
    p.add_argument("--trainer-cmd", default="",
                   help="run this command instead of the built-in trainer (default: the space's trainer.command): "
                        "it gets its run directory in $SWEEP_RUN_DIR and the keys as --trainer-params says")
    p.add_argument("--trainer-params", choices=PARAMS_MODES,
                   help="how the command gets the swept and fixed keys: env (environment variables), args "
                        "(key=value arguments) or source (written at their sites in a copy of its script) "
                        "(default: the space's trainer.params, else args)")
    p.add_argument(SKIP_FLAG, dest="check_keys", action="store_false",
                   help="in env mode, do not check that the command's script reads every key (for scripts "
                        "that build the names they read at runtime)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="fix a config key (env mode: an environment variable) for every trial (repeatable)")
    p.add_argument("--max-failures", type=int, default=1, help="retries of a crashed trial (default 1)")
    p.add_argument("--confirm", type=int, metavar="K",
                   help="when the search ends, re-run the top K distinct configurations and the baseline (the "
                        "space's first point) on the same seeds, in rounds of one more seed until each is "
                        "decided, and report which beat the baseline beyond noise (default: the space's "
                        "confirm.top, else no confirmation)")
    p.add_argument("--confirm-seeds", type=int, metavar="N",
                   help=f"the most seeds a configuration runs (with --confirm-fixed: the seeds each runs) (default: "
                        f"the space's confirm.seeds, else {DEFAULT_CONFIRM_SEEDS}; {DEFAULT_FIXED_SEEDS} with "
                        f"--confirm-fixed)")
    p.add_argument("--confirm-fixed", action="store_true", default=None,
                   help="run every configuration on all N seeds at once and judge each at p < alpha, no rounds "
                        "(default: the space's confirm.fixed)")
    p.add_argument("--min-effect", type=float, metavar="X",
                   help="the improvement of the metric worth confirming: a configuration stops as not better once "
                        "an improvement of X becomes implausible (default: the space's confirm.min_effect, else "
                        "0.005 with the golf preset or a roundtrip_val_bpb metric, 0.002 with the speedrun "
                        "preset; required otherwise)")
    p.add_argument("--confirm-alpha", type=float, metavar="A",
                   help=f"the confirmation's one-sided type-I error over all its configurations and rounds "
                        f"(default {CONFIRM_ALPHA:g})")
    p.add_argument("--confirm-power", type=float, metavar="P",
                   help=f"the chance to call a configuration better when it improves by --min-effect; with "
                        f"--confirm-fixed, the power of the smallest difference the report says the seeds detect "
                        f"(default {CONFIRM_POWER:g})")
    p.add_argument("--stop-at", type=float, metavar="VALUE",
                   help="start no more trials once a finished trial's metric reaches VALUE (at or below when "
                        "minimising, at or above when maximising); running trials finish")
    p.add_argument("--budget-gpu-hours", type=float, metavar="H",
                   help="start no trial that would take the sweep's GPU-hours (CPU-hours for CPU trials), spent "
                        "plus expected, over H")
    p.add_argument("--noise-std", type=float, metavar="X",
                   help="the seed std of the metric, for the leaderboard's noise floor (2 x X) when the sweep "
                        "runs no confirmation")
    p.add_argument("--dry-run", action="store_true",
                   help="make every check, then print what each of the first --trials trials would run (its "
                        "command, environment and, in source mode, the diff of its copy of the script) and "
                        "stop: nothing is written and Ray is not started")


def find_space(name: str | None) -> Path:
    name = name or DEFAULT_SPACE
    path = Path(name)
    if path.is_file():
        return path
    if path.suffix == "" and len(path.parts) == 1:
        for root in (Path.cwd(), Path(sweep.__file__).resolve().parent.parent):
            candidate = root / SPACES_DIR / f"{name}.yaml"
            if candidate.is_file():
                return candidate
    if path.exists():
        return path   # not a file: sweep.inputs.input_files says what it is
    raise InputError("--space", f"no such search space file: {name}")


def _check_trainer_cmd(cmd: str, where: str) -> None:
    argv = split_command(cmd, where)
    if shutil.which(argv[0]) is None and not Path(argv[0]).is_file():
        raise InputError(where, f"no such program: {argv[0]}")


def _check_script_reads_keys(space: SearchSpace, where: str) -> None:
    """Env mode: the command's script must read every swept and fixed key (sweep.inputs.script_keys)."""
    script = script_of(space.trainer.command, os.getcwd(), where)
    if script is None:
        print(f"sweep run: note: {where} runs no Python file whose source can be read, so the keys it gets "
              f"are not checked", file=sys.stderr)
        return
    check_script_keys({key: space.where(key) for key in [*space.params, *space.fixed]}, script)


def _check_source_sites(space: SearchSpace, sets: dict, where: str) -> str:
    """Source mode: every swept and fixed key, and the seed's site, names exactly one site of the command's
    script, and the script edits cleanly at the points and at both ends of every range; returns the
    script's sha256, which pins the script every trial edits (sweep.source_sites)."""
    script = script_of(space.trainer.command, os.getcwd(), where)
    if script is None:
        raise InputError(where, "runs no Python file, and source mode writes the keys into the script the "
                                "command runs")
    source = read_input_bytes(script, where)
    sites = ScriptSites(source, script.name)
    keys = {key: f"{space.source}: params.{key}" for key in space.params}
    keys.update({key: f"--set {key}" if key in sets else f"{space.source}: fixed.{key}" for key in space.fixed})
    if space.seed_site:
        keys[space.seed_site] = f"{space.source}: seed"
    sites.resolve_all(keys)
    ends = [{k: p.probes()[i] for k, p in space.params.items()} for i in (0, -1)]
    for values in [*space.points_to_evaluate, *ends]:
        edit(sites, {**space.fixed, **values}, space.trainer.exprs, str(script))
    return sha256(source)


def _check_local_gpus(gpus: int) -> None:
    import torch

    have = torch.cuda.device_count()
    if have < gpus:
        raise InputError("--gpus-per-trial", f"{gpus} GPUs per trial, but this machine has {have}; "
                                             f"use --address to run on a cluster")


def _note_password_on_command_line(args: argparse.Namespace) -> None:
    for flag, value, variable in (("--storage", args.storage, credentials.STORAGE_PASSWORD_ENV),
                                  ("--mlflow-uri", args.mlflow_uri, credentials.MLFLOW_PASSWORD_ENV)):
        if value and credentials.split(value)[1] is not None:
            print(f"sweep run: note: the password in {flag} is kept out of everything the sweep writes, but "
                  f"this machine's process list shows it while the sweep runs; put it in {variable} instead",
                  file=sys.stderr)


def check_new_name(name: str, results_dir: str, storage: str) -> None:
    resume_hint = f"continue it with `sweep resume {name}` or pick another --name"
    if results.exists(plan_path(results_dir, name)):
        raise InputError("--name", f"a sweep named {name!r} already exists in {results_dir}; {resume_hint}")
    db = urls.sqlite_path(storage)
    if db is not None and not db.exists():
        return
    if study_exists(storage, name):
        raise InputError("--name", f"the Optuna storage already holds a study {name!r}; {resume_hint}")


def _positive(value: float | None, flag: str) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InputError(flag, f"must be a number above 0, got {value}")
    return value


def _fraction(value: float, flag: str) -> float:
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise InputError(flag, f"must be a probability between 0 and 1, got {value}")
    return value


def _min_effect(args: argparse.Namespace, space: SearchSpace, preset: str, fixed: bool) -> float | None:
    """The improvement of interest: the flag, the space's, else the record track's (sweep.verify_claim)."""
    if args.min_effect is not None:
        if fixed:
            raise InputError("--min-effect", "the fixed design (--confirm-fixed) has no futility stop to use it")
        return _positive(args.min_effect, "--min-effect")
    if fixed:
        return None
    effect = space.confirm.get("min_effect", track_min_effect(preset, space.metric))
    if effect is None:
        raise InputError("--min-effect", f"the sequential confirmation stops a configuration once an improvement "
                                         f"of --min-effect is implausible, and "
                                         f"{f'the {preset} preset' if preset else 'a command without a preset'} "
                                         f"has no record rule to take it from (golf: 0.005, speedrun: 0.002); give "
                                         f"the smallest improvement of {space.metric} worth confirming, or "
                                         f"--confirm-fixed")
    return effect


def _confirm_settings(args: argparse.Namespace, space: SearchSpace, preset: str) -> dict[str, Any]:
    """The plan's confirmation fields: the flags, else the space's `confirm:` block."""
    top = space.confirm.get("top", 0) if args.confirm is None else in_range(args.confirm, "--confirm", 1, MAX_CONFIRMED)
    if not top:
        for flag in CONFIRM_FLAGS:
            if getattr(args, flag[2:].replace("-", "_")) is not None:
                raise InputError(flag, "only a confirmation uses it: add --confirm K")
        return {}
    fixed = space.confirm.get("fixed", False) if args.confirm_fixed is None else True
    seeds = space.confirm.get("seeds", DEFAULT_FIXED_SEEDS if fixed else DEFAULT_CONFIRM_SEEDS)
    if args.confirm_seeds is not None:
        seeds = in_range(args.confirm_seeds, "--confirm-seeds", 2, MAX_SEEDS)
    seed_key = space.trainer.seed_key
    for where, keys in (("params", space.params), ("fixed", space.fixed), ("trainer.env", space.trainer.env)):
        if seed_key in keys:
            raise InputError("--confirm" if args.confirm else f"{space.source}: confirm",
                             f"the confirmation runs seeds 1..{seeds} through {seed_key}, which "
                             f"{space.source} sets in {where}")
    alpha = CONFIRM_ALPHA if args.confirm_alpha is None else _fraction(args.confirm_alpha, "--confirm-alpha")
    power = CONFIRM_POWER if args.confirm_power is None else _fraction(args.confirm_power, "--confirm-power")
    if power <= alpha:
        raise InputError("--confirm-power", f"must be above --confirm-alpha ({alpha:g}), got {power:g}")
    return {"confirm": top, "confirm_seeds": seeds, "confirm_design": FIXED if fixed else SEQUENTIAL,
            "confirm_min_effect": _min_effect(args, space, preset, fixed), "confirm_alpha": alpha,
            "confirm_power": power}


def build_plan(args: argparse.Namespace) -> SweepPlan:
    """Every check of `sweep run`'s input; nothing is written."""
    space_path = find_space(args.space)
    space = load_space(space_path).with_trainer(args.trainer_cmd or None, args.trainer_params)
    sets = dict(parse_set(item, space.trainer.check_key) for item in args.sets)
    space = space.with_fixed(sets)
    trials = in_range(args.trials, "--trials", 1, MAX_TRIALS)
    if args.seed is not None:
        in_range(args.seed, "--seed", 0, MAX_SEED)
    concurrency = in_range(args.concurrency, "--concurrency", 0, MAX_CONCURRENT)
    trial = resolve(args.gpus_per_trial, args.nproc_per_trial, args.cpus_per_trial, address=args.address or "")
    gpus = trial.gpus
    in_range(args.max_failures, "--max-failures", 0, MAX_FAILURES)
    # Another program is not told a preset; the space's is only recorded.
    preset = args.preset or (space.preset if gpus or space.trainer.command else CPU_PRESET)
    if args.preset and args.preset not in preset_names():   # recorded, and its record rules used, even then
        raise InputError("--preset", f"unknown preset {args.preset!r} (known: {', '.join(preset_names())})")
    confirmation = _confirm_settings(args, space, preset)
    if args.stop_at is not None and not math.isfinite(args.stop_at):
        raise InputError("--stop-at", f"must be a finite value of {space.metric}, got {args.stop_at}")
    _positive(args.budget_gpu_hours, "--budget-gpu-hours")
    _positive(args.noise_std, "--noise-std")
    if args.scheduler == "asha" and "train.val_every" in space.params:
        raise InputError("--scheduler", "asha compares trials at their 1st, 2nd, 4th, ... validation, which a space "
                         "sweeping train.val_every puts at different training steps; use --scheduler fifo")
    if space.trainer.command:
        where = "--trainer-cmd" if args.trainer_cmd else f"{space.source}: trainer.command"
        _check_trainer_cmd(space.trainer.command, where)
        if space.trainer.env_mode and args.check_keys:
            _check_script_reads_keys(space, where)
        if space.trainer.source_mode:
            space = space.pinned(_check_source_sites(space, sets, where))
    else:
        check_with_trainer(space, preset, world_size=trial.nproc)
        preflight.check_data(space.fixed, {k: space.where(k) for k in space.fixed}, on_this_machine=not args.address)
    make_sampler(args.sampler)
    display_settings()
    if gpus and not args.address:
        _check_local_gpus(gpus)
    _note_password_on_command_line(args)
    mlflow_uri = urls.absolute(credentials.mlflow_uri(args.mlflow_uri))
    storage = urls.absolute(credentials.storage_url(args.storage or urls.default_storage(mlflow_uri)))
    preflight.check_mlflow_uri(mlflow_uri)
    preflight.check_storage(storage)
    results_dir = results.normalize(args.results_dir)
    if args.name is not None:
        name = results.check_name(args.name, "--name")
        check_new_name(name, results_dir, storage)
    else:
        name = results.free_name(f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}", results_dir)
    if not results.is_uri(results_dir):
        check_output_folder(Path(results_dir, name), "--results-dir")
    return SweepPlan(
        name=name, experiment=args.name or space.name, space_file=str(space_path.resolve()),
        space_text=space.text, preset=preset, trials=trials, concurrency=concurrency, gpus_per_trial=gpus,
        nproc_per_trial=trial.nproc, cpus_per_trial=trial.cpus, scheduler=args.scheduler, sampler=args.sampler,
        max_failures=args.max_failures, mlflow_uri=mlflow_uri, storage=storage, results_dir=results_dir,
        cwd=os.getcwd(), address=args.address or "", trainer_cmd=space.trainer.command,
        trainer_params=space.trainer.params, source_sha256=space.trainer.script_sha256, seed=args.seed, sets=sets, stop_at=args.stop_at,
        budget_gpu_hours=args.budget_gpu_hours, noise_std=args.noise_std, **confirmation)


def main(args: argparse.Namespace) -> int:
    print(f"sweep run: checking the search space {args.space or DEFAULT_SPACE}, the data and the stores",
          file=sys.stderr, flush=True)
    plan = build_plan(args)
    if args.dry_run:
        return dry_run.show(plan)
    local_ray.listen_on_loopback(plan.address)
    where = f"the Ray cluster at {plan.address}" if plan.address else "a local Ray instance"
    print(f"sweep run: starting {where} and the sweep's records", file=sys.stderr, flush=True)
    from sweep.orchestration.driver import run_sweep

    return run_sweep(plan, command=credentials.redact(shlex.join(["sweep", *sys.argv[1:]])),
                     name_given=args.name is not None)
