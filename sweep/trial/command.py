"""What a trial runs: its command line, its environment, the params its child run records and, in source
mode, its edited copy of the script. No Ray here, so that `sweep run --dry-run` shows exactly what the
trials of a real run get.

The built-in trainer is `torchrun --standalone --nproc_per_node=N -m trainer --preset P --run-dir DIR
key=value...`, and every one-node torchrun runs with its stores on 127.0.0.1 (sweep.trial.loopback_torchrun); another program (sweep.trainer_spec) gets its run directory in `$SWEEP_RUN_DIR` and the keys
as `key=value` arguments (args mode), as environment variables with the trial's `RUN_ID` and `SEED`
(env mode), or written into a copy of its script (source mode, docs/source_mode.md).

A source-mode trial's copy lives in `<run dir>/source/`, under the script's own name, beside a link to
every other entry of the script's folder (its `__pycache__` aside, so that the bytecode of the modules the
copy imports is written beside the copy): the copy imports the modules beside the original and reads the
files beside `sys.argv[0]` as the original would, the command runs the copy in place of the original, from
the same folder, so whatever the script writes relative to its working folder (`logs/`) lands where it
would, and nothing is ever written into the script's folder.
"""
from __future__ import annotations

import os
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.errors import InputError
from sweep.inputs.objective import Objective
from sweep.inputs.overrides import format_override, format_overrides
from sweep.inputs.source_sites import Edit, ScriptSites, edit, sha256
from sweep.inputs.trainer_spec import SEED_ENV, TrainerSpec, script_of, with_script
from sweep.stores.credentials import SECRET_ENV, password_file
from sweep.trial.loopback_torchrun import command as torchrun
from sweep.trial.loopback_torchrun import loopback
from sweep.trial.process import package_pythonpath

RUN_DIR_ENV = "SWEEP_RUN_DIR"
RUN_ID_ENV = "RUN_ID"                     # the trial's identity in env mode, with SEED_ENV
COMPILE_CACHE = "gpt-sweep-compile-cache"
TORCHRUN_LOG_DIR_ENV = "PET_LOG_DIR"
SOURCE_DIR = "source"                     # a source-mode trial's copy of the script, in its run directory
SOURCE_DIFF = "source.diff"               # the child run's artifact: the copy against the original
SOURCE_SHA_PARAM = "source.sha256"        # the child run's param: the copy's sha256
SKIPPED_ENTRIES = ("__pycache__",)


@dataclass(frozen=True)
class TrialSettings:
    """Everything a trial needs besides its swept values; the same for every trial of a sweep."""

    sweep: str
    preset: str
    objective: Objective
    run_root: str
    cwd: str
    mlflow_uri: str
    experiment_id: str
    parent_run_id: str
    fixed: dict[str, Any] = field(default_factory=dict)
    nproc: int = 1
    gpus: int = 0
    cpus: int = 1
    trainer: TrainerSpec = field(default_factory=TrainerSpec)
    seed: int = 0                 # env mode: trial N gets SEED = seed + N
    mlflow_password_file: str = ""  # where the driver hands over the MLflow password (sweep.stores.credentials)
    poll_s: float = 0.2
    flush_s: float = 10.0


def plan_settings(plan, experiment_id: str, parent_run_id: str, objective: Objective, fixed: dict[str, Any],
                  trainer: TrainerSpec, seed: int = 0) -> TrialSettings:
    """The settings of the trials a plan runs (a sweep's SweepPlan, or verify's VerifyPlan): its name,
    preset, folders, stores and resources, under the MLflow run `parent_run_id`; the MLflow password, if the
    driver has one, in a file of the plan's folder (written while the driver runs trials)."""
    return TrialSettings(
        sweep=plan.name, preset=plan.preset, objective=objective, run_root=str(plan.run_root.resolve()),
        cwd=plan.cwd, mlflow_uri=plan.mlflow_uri, experiment_id=experiment_id, parent_run_id=parent_run_id,
        fixed=dict(fixed), nproc=plan.nproc_per_trial, gpus=plan.gpus_per_trial, cpus=plan.cpus_per_trial,
        trainer=trainer, seed=seed,
        mlflow_password_file=password_file(plan.mlflow_uri, plan.sweep_dir))


def search_settings(plan, space, experiment_id: str) -> TrialSettings:
    """The settings of the trials of `plan`'s search (a sweep.plan.SweepPlan of `space`)."""
    return plan_settings(plan, experiment_id, plan.parent_run_id, space.objective, space.fixed, space.trainer,
                         plan.seed or 0)


def copy_path(settings: TrialSettings, run_dir: Path) -> Path:
    """Where a source-mode trial's copy of the script is."""
    script = script_of(settings.trainer.command, settings.cwd, "trainer.command")
    return run_dir / SOURCE_DIR / script.name


