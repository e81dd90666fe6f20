"""`sweep resume NAME`: continue a sweep whose driver stopped (interrupted, killed, or its machine lost).

Tune restores its experiment state and restarts the trials that were running; the Optuna study and the
MLflow runs are the sweep's own, so finished trials are neither run nor recorded twice. A store password
kept out of sweep.json comes from SWEEP_STORAGE_PASSWORD / SWEEP_MLFLOW_PASSWORD, or from the drivers'
own files (~/.pgpass, ~/.mlflow/credentials): docs/cluster.md, "Passwords". A source-mode sweep resumes only while
its script is the one it started with (docs/source_mode.md).
"""
from __future__ import annotations

import argparse
import shlex
import sys

from sweep.inputs.plan import DEFAULT_RESULTS_DIR, load_plan
from sweep.orchestration import local_ray
from sweep.report.live_text import display_settings
from sweep.stores import credentials
from sweep.trial.command import edit_script

HELP = "continue a sweep that was interrupted"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the sweep's name (printed when it started)")
    p.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR,
                   help=f"where the sweep keeps its state (default {DEFAULT_RESULTS_DIR})")


def main(args: argparse.Namespace) -> int:
    plan = load_plan(args.results_dir, args.name)
    space = plan.space()
    if space.trainer.source_mode:
        # The trials left edit the script the sweep started with, or none: checked before Ray starts.
        edit_script(space.trainer, plan.cwd, dict(space.fixed))
    display_settings()
    # The stores' passwords from the environment, taken (and a sqlite store's refused) before Ray starts.
    credentials.mlflow_uri(plan.mlflow_uri)
    credentials.storage_url(plan.storage)
    local_ray.listen_on_loopback(plan.address)
    from sweep.orchestration.driver import run_sweep

    return run_sweep(plan, resume=True, command=shlex.join(["sweep", *sys.argv[1:]]))
