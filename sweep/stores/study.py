"""Optuna pieces that need no Ray: the samplers a sweep can use and the study storage."""
from __future__ import annotations

import urllib.parse
import warnings

import optuna

from sweep.errors import InputError
from sweep.stores import credentials, lock
from sweep.stores.urls import sqlite_path

SAMPLERS = ("tpe", "cmaes", "gp")


def make_sampler(name: str, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """TPE (multivariate), CMA-ES or Gaussian-process sampler."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(multivariate=True, seed=seed)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
    raise InputError("--sampler", f"unknown sampler {name!r} (known: {', '.join(SAMPLERS)})")


def make_storage(url: str) -> optuna.storages.RDBStorage:
    """The storage at `url` (its password, if any, supplied by sweep.stores.credentials), opened under the store
    lock so that a fresh sqlite file gets its tables from one process at a time."""
    url = credentials.storage_url(url)
    with lock.first_open(url):
        return optuna.storages.RDBStorage(url)


def checked_storage(url: str) -> optuna.storages.RDBStorage:
    """The storage at `url` opened for a check, which writes nothing: an existing sqlite file read-only
    (without the lock file of a first open, which only creating a store needs); a server as `make_storage`."""
    path = sqlite_path(url)
    if path is None:
        return make_storage(url)
    return optuna.storages.RDBStorage(f"sqlite:///file:{urllib.parse.quote(str(path))}?mode=ro&uri=true")


def create_study(url: str, name: str, mode: str, metric: str) -> None:
    """Create the study, its value named `metric` (so Optuna's dashboard and plots label their axes with it);
    optuna.exceptions.DuplicatedStudyError if the storage already has one of that name (the storage's unique
    study names make this the atomic step that claims a name)."""
    study = optuna.create_study(study_name=name, storage=make_storage(url),
                                direction="minimize" if mode == "min" else "maximize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric])


def study_exists(url: str, name: str) -> bool:
    return name in optuna.study.get_all_study_names(storage=checked_storage(url))


def load_study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=make_storage(url))


def next_trial(study: optuna.Study, points: list[dict], distributions: dict) -> optuna.trial.Trial:
    """Ask `study` for its next trial: the next of the space's `points` while any is left, else a sample.
    Each point is enqueued just before the ask that takes it, so no WAITING trial is ever left behind."""
    asked = len(study.get_trials(deepcopy=False))
    if asked < len(points):
        study.enqueue_trial(points[asked])
    return study.ask(distributions)
