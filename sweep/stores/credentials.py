"""Passwords of the stores stay out of everything a sweep writes (docs/cluster.md, "Passwords").

A password may come in the URL (`--storage postgresql+psycopg2://sweep:PASSWORD@host/optuna`) or, with a
URL that has none, from `SWEEP_STORAGE_PASSWORD` / `SWEEP_MLFLOW_PASSWORD`. The sweep keeps and writes only
the URL without it (sweep.json, MLflow tags, Tune's pickles, its output) and hands the password to the
connections instead:
- a database URL (Optuna's storage, an MLflow database store): a SQLAlchemy `do_connect` listener in this
  process supplies it to every connection made for that URL;
- an MLflow server (http/https): MLflow's own `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`.
The Optuna storage is opened by the driver only, so its password stays in the driver's memory (it is
removed from the environment the driver's children inherit). The trials need the MLflow password: they get
`SWEEP_MLFLOW_PASSWORD` in their Ray workers' environment (`worker_env`), never in a pickle, and the
trainer's environment leaves every variable here out (`SECRET_ENV`).
"""
from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit, urlunsplit

STORAGE_PASSWORD_ENV = "SWEEP_STORAGE_PASSWORD"
MLFLOW_PASSWORD_ENV = "SWEEP_MLFLOW_PASSWORD"
MLFLOW_USERNAME_ENV, MLFLOW_SERVER_PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
SECRET_ENV = (STORAGE_PASSWORD_ENV, MLFLOW_PASSWORD_ENV, MLFLOW_SERVER_PASSWORD_ENV)

_USERINFO_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^\s/:@]*:)[^\s/@]*@")
_supplied: dict[str, str] = {}   # database URL without its password -> the password


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***`."""
    return _USERINFO_PASSWORD.sub(r"\1***@", text)


def split(url: str) -> tuple[str, str | None]:
    """The URL without its password, and the password (None when it has none)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}@{host}" if parts.username else host
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.password)


def is_server(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def storage_url(url: str) -> str:
    """`--storage` without its password; connections of this process get the password (from the URL, else
    from `SWEEP_STORAGE_PASSWORD`)."""
    url, password = split(url)
    from_env = os.environ.pop(STORAGE_PASSWORD_ENV, None)  # the driver's children do not need it
    password = password or from_env
    if password:
        _supply_to_database(url, password)
    return url


def mlflow_uri(uri: str) -> str:
    """`--mlflow-uri` without its password; this process (and, through `worker_env`, the trials) connect
    with the password from the URL, else from `SWEEP_MLFLOW_PASSWORD`."""
    uri, password = split(uri)
    if password:
        os.environ[MLFLOW_PASSWORD_ENV] = password
    password = os.environ.get(MLFLOW_PASSWORD_ENV)
    if password:
        if is_server(uri):
            os.environ.setdefault(MLFLOW_USERNAME_ENV, urlsplit(uri).username or "")
            os.environ.setdefault(MLFLOW_SERVER_PASSWORD_ENV, password)
        else:
            _supply_to_database(uri, password)
    return uri


def worker_env() -> dict[str, str]:
    """What the trials' Ray workers need in their environment to reach the MLflow store."""
    password = os.environ.get(MLFLOW_PASSWORD_ENV)
    return {MLFLOW_PASSWORD_ENV: password} if password else {}


def _supply_to_database(url: str, password: str) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if not _supplied:
        event.listen(Engine, "do_connect", _on_connect)
    _supplied[url] = password


def _on_connect(dialect, connection_record, cargs: list, cparams: dict) -> None:
    """Give a connection the password of the URL it is made for: the one whose connect arguments, as this
    dialect makes them from the URL without a password, it has."""
    from sqlalchemy.engine import make_url

    for url, password in _supplied.items():
        bare = make_url(url)
        if type(dialect) is not bare.get_dialect():
            continue
        args, params = dialect.create_connect_args(bare)
        if list(args) == list(cargs) and all(cparams.get(k) == v for k, v in params.items()):
            args, params = dialect.create_connect_args(bare.set(password=password))
            cargs[:] = args
            cparams.update(params)
            return
