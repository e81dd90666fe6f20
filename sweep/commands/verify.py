"""`sweep verify (NAME | --config FILE)`: re-run a configuration over several seeds and test the claim.

With NAME, the configuration is the best finished trial of that sweep (its swept values and the sweep's
fixed keys) and the runs use the sweep's preset, stores, resources and trainer (an env-mode sweep's script
gets every key, and the seed as SEED, in its environment; a source-mode sweep's runs edit a copy of the
script the sweep checked, the seed written at the space's seed site, or, when it names none, run repeats
that differ by nondeterminism); with `--config FILE`, the
keys of a trainer config file. Seeds 0..N-1 (N at most) run as Tune trials of a verification named
`<source>-verify`, on whole nodes like a sweep's trials, in rounds of as many seeds as run at once (the
cluster's, or `--concurrency`; all N with `--fixed`): after each round the group-sequential one-sample t-test
of sweep.sequential says whether the seeds so far beat the target, with its type-I error kept at 0.01
despite the looks, so running until significant is a valid procedure; with `--min-effect X` it also stops
once a mean X below the threshold is implausible. Round r is the Tune experiment `<source>-verify/round-r`.
MLflow gets a parent run with role `verify` in the sweep's experiment (`verify` for a config file) and one
child run per seed; the Markdown evidence (seeds, losses, times, the one-sided one-sample t-test, std/mean,
then the looks with the p-value corrected for them beside the naive one) is printed and logged on the
parent as `verify.md` and as the run's description.

Exit codes: 0 every seed run gave a loss (whatever the verdict: it is in the report and the `p_value`
metrics), 1 some seed did not (crashed, diverged, interrupted), 2 bad input, found before anything runs.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from sweep.errors import EXIT_OK, EXIT_SEEDS_FAILED, InputError
from sweep.inputs import preflight
from sweep.inputs.input_files import check_output_folder, read_input_text
from sweep.inputs.overrides import check_key, format_override, format_value, parse_set
from sweep.inputs.plan import DEFAULT_RESULTS_DIR, load_plan
from sweep.inputs.resources import (
    CLUSTER_GPUS_PER_TRIAL,
    CPU_PRESET,
    MAX_CONCURRENT,
    MAX_FAILURES,
    MAX_SEEDS,
    TrialResources,
    in_range,
    resolve,
)
from sweep.inputs.trainer_spec import TrainerSpec
from sweep.orchestration import local_ray
from sweep.report import sequential, stats
from sweep.report.live_text import display_settings
from sweep.report.sequential import Rounds, Sample
from sweep.report.verify_claim import RESULT_STATES, Claim, SeedResult, judge, make_claim, markdown, verdict_text
from sweep.stores import credentials, sweep_lock, tracking, urls
from sweep.stores import results_dir as results
from sweep.stores.urls import DEFAULT_MLFLOW_URI
from sweep.trial.command import edit_script
from trainer.config import ConfigError, flatten, load_config

HELP = "re-run the best config of a sweep (or a config file) over several seeds and test it (t-test)"
DEFAULT_SEEDS = 3
DEFAULT_EXPERIMENT = "verify"
ROLE = "verify"                                # tracking.TAG_ROLE of the parent run
TAG_SOURCE = "sweep.verify.source"             # the sweep's name, or the config file's path
TAG_BEST_TRIAL = "sweep.verify.trial_number"   # the sweep trial that was verified
TAG_TARGET = "sweep.verify.target"
TAG_LOSS = "sweep.verify.loss"                 # the child-run metric that was tested
TAG_PASSED = "sweep.verify.passed"             # "true" | "false": the sequential test's verdict at 0.01
MARKDOWN_ARTIFACT = "verify.md"


@dataclass
class VerifyPlan:
    name: str
    source: str
    experiment: str
    preset: str
    config: dict[str, Any]         # every key the runs set, besides the seed
    seeds: list[int]               # 0..N-1, N at most; trial i runs seed i
    claim: Claim
    mlflow_uri: str
    results_dir: str               # a local folder or a URI (sweep.stores.results_dir)
    cwd: str
    gpus_per_trial: int
    nproc_per_trial: int
    cpus_per_trial: int
    concurrency: int = 0           # 0 = as many as the cluster holds
    max_failures: int = 1
    address: str = ""
    best_trial: int | None = None  # the sweep trial whose config this is
    trainer: TrainerSpec = field(default_factory=TrainerSpec)   # how the keys, the seed included, reach it
    min_effect: float | None = None   # futility: stop once a mean this far below the threshold is implausible
    power: float = sequential.POWER
    fixed: bool = False            # one round of every seed

    @property
    def design(self) -> sequential.Design:
        return sequential.Design(len(self.seeds), self.min_effect, stats.RECORD_ALPHA, self.power)

    @property
    def runs(self) -> str:
        """What the runs are: seeds, or repeats of a source-mode script that names no seed site."""
        return "seeds" if self.trainer.seed_key else "repeats (the script names no seed site)"

    @property
    def what(self) -> str:
        return self.source if self.best_trial is None else f"trial {self.best_trial} of sweep {self.source}"

    @property
    def sweep_dir(self) -> Path:
        """The verification's folder on this node's disk."""
        return results.local_folder(self.results_dir, self.name)

    @property
    def run_root(self) -> Path:
        return self.sweep_dir / "trials"

    @property
    def resources(self) -> TrialResources:
        return TrialResources(self.gpus_per_trial, self.nproc_per_trial, self.cpus_per_trial)


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("name", nargs="?", help="the sweep whose best trial is verified")
    source.add_argument("--config", help="a trainer config file to verify instead of a sweep's best trial")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                   help=f"the most seeds to run (with --fixed: the seeds) (default {DEFAULT_SEEDS})")
    p.add_argument("--fixed", action="store_true",
                   help="run every seed at once and test once, instead of in rounds of as many seeds as run at once")
    p.add_argument("--min-effect", type=float, metavar="X",
                   help="also stop once a mean X below the threshold becomes implausible (futility); default: "
                        "run until significant or out of seeds")
    p.add_argument("--power", type=float, metavar="P",
                   help=f"with --min-effect: the chance to pass when the mean is X below the threshold (default "
                        f"{sequential.POWER:g})")
    p.add_argument("--target", type=float,
                   help="loss to beat: default 3.28 with the speedrun preset; with the golf preset the current "
                        "record's loss (the seeds must beat it by 0.005 nats); required for other presets")
    p.add_argument("--preset", help=f"trainer preset (default: the sweep's; with --config {CPU_PRESET} on CPU)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="also set a config key for every seed (repeatable)")
    p.add_argument("--experiment",
                   help=f"MLflow experiment (default: the sweep's; {DEFAULT_EXPERIMENT} with --config)")
    p.add_argument("--mlflow-uri",
                   help=f"MLflow tracking URI (default: the sweep's; {DEFAULT_MLFLOW_URI} with --config)")
    p.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR,
                   help=f"where sweeps keep their state, and verifications their runs (default {DEFAULT_RESULTS_DIR})")
    p.add_argument("--address", help="Ray cluster address (default: the sweep's; else a local Ray instance)")
    p.add_argument("--concurrency", type=int, default=0, help="seeds at once (default: as many as the cluster holds)")
    p.add_argument("--gpus-per-trial", type=int,
                   help=f"GPUs of one run (default: the sweep's; with --config {CLUSTER_GPUS_PER_TRIAL} with "
                        f"--address, else 0)")
    p.add_argument("--nproc-per-trial", type=int, help="torchrun processes of one run (default: one per GPU, or 1)")
    p.add_argument("--cpus-per-trial", type=int, help="CPUs reserved for one run (default: one per process)")
    p.add_argument("--trainer-cmd", help="run this command instead of the built-in trainer (see `sweep run`)")
    p.add_argument("--max-failures", type=int, default=1, help="retries of a crashed run (default 1)")


def best_trial(sweep) -> tuple[int, dict[str, Any]]:
    """The sweep's best finished trial: its number and its swept values as Optuna holds them (typed)."""
    from sweep.report.trial_rows import sweep_rows
    from sweep.stores.study import load_study

    finished = [r for r in sweep_rows(sweep) if r.objective is not None and r.status in RESULT_STATES]
    if not finished:
        raise InputError(sweep.name, "the sweep has no finished trial to verify yet")
    number = finished[0].number
    trials = {t.number: t for t in load_study(sweep.storage, sweep.name).get_trials(deepcopy=False)}
    if number not in trials:
        raise InputError(sweep.name, f"trial {number} is in MLflow but not in the Optuna study {sweep.storage}")
    return number, dict(trials[number].params)


