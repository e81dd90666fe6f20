"""One process at a time opens a sqlite store for the first time (docs/records.md, "Files").

MLflow creates and migrates a fresh sqlite database when a process first opens it, and Optuna creates its
tables; two sweeps started together on a fresh folder would do both at once and leave a half-migrated
`mlflow.db` (`_alembic_tmp_*` tables) that no later sweep can open. So every process of a sweep (the
driver, each trial) opens a sqlite store under an exclusive `flock` on `<database>.lock` beside it.
The lock is a separate file: SQLite's own locks are POSIX locks on the database file, which closing any
other descriptor of that file in the process would release.
"""
from __future__ import annotations

import fcntl
from contextlib import contextmanager

from sweep.stores.urls import sqlite_path

LOCK_SUFFIX = ".lock"


@contextmanager
def first_open(url: str):
    """Hold the store's lock; a no-op for a server database, shared between machines a file lock does not reach."""
    path = sqlite_path(url)
    if path is None:
        yield
        return
    with open(path.with_name(path.name + LOCK_SUFFIX), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
