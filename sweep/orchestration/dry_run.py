"""`sweep run --dry-run`: after every check `sweep run` makes, what the first trials would run, and nothing else.

For each of the first `--trials` trials (the space's points to evaluate, then samples), the values it gets,
the folder it runs in, its command line, the environment variables the sweep sets for it and, in source
mode, the unified diff of its copy of the script, all made by the functions a real trial uses
(sweep.trial.command). The samples come from an in-memory Optuna study with the sweep's sampler and seed,
asked exactly as the sweep's searcher asks, before any trial has a result. Nothing is written (no store,
no `runs/`, no copy of the script) and Ray is never imported.
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import optuna

from sweep.inputs.plan import SweepPlan
from sweep.inputs.source_sites import ScriptSites
from sweep.inputs.trainer_spec import script_of
from sweep.stores.credentials import SECRET_ENV
from sweep.stores.study import make_sampler, next_trial
from sweep.stores.tracking import trial_label
from sweep.trial.command import (
    SOURCE_DIFF,
    TrialSettings,
    build_command,
    edit_script,
    search_settings,
    source_diff,
    trial_env,
    trial_variables,
)


def _sites(settings: TrialSettings, keys: list[str]) -> list[str]:
    """Where each key is written in the script, one line per key."""
    script = script_of(settings.trainer.command, settings.cwd, "trainer.command")
    sites = ScriptSites(script.read_bytes(), script.name)
    lines = [f"source mode: {script} (sha256 {settings.trainer.script_sha256})"]
    for key, site in sites.resolve_all({key: key for key in keys}).items():
        template = settings.trainer.exprs.get(key)
        lines.append(f"  {key}: {sites.describe(site)}, {sites.shown(site)}"
                     + (f" (written as {template})" if template else ""))
    return lines


def _environment(env: dict[str, str]) -> list[str]:
    """The variables `env` sets or changes against this process's environment, and those it leaves out."""
    lines = [f"{k}={v}" for k, v in env.items() if os.environ.get(k) != v]
    lines += [f"{k} (unset)" for k in SECRET_ENV if k in os.environ]
    return lines


def show(plan: SweepPlan, out=None) -> int:
    out = out or sys.stdout
    space = plan.space()
    settings = search_settings(plan, space, experiment_id="")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=make_sampler(plan.sampler, plan.seed),
                                direction="minimize" if space.mode == "min" else "maximize")
    seed = (f"seed {plan.seed}" if plan.seed is not None
            else "no --seed, so a real run samples other values")
    lines = [f"sweep run --dry-run: sweep {plan.name}, {plan.trials} trials of {plan.space_file} "
             f"({space.metric}, {space.mode}); nothing was written and Ray was not started.",
             f"samples: the {plan.sampler} sampler ({seed}), before any trial has a result"]
    if settings.trainer.source_mode:
        lines += _sites(settings, [*space.params, *space.fixed, *([space.seed_site] if space.seed_site else [])])
    print("\n".join(lines), file=out)
    points = len(space.points_to_evaluate)
    for number in range(plan.trials):
        values = next_trial(study, space.points_to_evaluate, space.distributions()).params
        run_dir = Path(settings.run_root) / trial_label(number)
        shown = ", ".join(f"{k}={space.trainer.text(v)}" for k, v in values.items())
        origin = f"points_to_evaluate[{number}]" if number < points else "sampled"
        variables = trial_variables(settings, values, f"{settings.sweep}_{trial_label(number)}", number)
        env = "\n".join(f"  env: {line}" for line in _environment(trial_env(settings, run_dir, variables)))
        print(f"\ntrial {number} ({origin}): {shown}\n  cwd: {settings.cwd}\n"
              f"  command: {shlex.join(build_command(settings, values, run_dir))}\n{env}", file=out)
        if settings.trainer.source_mode:
            edit = edit_script(settings.trainer, settings.cwd, {**settings.fixed, **values})
            print(f"  {SOURCE_DIFF} (sha256 of the copy {edit.sha256}):\n"
                  f"{source_diff(settings, edit, run_dir)}", end="", file=out)
    out.flush()
    return 0
