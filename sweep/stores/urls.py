"""Store URLs: the default MLflow store, the database file of a sqlite URL, local paths made absolute.

Trials run in other processes and other folders than the command that started them, so every sqlite URL
a command records or prints carries an absolute path. MLflow's and Optuna's sqlite URLs share the form
`sqlite:///<path>` (a relative path) or `sqlite:////<path>` (an absolute one).
"""
from __future__ import annotations

from pathlib import Path

SQLITE_PREFIX = "sqlite:///"
DEFAULT_MLFLOW_URI = SQLITE_PREFIX + "mlflow.db"
OPTUNA_FILE = "optuna.db"   # the default Optuna storage: beside the MLflow database


def sqlite_path(url: str) -> Path | None:
    """The database file of a `sqlite:///` URL, else None (a server, or an in-memory database)."""
    if not url.startswith(SQLITE_PREFIX):
        return None
    path = url[len(SQLITE_PREFIX):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def absolute(url: str) -> str:
    """`url` with the path of a sqlite database made absolute; other URLs as they are."""
    path = sqlite_path(url)
    if path is None or path.is_absolute():
        return url
    _, mark, query = url.partition("?")
    return SQLITE_PREFIX + str(path.resolve()) + mark + query


def default_storage(mlflow_uri: str) -> str:
    """The Optuna storage of a sweep given no --storage: beside a sqlite MLflow database, else in the
    current folder."""
    db = sqlite_path(absolute(mlflow_uri))
    folder = db.parent if db is not None else Path.cwd()
    return SQLITE_PREFIX + str((folder / OPTUNA_FILE).resolve())
