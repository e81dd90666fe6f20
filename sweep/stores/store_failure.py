"""A store that stops taking writes mid-sweep (docs/running.md, "When a store fails").

The MLflow store, the Optuna storage and the disk that holds the sweep's folders can each fail under a
running sweep: a read-only or immutable database, a full disk, a database file deleted. Such a failure is
not the trial's: every later trial would hit it too. A trial whose writes fail ends with a `StoreFailure`
(its message starts with `STORE_FAILURE`, which sweep.orchestration.store_stop looks for to stop the sweep),
and the driver ends the sweep with one line naming the store and its error, exit code 1.

A sqlite store whose file is gone is never opened again: opening it would create a fresh, empty database
that the remaining trials fill with records nobody reads (`require_file`).
"""
from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sweep.stores.urls import sqlite_path

STORE_FAILURE = "store failure"
# errno values of a store, or a disk, that refuses writes: not the trial's fault, and the same for the next one.
REFUSED = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EDQUOT, errno.EIO}


class StoreFailure(RuntimeError):
    """A write to one of the sweep's stores failed; the message names the store and the error, on one line."""

    def __init__(self, what: str):
        super().__init__(what)  # Ray rebuilds a trial's error in the driver from its args
        self.what = what

    def __str__(self) -> str:
        return f"{STORE_FAILURE}: {self.what}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _database_error(exc: BaseException) -> str | None:
    """The driver's message of a database that refused an operation (sqlite: read-only, disk full, file
    gone), without SQLAlchemy's statement and parameters."""
    import sqlalchemy.exc

    if isinstance(exc, sqlalchemy.exc.OperationalError):
        return _one_line(exc.orig) if exc.orig is not None else _one_line(exc)
    return None


def store_error(exc: BaseException, mlflow_uri: str, storage: str | None = None, folder: str | None = None
                ) -> str | None:
    """What failed, if `exc` (or what caused it) is a store refusing a write: the store named by its URL, or
    the file a disk refused (or, when the error does not name it, the `folder` written to); None for any other
    error. Without a `storage` (in a trial, which writes no Optuna store) a database error is the MLflow
    store's."""
    from mlflow.exceptions import MlflowException
    from optuna.exceptions import StorageInternalError

    for err in _chain(exc):
        if isinstance(err, StoreFailure):
            return err.what
        if isinstance(err, OSError) and err.errno in REFUSED:
            reason = err.strerror or str(err)
            if err.filename:
                return f"the disk refused a write to {err.filename} ({reason})"
            return f"the disk refused a write ({reason})" + (f" under {folder}" if folder else "")
        reason = _database_error(err)
        if reason is not None:
            return _stopped(_store_of(exc, mlflow_uri, storage), reason)
        if isinstance(err, StorageInternalError) and err.__cause__ is None:
            return _stopped(f"the Optuna store {storage}", _one_line(err))
    if any(isinstance(err, MlflowException) for err in _chain(exc)) and _looks_refused(exc):
        return _stopped(f"the MLflow store {mlflow_uri}", _one_line(exc))
    return None


def _looks_refused(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("readonly database", "disk is full", "unable to open database", "disk i/o error"))


def _store_of(exc: BaseException, mlflow_uri: str, storage: str | None) -> str:
    from mlflow.exceptions import MlflowException

    if storage is None or any(isinstance(err, MlflowException) for err in _chain(exc)):
        return f"the MLflow store {mlflow_uri}"
    return f"the Optuna store {storage}"


def _stopped(store: str, reason: str) -> str:
    return f"{store} stopped taking writes ({reason})"


def require_file(url: str, store: str) -> None:
    """`StoreFailure` when `url` is a sqlite store whose database file is gone: opening it would create a
    new, empty one. `store` names it ("MLflow", "Optuna")."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise StoreFailure(f"the {store} store {url} is gone (no file {path})")


@contextmanager
def guarded(mlflow_uri: str, storage: str | None = None) -> Iterator[None]:
    """Turn a store refusing a write inside the block into a `StoreFailure` naming it."""
    try:
        yield
    except StoreFailure:
        raise
    except Exception as e:
        what = store_error(e, mlflow_uri, storage)
        if what is None:
            raise
        raise StoreFailure(what) from None


def store_errors() -> tuple[type[Exception], ...]:
    """The exception types a store refusing a write raises."""
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException
    from optuna.exceptions import StorageInternalError

    return StoreFailure, OSError, MlflowException, sqlalchemy.exc.SQLAlchemyError, StorageInternalError


def attempt(write: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Run `write` on the way out of a sweep or trial that a store failure ends, where a store may refuse it
    again: returns whether it was written (the first failure is the one to report, not this one)."""
    try:
        write(*args, **kwargs)
    except store_errors():
        return False
    return True
