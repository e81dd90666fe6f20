"""Ray and the Tune experiment, for the commands that run trials (`sweep run`, `sweep resume`, `sweep verify`).

One place starts Ray, puts a trial on its bundle and builds the Tune experiment's run settings, so a
verification's seeds run exactly as a sweep's trials do: same quiet logs, same retries, no Tune
checkpoints (a trial's state is its MLflow child run: sweep.stores.child_run), the live view as the only output.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
from pathlib import PurePosixPath

import mlflow
import optuna
import ray
from ray import tune

from sweep.errors import InputError
from sweep.inputs.resources import TrialResources
from sweep.stores import credentials
from sweep.stores.tracking import trial_label
from sweep.trial.process import package_pythonpath
from sweep.trial.runner import TRIAL_NUMBER_KEY, TrialSettings, run_trial

# Tune snapshots its state at most this often; a short period keeps what a killed driver loses small.
CHECKPOINT_PERIOD_S = "2"
TUNE_DIR_PREFIX = "tune_"
STORE_ERROR_LOGGER = "mlflow.store.db.utils"


def quiet_environment() -> None:
    """Ray, MLflow and Optuna report through the live view and the summary, not their own logs."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # mlflow sets its loggers up when imported (above), so this has to come after the import.
    for name in (mlflow.__name__, "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow logs each database error with its traceback before raising it; the sweep reports a store that
    # stopped taking writes in one line (sweep.stores.store_failure).
    logging.getLogger(STORE_ERROR_LOGGER).setLevel(logging.CRITICAL)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", CHECKPOINT_PERIOD_S)
    # A failed trial is one line of the live view (sweep.orchestration.live), not Tune's logged traceback.
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    # Tune's newer console output prints its configuration box even at verbose=0; the classic one is silent.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def start_ray(address: str = "") -> bool:
    """Connect to the cluster at `address`, or start a local instance (on 127.0.0.1: sweep.orchestration.local_ray);
    returns whether this call started Ray. Ray's processes start without the stores' passwords, and Ray is
    given none: the trials take the MLflow password from the driver's file (sweep.stores.credentials).

    `ray.init` installs a SIGTERM handler of its own that exits with status 15; the caller's handler is put
    back afterwards, and a SIGTERM during `ray.init` is an interrupt like any other (docs/running.md, "Signals")."""
    if ray.is_initialized():
        return False
    common = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with credentials.withheld():
            if address:
                ray.init(address=address, **common)
            else:
                ray.init(address="local", runtime_env={"env_vars": {"PYTHONPATH": package_pythonpath()}},
                         dashboard_host="127.0.0.1", **common)
    except ConnectionError as e:
        raise InputError("--address", f"cannot connect to the Ray cluster at {address}: {e}") from None
    except SystemExit as e:
        if e.code != signal.SIGTERM:
            raise
        raise KeyboardInterrupt(signal.SIGTERM.name) from None
    finally:
        signal.signal(signal.SIGTERM, handler)
    return True


def trial_trainable(settings: TrialSettings):
    """`run_trial` bound to `settings`, on one placement-group bundle holding the trial's whole node."""
    bundle = TrialResources(settings.gpus, settings.nproc, settings.cpus).bundle()
    return tune.with_resources(tune.with_parameters(run_trial, settings=settings),
                               tune.PlacementGroupFactory([bundle]))


def tune_trial_name(trial) -> str:
    """Tune's name of a trial (in its messages, `tune.get_context().get_trial_name()`): the trial's one name."""
    return trial_label(trial.config[TRIAL_NUMBER_KEY])


def tune_trial_dirname(trial) -> str:
    """Tune's folder of a trial, beside the sweep's `trials/` (it holds none of the trial's files: those are in
    its run directory, `trials/trial_NNNN`)."""
    return f"{TUNE_DIR_PREFIX}{tune_trial_name(trial)}"


def result_number(result) -> int | None:
    """The trial number of an entry of Tune's `ResultGrid`: its config's, or, for a trial that failed before
    its first report (its result then holds no config), its folder's (`tune_dirname`)."""
    number = (result.config or {}).get(TRIAL_NUMBER_KEY)
    if number is not None:
        return int(number)
    found = re.fullmatch(rf"{TUNE_DIR_PREFIX}trial_(\d+)", PurePosixPath(result.path).name)  # trial_label's form
    return int(found.group(1)) if found else None


def new_tuner(settings: TrialSettings, *, name: str, results_dir: str, max_failures: int,
              tune_config: tune.TuneConfig, callbacks: list, param_space: dict | None = None, stop=None):
    """The Tune experiment `<results_dir>/<name>` running `settings`' trials, which Tune names as the sweep
    does."""
    tune_config = dataclasses.replace(tune_config, trial_name_creator=tune_trial_name,
                                      trial_dirname_creator=tune_trial_dirname)
    return tune.Tuner(
        trial_trainable(settings), param_space=param_space, tune_config=tune_config,
        run_config=tune.RunConfig(
            name=name, storage_path=results_dir, verbose=0, stop=stop, callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False)))


def restore_tuner(settings: TrialSettings, path: str, param_space: dict | None = None):
    """The Tune experiment at `path`, continued: its unfinished trials restart, its errored ones stay ended.
    A `param_space` holding functions (`tune.sample_from`) must be given again: Tune saves placeholders
    for them."""
    return tune.Tuner.restore(path, trial_trainable(settings), resume_unfinished=True, resume_errored=False,
                              restart_errored=False, param_space=param_space)