def _check_with_trainer(preset: str, config: dict[str, Any], world_size: int, where: str, sets: dict[str, Any]):
    try:
        return load_config(preset, overrides=[format_override(k, v) for k, v in config.items()],
                           world_size=world_size)
    except ConfigError as e:
        raise InputError(f"--set {e.key}" if e.key in sets else where,
                         f"the trainer ({preset} preset) rejects it: {e}") from None


def _config_file_keys(path: Path) -> dict[str, Any]:
    text = read_input_text(path, "--config")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError(str(path), f"not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(str(path), "must be a mapping of trainer config keys")
    return flatten(data)


def build_plan(args: argparse.Namespace) -> VerifyPlan:
    """Every check of `sweep verify`'s input; nothing is written and nothing runs."""
    seeds = list(range(in_range(args.seeds, "--seeds", 2, MAX_SEEDS)))
    in_range(args.concurrency, "--concurrency", 0, MAX_CONCURRENT)
    in_range(args.max_failures, "--max-failures", 0, MAX_FAILURES)
    min_effect, power = _futility(args)
    display_settings()
    sweep = None if args.config else load_plan(args.results_dir, args.name)
    space = None if sweep is None else sweep.space()
    sets = dict(parse_set(item, check_key if space is None else space.trainer.check_key) for item in args.sets)
    results_dir = results.normalize(args.results_dir)
    if args.config:
        path = Path(args.config)
        config = {**_config_file_keys(path), **sets}
        trial = resolve(args.gpus_per_trial, args.nproc_per_trial, args.cpus_per_trial, address=args.address or "")
        if not args.preset and trial.gpus:
            raise InputError("--preset", "name the trainer preset of a config file run on GPUs")
        source, number, where = str(path.resolve()), None, str(path)
        preset, experiment = args.preset or CPU_PRESET, args.experiment or DEFAULT_EXPERIMENT
        mlflow_uri = urls.absolute(credentials.mlflow_uri(args.mlflow_uri or DEFAULT_MLFLOW_URI))
        address, base = args.address or "", path.stem
        trainer = TrainerSpec(args.trainer_cmd or "")
        exports = bool(config.get("export.enabled", False))
    else:
        number, values = best_trial(sweep)
        config = {**space.fixed, **values, **sets}
        trial = resolve(args.gpus_per_trial, args.nproc_per_trial, args.cpus_per_trial, like=sweep.resources)
        source, where = sweep.name, f"trial {number} of sweep {sweep.name}"
        preset, experiment = args.preset or sweep.preset, args.experiment or sweep.experiment
        mlflow_uri = urls.absolute(credentials.mlflow_uri(args.mlflow_uri)) if args.mlflow_uri else sweep.mlflow_uri
        address = sweep.address if args.address is None else args.address
        # The keys and the seed reach another program as they did in the sweep (environment variables, or
        # written into a copy of the very script the sweep edited).
        trainer = replace(space.trainer, command=sweep.trainer_cmd if args.trainer_cmd is None else args.trainer_cmd)
        # Another program's score is the sweep's own objective: one read from its evaluations after
        # training (roundtrip_val_bpb, eval.<label>.*) means it exports.
        exports = bool(config.get("export.enabled", space.objective.from_export))
        base = sweep.name
    if trainer.seed_key in sets:
        raise InputError("--set", f"{trainer.seed_key} is what verify varies (seeds 0..N-1); it cannot be fixed")
    config.pop(trainer.seed_key, None)
    if not trainer.command:
        exports = bool(_check_with_trainer(preset, config, trial.nproc, where, sets).export.enabled)
    if trainer.source_mode:
        edit_script(trainer, os.getcwd(), {**config, **({trainer.seed_key: seeds[-1]} if trainer.seed_key else {})})
    claim = make_claim(preset, args.target, exports)
    preflight.check_mlflow_uri(mlflow_uri)
    if not results.is_uri(results_dir):
        check_output_folder(Path(results_dir), "--results-dir")
    return VerifyPlan(
        name=results.free_name(f"{base}-verify", results_dir), source=source, experiment=experiment, preset=preset,
        config=config, seeds=seeds, claim=claim, mlflow_uri=mlflow_uri, results_dir=results_dir, cwd=os.getcwd(),
        gpus_per_trial=trial.gpus, nproc_per_trial=trial.nproc, cpus_per_trial=trial.cpus, concurrency=args.concurrency,
        max_failures=args.max_failures, address=address, best_trial=number, trainer=trainer,
        min_effect=min_effect, power=power, fixed=args.fixed)


def _futility(args: argparse.Namespace) -> tuple[float | None, float]:
    if args.min_effect is not None and not (math.isfinite(args.min_effect) and args.min_effect > 0):
        raise InputError("--min-effect", f"must be a number above 0, got {args.min_effect}")
    if args.power is None:
        return args.min_effect, sequential.POWER
    if args.min_effect is None:
        raise InputError("--power", "only the futility stop uses it: add --min-effect")
    if not (math.isfinite(args.power) and stats.RECORD_ALPHA < args.power < 1.0):
        raise InputError("--power", f"must be a probability between {stats.RECORD_ALPHA:g} and 1, got {args.power}")
    return args.min_effect, args.power


def seed_results(mlflow_client, experiment_id: str, parent_run_id: str, plan: VerifyPlan,
                 seeds: list[int]) -> list[SeedResult]:
    """Each of `seeds`' final loss and training time as MLflow holds them (the child run of trial i ran seed i)."""
    from sweep.orchestration.seed_grid import seed_results as results_by_trial

    found = results_by_trial(mlflow_client, experiment_id, parent_run_id, {s: s for s in seeds},
                             plan.claim.loss_metric)
    return [found[s] for s in seeds]


def _open_parent(plan: VerifyPlan, mlflow_client, experiment_id: str, command: str) -> str:
    tags = {TAG_SOURCE: plan.source, TAG_TARGET: repr(plan.claim.target), TAG_LOSS: plan.claim.loss_metric}
    if plan.best_trial is not None:
        tags[TAG_BEST_TRIAL] = str(plan.best_trial)
    run_id = tracking.open_parent(mlflow_client, experiment_id, plan.name, ROLE, plan.preset, plan.address, command,
                                  tags)
    tracking.log_params(mlflow_client, run_id, {k: format_value(v) for k, v in plan.config.items()})
    tracking.ensure_trials_view(mlflow_client, experiment_id, plan.name, [plan.trainer.seed_key], "min")
    return run_id


def _round_size(plan: VerifyPlan) -> int:
    """Seeds a round runs: all with --fixed, else as many as run at once; two at least (a t-test's)."""
    from sweep.inputs.resources import trials_that_fit

    if plan.fixed:
        return len(plan.seeds)
    return max(2, plan.concurrency or trials_that_fit(len(plan.seeds), plan.resources))


def _run_rounds(plan: VerifyPlan, settings, mlflow_client, experiment_id: str) -> tuple[Rounds, list[SeedResult]]:
    """Run the seeds in rounds until the sequential test decides or they run out; returns the rounds and
    the results of the seeds run."""
    import ray

    from sweep.orchestration.seed_grid import run_grid
    from sweep.orchestration.tuner import start_ray

    started = start_ray(plan.address)
    rounds, ran = Rounds(plan.design), []
    try:
        size, seed_key = _round_size(plan), plan.trainer.seed_key
        while rounds.running and len(ran) < len(plan.seeds):
            batch = plan.seeds[len(ran):len(ran) + size]
            ran += batch
            # Trial i runs seed i; its number names the run directory and finds its MLflow child run.
            # A script with no seed site runs repeats: trial i then only numbers run i.
            run_grid(settings, {s: {seed_key: s} if seed_key else {} for s in batch}, name=f"round-{rounds.round + 1}",
                     results_dir=results.join(plan.results_dir, plan.name), concurrency=plan.concurrency,
                     max_failures=plan.max_failures, metric="val_loss", mode="min")
            found = seed_results(mlflow_client, experiment_id, settings.parent_run_id, plan, ran)
            margins = tuple(plan.claim.threshold - r.loss for r in found if r.usable)
            rounds.add({0: Sample(margins)}, last=len(ran) == len(plan.seeds))
            print(f"verify {plan.name}: after round {rounds.round} ({len(ran)} of at most {len(plan.seeds)} seeds): "
                  f"{verdict_text(rounds)}", flush=True)
        return rounds, found
    finally:
        if started:
            ray.shutdown()


def run_verify(plan: VerifyPlan, command: str = "") -> int:
    """Run the seeds, then report; returns the exit code (0 when every seed gave a loss)."""
    from sweep.inputs.objective import Objective
    from sweep.orchestration.tuner import quiet_environment
    from sweep.trial.command import plan_settings

    quiet_environment()
    mlflow_client = tracking.client(plan.mlflow_uri)
    experiment_id = tracking.ensure_experiment(mlflow_client, plan.mlflow_uri, plan.experiment)
    parent = _open_parent(plan, mlflow_client, experiment_id, command)
    runs = f"`{plan.trainer.command}`" if plan.trainer.command else f"{plan.preset} preset"
    print(f"verify {plan.name}: at most {len(plan.seeds)} {plan.runs} of {plan.what} ({runs}), {plan.claim.describe()}",
          flush=True)
    settings = plan_settings(plan, experiment_id, parent, Objective("val_loss"), plan.config, plan.trainer)
    outcome = "FAILED"
    try:
        with credentials.handed_to_trials(plan.mlflow_uri, plan.sweep_dir):
            rounds, results = _run_rounds(plan, settings, mlflow_client, experiment_id)
        report = markdown(f"Verification of {plan.what}: {len(results)} of at most {len(plan.seeds)} {plan.runs}",
                          plan.claim, results, rounds)
        print("\n" + report, flush=True)
        _log_report(mlflow_client, parent, plan.claim, results, rounds, report)
        complete = all(r.usable for r in results)
        outcome = "FINISHED" if complete else "FAILED"
        print(f"MLflow: experiment {plan.experiment!r}, verify run {parent}")
        print("\n".join(tracking.ui_lines(plan.mlflow_uri, experiment_id, plan.name)), flush=True)
        return EXIT_OK if complete else EXIT_SEEDS_FAILED
    finally:
        mlflow_client.set_terminated(parent, outcome)


def _log_report(mlflow_client, run_id: str, claim: Claim, results: list[SeedResult], rounds: Rounds,
                report: str) -> None:
    from mlflow.entities import RunTag

    mlflow_client.log_text(run_id, report, MARKDOWN_ARTIFACT)
    tags = [RunTag(tracking.NOTE_TAG, tracking.clip(report)),
            RunTag(TAG_PASSED, str(rounds.courses[0].state == sequential.BETTER).lower())]
    verdict = judge(claim, results)
    metrics = {"threshold": claim.threshold, "seeds_with_loss": sum(r.usable for r in results),
               "seeds_run": len(results), "rounds": rounds.round, "p_value_sequential": rounds.sequential_p()[0]}
    if verdict is not None:
        metrics.update(p_value=verdict.p_value, mean_val_loss=verdict.mean, std_val_loss=verdict.std)
        if verdict.mean_time_s is not None:
            metrics.update(mean_train_time_s=verdict.mean_time_s, std_train_time_s=verdict.std_time_s)
    mlflow_client.log_batch(run_id, tags=tags)
    tracking.log_metrics(mlflow_client, run_id, metrics)


def main(args: argparse.Namespace) -> int:
    plan = build_plan(args)
    command = credentials.redact(shlex.join(["sweep", *sys.argv[1:]]))
    # The verification's folder is its own: a second verify that picked the same free name at the same
    # moment stops here rather than share its Tune state (sweep.stores.sweep_lock).
    with sweep_lock.take(results.local_folder(plan.results_dir, plan.name), plan.name, command, "verification"):
        local_ray.listen_on_loopback(plan.address)
        return run_verify(plan, command=command)
