"""The sqlite files of the stores, checked before a command opens them (docs/records.md, "Files").

Given a file that is not theirs, MLflow and Optuna do harm or take long: MLflow migrates any SQLite
database into an MLflow store and retries a file it cannot open for minutes; both fail deep inside a
command on a file that is not a database. So an existing store file is first opened here, read-only and
by SQLite alone: it must be readable, an SQLite database, and hold the tables of the store it is named
as. Nothing is written, created or migrated. An empty file is a store not made yet.
"""
from __future__ import annotations

import os
import sqlite3
import urllib.parse
from pathlib import Path

from sweep.errors import InputError
from sweep.stores.urls import sqlite_path

MLFLOW, OPTUNA = "MLflow", "Optuna"
SQLITE_HEADER = b"SQLite format 3\x00"
# Tables each store creates first and never drops, and what a user calls it.
STORES = {MLFLOW: ({"alembic_version", "experiments", "runs"}, "an MLflow tracking store (--mlflow-uri)"),
          OPTUNA: ({"studies", "version_info"}, "an Optuna storage (--storage)")}


def tables(path: Path, where: str) -> set[str]:
    """The tables of the SQLite database at `path`; none for an empty file."""
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except IsADirectoryError:
        raise InputError(where, f"{path} is a folder, not a database file") from None
    except OSError as e:
        raise InputError(where, f"cannot read {path}: {e.strerror or e}") from None
    if not header:
        return set()
    if header != SQLITE_HEADER:
        raise InputError(where, f"{path} is not an SQLite database")
    try:
        db = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True)
        try:
            return {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
        finally:
            db.close()
    except sqlite3.Error as e:
        raise InputError(where, f"{path} is not a readable SQLite database: {e}") from None


def check_store_file(path: Path, kind: str, where: str, writable: bool = False) -> None:
    """The existing file at `path` is a readable store of `kind` (MLFLOW or OPTUNA), or empty; `writable`: the
    command will write into it."""
    found = tables(path, where)
    needed, what = STORES[kind]
    if found and not needed <= found:
        other = [w for k, (t, w) in STORES.items() if k != kind and t <= found]
        held = f"{other[0]}" if other else f"another program's database (tables: {', '.join(sorted(found)[:5])})"
        raise InputError(where, f"{path} is {held}, not {what}")
    if writable and not os.access(path, os.W_OK):
        raise InputError(where, f"cannot write {path}: permission denied")


def check_sweep_stores(mlflow_uri: str, storage: str, started: bool, name: str, where: str) -> None:
    """The sqlite stores that sweep `name`'s plan (`where`) names: each a store of its kind, and there once the
    sweep has `started` its records (its parent run exists; a driver stopped before that may have made
    neither). A missing one is never created afresh."""
    for uri, kind, what in ((mlflow_uri, MLFLOW, "MLflow store"), (storage, OPTUNA, "Optuna storage")):
        path = sqlite_path(uri)
        if path is None:
            continue
        if not path.exists():
            if started:
                raise InputError(name, f"the sweep's {what} {path} does not exist (moved or deleted?); put it "
                                       f"back where {where} says it is")
            continue
        check_store_file(path, kind, where)