def build_command(settings: TrialSettings, values: dict[str, Any], run_dir: Path) -> list[str]:
    if settings.trainer.source_mode:
        return loopback(with_script(settings.trainer.command, settings.cwd, copy_path(settings, run_dir),
                                    "trainer.command"))
    if settings.trainer.command:
        overrides = [] if settings.trainer.env_mode else format_overrides(settings.fixed, values)
        return loopback([*shlex.split(settings.trainer.command), *overrides])
    overrides = format_overrides(settings.fixed, values)
    if "compile.cache_dir" not in settings.fixed:
        # One folder per node for all trials, so later trials reuse what earlier ones compiled.
        overrides.append(format_override("compile.cache_dir", str(Path(tempfile.gettempdir()) / COMPILE_CACHE)))
    return torchrun(["--standalone", f"--nproc_per_node={settings.nproc}", "-m", "trainer",
                     "--preset", settings.preset, "--run-dir", str(run_dir), *overrides])


def trial_variables(settings: TrialSettings, values: dict[str, Any], trial_name: str, number: int) -> dict[str, str]:
    """The environment variables the sweep sets for the command: `trainer.env`, and in env mode also the
    trial's identity and every fixed and swept key (the space's own values win over the identity)."""
    spec = settings.trainer
    if not spec.env_mode:
        return dict(spec.env)
    identity = {RUN_ID_ENV: trial_name, SEED_ENV: str(settings.seed + number)}
    return {**identity, **spec.env, **{k: spec.text(v) for k, v in {**settings.fixed, **values}.items()}}


def trial_env(settings: TrialSettings, run_dir: Path, variables: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}  # the stores are the sweep's business
    env["PYTHONPATH"] = package_pythonpath()
    # Each rank gets its share of the trial's CPUs; torch would otherwise start one thread per core of
    # the node in every rank of every trial.
    env["OMP_NUM_THREADS"] = str(max(1, settings.cpus // settings.nproc))
    # torchrun (`--log-dir`, read from PET_LOG_DIR) otherwise leaves an empty torchelastic_* folder per run in
    # the temp folder; /dev/null is its own "no log folder" (a program's output goes to output.log regardless).
    env.setdefault(TORCHRUN_LOG_DIR_ENV, os.devnull)
    env.update(variables)
    env[RUN_DIR_ENV] = str(run_dir)
    return env


def trial_params(settings: TrialSettings, values: dict[str, Any], variables: dict[str, str],
                 source: Edit | None = None) -> dict[str, str]:
    """The child run's params: in env mode every variable the command got, as it got it; otherwise every
    fixed and swept key (in source mode as written into the script), plus `trainer.env`, and in source mode
    the sha256 of the edited copy."""
    if settings.trainer.env_mode:
        return dict(variables)
    params = {**{k: settings.trainer.text(v) for k, v in {**settings.fixed, **values}.items()}, **variables}
    if source is not None:
        params[SOURCE_SHA_PARAM] = source.sha256
    return params


def edit_script(trainer: TrainerSpec, cwd: str, values: dict[str, Any]) -> Edit:
    """The edit of the script `trainer.command` runs from `cwd` (source mode), `values` (every fixed and swept
    key) written at their sites. The script must still be the one the sweep checked."""
    script = script_of(trainer.command, cwd, "trainer.command")
    try:
        source = script.read_bytes()
    except OSError as e:
        raise InputError(str(script), f"cannot read it: {e.strerror or e}") from None
    if trainer.script_sha256 and sha256(source) != trainer.script_sha256:
        raise InputError(str(script), f"has changed since the sweep checked it (sha256 {trainer.script_sha256}, "
                                      f"now {sha256(source)}); its trials edit the script it checked: put that "
                                      f"one back, or start a new sweep")
    return edit(ScriptSites(source, script.name), values, trainer.exprs, str(script))


def source_diff(settings: TrialSettings, source: Edit, run_dir: Path) -> str:
    """The unified diff from the script to the trial's copy."""
    script = script_of(settings.trainer.command, settings.cwd, "trainer.command")
    return source.diff(str(script), str(copy_path(settings, run_dir)))


def write_copy(settings: TrialSettings, source: Edit, run_dir: Path) -> Path:
    """Write the trial's copy of the script into its run directory, beside links to the entries beside the
    original (the module docstring says why); returns the copy's path."""
    script = script_of(settings.trainer.command, settings.cwd, "trainer.command").absolute()
    copy = copy_path(settings, run_dir)
    copy.parent.mkdir(parents=True)
    for entry in script.parent.iterdir():
        if entry.name != script.name and entry.name not in SKIPPED_ENTRIES:
            (copy.parent / entry.name).symlink_to(entry)
    copy.write_bytes(source.edited)
    copy.chmod(script.stat().st_mode & 0o777)
    return copy
