"""`sweep resume NAME`: continue a sweep whose driver stopped (interrupted, killed, or its machine lost).

Tune restores its experiment state and restarts the trials that were running; the Optuna study and the
MLflow runs are the sweep's own, so finished trials are neither run nor recorded twice (a Tune state cut
short, say by a full disk, is set aside and the sweep goes on from the study and the runs:
sweep.orchestration.tune_state). Before Ray starts or anything is written, the sweep's records are checked:
its Optuna storage and study, its MLflow store and parent run must exist (a store that has vanished is an
error, never created afresh); a sweep that has finished is said to have, and left as it is; a sweep another
driver is running is refused, naming it (sweep.stores.sweep_lock). A store password kept out of sweep.json
comes from SWEEP_STORAGE_PASSWORD / SWEEP_MLFLOW_PASSWORD, or from the drivers' own files (~/.pgpass,
~/.mlflow/credentials): docs/cluster.md, "Passwords". A source-mode sweep resumes only while its script is
the one it started with (docs/source_mode.md).
"""
from __future__ import annotations

import argparse
import shlex
import sys

from sweep.errors import EXIT_OK, InputError
from sweep.inputs.plan import CONFIRM, DEFAULT_RESULTS_DIR, SweepPlan, load_plan
from sweep.orchestration import local_ray
from sweep.report.live_text import display_settings
from sweep.stores import credentials, sweep_lock, urls
from sweep.stores.credentials import redact
from sweep.trial.command import edit_script

HELP = "continue a sweep that was interrupted"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the sweep's name (printed when it started)")
    p.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR,
                   help=f"where the sweep keeps its state (default {DEFAULT_RESULTS_DIR})")


def _store_file(plan: SweepPlan, url: str, what: str) -> None:
    """A sqlite store of the sweep exists: opening a missing one would create an empty store in its place."""
    path = urls.sqlite_path(url)
    if path is not None and not path.is_file():
        raise InputError(plan.name, f"the sweep's {what} {path} does not exist (moved or deleted?); put it back, "
                                    f"or the sweep cannot be resumed")


def _check_study(plan: SweepPlan) -> None:
    from sweep.stores.study import study_exists

    _store_file(plan, plan.storage, "Optuna storage")
    try:
        found = study_exists(plan.storage, plan.name)   # read-only (sweep.stores.study.checked_storage)
    except Exception as e:
        raise InputError(plan.name, f"cannot read the sweep's Optuna storage {redact(plan.storage)}: "
                                    f"{redact(str(e)).splitlines()[0]}") from None
    if not found:
        raise InputError(plan.name, f"the Optuna storage {redact(plan.storage)} holds no study {plan.name!r}")


def _run_status(mlflow_client, plan: SweepPlan, run_id: str, what: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow_client.get_run(run_id)
    except MlflowException as e:
        raise InputError(plan.name, f"the MLflow store {redact(plan.mlflow_uri)} holds no {what} {run_id}: "
                                    f"{redact(e.message).splitlines()[0]}") from None
    if run.info.lifecycle_stage == "deleted":
        raise InputError(plan.name, f"the {what} {run_id} in {redact(plan.mlflow_uri)} was deleted; restore it "
                                    f"(mlflow gc not yet run) to resume")
    return run.info.status


def finished(plan: SweepPlan) -> bool:
    """Check the sweep's records (an InputError for one that is missing); whether the sweep has finished:
    its parent run FINISHED, and its confirmation too when it has one."""
    from sweep.stores import tracking

    _check_study(plan)
    _store_file(plan, plan.mlflow_uri, "MLflow store")
    if not plan.parent_run_id:
        return False   # its driver stopped before the parent run was opened
    mlflow_client = tracking.client(plan.mlflow_uri)
    if _run_status(mlflow_client, plan, plan.parent_run_id, "parent run") != "FINISHED":
        return False
    return not plan.confirm or (plan.stage == CONFIRM and bool(plan.confirm_run_id) and _run_status(
        mlflow_client, plan, plan.confirm_run_id, "confirmation run") == "FINISHED")


def _say_finished(plan: SweepPlan) -> int:
    print(f"sweep {plan.name} has finished (parent run {plan.parent_run_id}); nothing to resume\n"
          f"next: sweep compare {plan.name}{plan.results_flag}", flush=True)
    return EXIT_OK


def main(args: argparse.Namespace) -> int:
    plan = load_plan(args.results_dir, args.name)
    space = plan.space()
    # The stores' passwords from the environment, taken (and one for a sqlite store refused) before the
    # checks below open the stores.
    credentials.mlflow_uri(plan.mlflow_uri)
    credentials.storage_url(plan.storage)
    if finished(plan):
        return _say_finished(plan)
    command = shlex.join(["sweep", *sys.argv[1:]])
    with sweep_lock.take(plan.sweep_dir, plan.name, command):
        # Read again under the lock: a driver that held it until a moment ago may have moved the sweep on.
        plan = load_plan(args.results_dir, args.name)
        if finished(plan):
            return _say_finished(plan)
        if space.trainer.source_mode:
            # The trials left edit the script the sweep started with, or none: checked before Ray starts.
            edit_script(space.trainer, plan.cwd, dict(space.fixed))
        display_settings()
        local_ray.listen_on_loopback(plan.address)
        from sweep.orchestration.driver import run_sweep

        return run_sweep(plan, resume=True, command=command)
