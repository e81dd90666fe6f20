"""Checks of the stores and the data, made by `sweep run` before it writes anything or starts Ray (docs/running.md,
"Exit codes"). Each problem is an InputError naming the flag (exit code 2), and none of them writes: a
sqlite store that does not exist yet is checked by its folder, not created; one that exists is opened
read-only (sweep.inputs.store_files).
"""
from __future__ import annotations

import base64
import os
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any

from sweep.errors import InputError
from sweep.inputs.store_files import MLFLOW, OPTUNA, check_store_file
from sweep.stores import credentials
from sweep.stores.urls import sqlite_path

ANSWER_TIMEOUT_S = 5.0   # an MLflow server or a database that says nothing by then is taken as unreachable
DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "pymysql": "PyMySQL", "mysqldb": "mysqlclient"}
# Connect-timeout argument of the common drivers (seconds).
CONNECT_TIMEOUT_ARG = {"psycopg2": "connect_timeout", "pg8000": "timeout", "pymysql": "connect_timeout",
                       "mysqldb": "connect_timeout"}


def check_mlflow_uri(uri: str) -> None:
    flag = "--mlflow-uri"
    if credentials.is_server(uri):
        _check_answers(uri, flag)
    elif uri.startswith("sqlite:"):
        path = _check_sqlite_folder(uri, flag)
        if path.exists():
            check_store_file(path, MLFLOW, flag, writable=True)
    elif "://" in uri:
        _check_database(uri, flag)
    elif not uri.startswith("databricks"):   # a bare path: MLflow's file store, which MLflow no longer takes
        raise InputError(flag, f"{uri!r} is not a tracking URI: give sqlite:///FILE, http(s)://HOST:PORT or a "
                               f"database URL")


def check_storage(url: str) -> None:
    flag = "--storage"
    if url.startswith("sqlite:"):
        path = _check_sqlite_folder(url, flag)
        if path.exists():
            check_store_file(path, OPTUNA, flag, writable=True)
            _open_optuna(url, flag)
    else:
        _check_database(url, flag)


def _check_answers(uri: str, flag: str) -> None:
    """Something answers HTTP at `uri` (any status: an auth proxy may refuse the health page to a request
    without credentials), and it answers MLflow's API as the sweep's user. The probe goes to the server's
    address with the sweep's credentials, if it has any, as basic auth (the URI's user name is not a host
    name's part). MLflow's own client would retry an unreachable server for minutes."""
    address = credentials.address(uri)
    request = urllib.request.Request(address.rstrip("/") + "/health")
    user = os.environ.get(credentials.MLFLOW_USERNAME_ENV)
    password = os.environ.get(credentials.MLFLOW_SERVER_PASSWORD_ENV)
    if user and password:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=ANSWER_TIMEOUT_S):
            pass
    except urllib.error.HTTPError as e:
        if e.code == HTTPStatus.UNAUTHORIZED and user and password:
            raise InputError(flag, f"the MLflow server at {address} refuses user {user!r} with the password "
                                   f"given (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError):
            reason = f"no answer within {ANSWER_TIMEOUT_S:g} s"
        raise InputError(flag, f"no MLflow server answers at {address} ({reason}); is it running and "
                               f"reachable from here?") from None
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with _environment(MLFLOW_HTTP_REQUEST_TIMEOUT=str(int(ANSWER_TIMEOUT_S)), MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"):
        try:
            MlflowClient(address).search_experiments(max_results=1)
        except MlflowException as e:
            first = credentials.redact(e.message).splitlines()[0]
            if e.get_http_status_code() in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
                raise InputError(flag, f"the MLflow server at {address} refuses the sweep's credentials "
                                       f"({first}); give the password in {credentials.MLFLOW_PASSWORD_ENV} "
                                       f"(docs/cluster.md, \"Passwords\")") from None
            raise InputError(flag, f"{credentials.redact(uri)} answers, but not as an MLflow tracking server: "
                                   f"{first}") from None


@contextmanager
def _environment(**values: str):
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _check_sqlite_folder(url: str, flag: str) -> Path:
    path = sqlite_path(url)
    if path is None:
        raise InputError(flag, f"{url} names no database file (an in-memory store would be gone at the end)")
    folder = path.parent
    if not folder.is_dir():
        raise InputError(flag, f"{url}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(flag, f"{url}: the folder {folder} is not writable")
    if path.exists() and not path.is_file():
        raise InputError(flag, f"{url}: {path} is not a file")
    return path


def _open_optuna(url: str, flag: str) -> None:
    """Optuna opens the existing sqlite store, read-only: the check writes nothing (not even the lock file
    of a first open, sweep.lock), and a database that is not Optuna's is refused rather than given tables."""
    from sweep.stores.study import checked_storage

    try:
        checked_storage(url)
    except Exception as e:
        raise InputError(flag, f"cannot open {credentials.redact(url)} as an Optuna storage: "
                               f"{credentials.redact(str(e)).splitlines()[0]}") from None


def _check_database(url: str, flag: str) -> None:
    """The URL parses, its driver is installed, and the server accepts a connection (nothing is created)."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    shown = credentials.redact(url)
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError) as e:
        raise InputError(flag, f"{shown} is not a database URL SQLAlchemy knows: {e}") from None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        driver = parsed.get_driver_name()
        package = DRIVER_PACKAGES.get(driver, driver)
        raise InputError(flag, f"{shown} needs the {parsed.get_backend_name()} driver {driver}, which is not "
                               f"installed ({e}); pip install {package}") from None
    timeout = CONNECT_TIMEOUT_ARG.get(parsed.get_driver_name())
    connect_args = {timeout: int(ANSWER_TIMEOUT_S)} if timeout else {}
    engine = sqlalchemy.create_engine(url, connect_args=connect_args)
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as e:
        first = credentials.redact(str(getattr(e, "orig", e))).strip().splitlines()
        raise InputError(flag, f"cannot connect to {shown}: {first[0] if first else type(e).__name__}") from None
    finally:
        engine.dispose()


def check_data(fixed: dict[str, Any], where: dict[str, str], on_this_machine: bool) -> None:
    """The shards of a fixed `data.path` and the model of a fixed `data.tokenizer`, read as the trainer
    reads them (headers and sizes; the tokenizer loaded). A path missing here is an error when the trials
    run on this machine; with a cluster it may exist only on the workers, whose trainers then check it."""
    from trainer.data import DataError

    for key in ("data.path", "data.tokenizer"):
        value = fixed.get(key)
        if not value:
            continue
        path = Path(str(value))
        if not path.exists():
            if on_this_machine:
                raise InputError(where[key], f"no such {'folder' if key == 'data.path' else 'file'}: {path}")
            print(f"sweep run: note: {key} {path} is not on this machine; the trials check it on their nodes",
                  file=sys.stderr)
            continue
        try:
            if key == "data.path":
                _read_shards(path)
            else:
                _load_tokenizer(path)
        except DataError as e:
            raise InputError(where[key], str(e)) from None


def _read_shards(folder: Path) -> None:
    from trainer.data.shards import list_shards, shard_token_count

    for split in ("train", "val"):
        for shard in list_shards(folder, split):
            shard_token_count(shard)


def _load_tokenizer(path: Path) -> None:
    from trainer.data.tokenizer import load_tokenizer

    load_tokenizer(path)
