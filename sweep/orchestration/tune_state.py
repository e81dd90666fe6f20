"""Tune's saved experiment state, read back on a resume, and set aside when it is torn.

Tune's state under `<results-dir>/<name>/` is a cache: the Optuna study and the MLflow runs are the
sweep's record (docs/running.md, "Resuming"). A driver that died while writing it (a full disk, a lost node)
can leave a file cut short, and Tune, finding its newest state unreadable, would start the experiment over
with a searcher that no longer matches the study. So before a restore every state file is read back; if one
does not parse, or the restore itself fails, Tune's files are moved into `torn-<time>/` beside them (kept
for a post-mortem, said on stderr) and the caller starts a fresh experiment, whose searcher adopts the
study's trials (sweep.orchestration.search) and whose trials return a result MLflow already holds without
training again (sweep.stores.child_run).
"""
from __future__ import annotations

import json
import pickle
import sys
import time

from sweep.inputs.plan import PLAN_FILE
from sweep.stores import results_dir as results
from sweep.trial.runner import TrialSettings

SET_ASIDE_PREFIX = "torn-"
# Files Tune writes into the experiment folder, besides the folders of its trials: its state (JSON or
# pickles; the searcher's is sweep.orchestration.search's JSON) and the pickled Tuner.
STATE_SUFFIXES = (".json", ".pkl")
PICKLE_START = b"\x80"   # the PROTO opcode every pickle of protocol 2 or later starts with


def _state_files(path: str) -> list[str]:
    return [name for name in results.file_names(path) if name.endswith(STATE_SUFFIXES) and name != PLAN_FILE]


def _unreadable(path: str, names: list[str]) -> str | None:
    """Why one of the state files does not read back (as JSON, or as the pickle some of Tune's are whatever
    their name says), or None."""
    for name in names:
        location = results.join(path, name)
        try:
            data = results.read_bytes(location)
            if data[:1] == PICKLE_START:
                pickle.loads(data)
            else:
                json.loads(data)
        except Exception as e:   # a file cut short fails in as many ways as JSON and pickle have errors
            return f"{name}: {type(e).__name__}: {e}"
    return None


def set_aside(path: str, names: list[str], why: str) -> str:
    """Move Tune's state files `names` out of the way, into a new folder beside them; returns the folder."""
    folder = results.join(path, f"{SET_ASIDE_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}")
    for name in names:
        results.move(results.join(path, name), results.join(folder, name))
    print(f"sweep: Tune's saved state in {path} is torn ({why}); it is kept in {folder}, and the sweep goes on "
          f"from its Optuna study and MLflow runs", file=sys.stderr, flush=True)
    return folder


def restored(settings: TrialSettings, path: str, param_space: dict | None = None):
    """The Tune experiment at `path` continued, or None when there is none to continue, or its state was torn
    and has been set aside: the caller then starts a fresh one."""
    from ray import tune

    from sweep.orchestration.tuner import restore_tuner

    if not tune.Tuner.can_restore(path):
        return None
    names = _state_files(path)
    why = _unreadable(path, names)
    if why is None:
        try:
            return restore_tuner(settings, path, param_space=param_space)
        except Exception as e:  # a pickle cut short fails in as many ways as pickle has errors
            why = f"the restore failed: {type(e).__name__}: {e}"
    set_aside(path, names, why)
    return None
