"""Passwords of the stores stay out of everything a sweep writes and of what other users of its machines can
read (docs/cluster.md, "Passwords").

A password may come in the URL (`--storage postgresql+psycopg2://sweep:PASSWORD@host/optuna`) or, with a
URL that has none, from `SWEEP_STORAGE_PASSWORD` / `SWEEP_MLFLOW_PASSWORD`. The sweep keeps and writes only
the URL without it (sweep.json, MLflow tags, Tune's pickles, its output) and hands the password to the
connections instead:
- a database URL (Optuna's storage, an MLflow database store): a SQLAlchemy `do_connect` listener in this
  process supplies it to every connection made for that URL;
- an MLflow server (http/https): MLflow's own `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`, and
  MLflow connects to the server's address without the user name (`address`).
A sqlite file takes no password: one given with a sqlite store is an input error.

The Optuna storage is opened by the driver only, so its password stays in the driver's memory (it is
removed from the environment the driver's children inherit). The trials need the MLflow password, and Ray
would show whatever it carries for them to every user of the machine (a worker's command line holds its
runtime env, Ray's world-readable logs repeat it): the driver writes the password to a file only its user
can read, in the sweep's folder on its node (`handed_to_trials`), the trials' settings carry that file's
path, and each trial reads it (`from_driver`). Ray's processes start without any of these variables
(`withheld`), and the trainer's environment leaves them out too (`SECRET_ENV`).
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

from sweep.errors import InputError

STORAGE_PASSWORD_ENV = "SWEEP_STORAGE_PASSWORD"
MLFLOW_PASSWORD_ENV = "SWEEP_MLFLOW_PASSWORD"
MLFLOW_USERNAME_ENV, MLFLOW_SERVER_PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
SECRET_ENV = (STORAGE_PASSWORD_ENV, MLFLOW_PASSWORD_ENV, MLFLOW_SERVER_PASSWORD_ENV)
PASSWORD_FILE = ".mlflow-password"   # the driver's MLflow password for its trials, in the sweep's node-local folder
NODE_OWN_CREDENTIALS = ("this node's own MLflow credentials: MLFLOW_TRACKING_PASSWORD in its environment, "
                        "~/.mlflow/credentials for an MLflow server, ~/.pgpass for PostgreSQL")

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


def address(uri: str) -> str:
    """Where MLflow and the pre-check connect for `uri`: an MLflow server without the user name the URI may
    carry (the name goes in MLFLOW_TRACKING_USERNAME; urllib would take `user@host` for a host name, and
    requests would send the name with an empty password); any other store as it is."""
    if not is_server(uri):
        return uri
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def storage_url(url: str) -> str:
    """`--storage` without its password; connections of this process get the password (from the URL, else
    from `SWEEP_STORAGE_PASSWORD`)."""
    url, password = split(url)
    from_env = os.environ.pop(STORAGE_PASSWORD_ENV, None)  # the driver's children do not need it
    if password or from_env:
        _refuse_sqlite(url, "--storage" if password else STORAGE_PASSWORD_ENV)
        _supply_to_database(url, password or from_env)
    return url


def mlflow_uri(uri: str) -> str:
    """`--mlflow-uri` without its password; this process connects with the password from the URL, else from
    `SWEEP_MLFLOW_PASSWORD`, and as the URI's user."""
    uri, password = split(uri)
    if password:
        _refuse_sqlite(uri, "--mlflow-uri")
        os.environ[MLFLOW_PASSWORD_ENV] = password
    password = os.environ.get(MLFLOW_PASSWORD_ENV)
    if password:
        _refuse_sqlite(uri, MLFLOW_PASSWORD_ENV)
    if is_server(uri):
        if urlsplit(uri).username:
            os.environ[MLFLOW_USERNAME_ENV] = urlsplit(uri).username
        if password:
            os.environ[MLFLOW_SERVER_PASSWORD_ENV] = password
    elif password:
        _supply_to_database(uri, password)
    return uri


def _refuse_sqlite(url: str, where: str) -> None:
    if url.startswith("sqlite:"):
        fix = f"unset {where}" if where in SECRET_ENV else "take the password out of the URL"
        raise InputError(where, f"a password was given for {url}, a sqlite file, which takes none; {fix} (a "
                                f"password is for a database server or an MLflow server)")


def _trials_password(uri: str) -> str | None:
    """The MLflow password the trials of this driver need for `uri`: SWEEP_MLFLOW_PASSWORD (or the URI's), else
    for a server the driver's own MLFLOW_TRACKING_PASSWORD."""
    password = os.environ.get(MLFLOW_PASSWORD_ENV)
    if password is None and is_server(uri):
        password = os.environ.get(MLFLOW_SERVER_PASSWORD_ENV)
    return password or None


def password_file(uri: str, folder: Path) -> str:
    """The file a driver hands the trials the MLflow password of `uri` in (`handed_to_trials`), or "" when it
    has none to hand them."""
    return str(Path(folder).resolve() / PASSWORD_FILE) if _trials_password(uri) else ""


@contextmanager
def handed_to_trials(uri: str, folder: Path) -> Iterator[None]:
    """While the driver runs trials: the MLflow password of `uri`, if it has one, in `password_file`, created
    readable by this user only (never widened afterwards), and removed at the end. A file a killed driver
    left is replaced; it is on this node only (a trial elsewhere uses its node's own credentials)."""
    password = _trials_password(uri)
    if password is None:
        yield
        return
    path = Path(password_file(uri, folder))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    # O_EXCL: never a file or link someone else put there, and the mode holds from the first byte.
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def from_driver(path: str) -> str | None:
    """In a trial: take the MLflow password from the driver's file `path` (settings' `mlflow_password_file`).
    Returns None when the trial has what the driver meant it to have, else what it connects with instead (the
    file is not on this node: its own credentials), for the message of a connection that fails."""
    if not path:
        return None
    try:
        os.environ[MLFLOW_PASSWORD_ENV] = Path(path).read_text()
    except FileNotFoundError:
        return (f"the driver's MLflow password file {path} is on the driver's node only, so this trial used "
                f"{NODE_OWN_CREDENTIALS} (docs/cluster.md, \"Passwords\")")
    return None


@contextmanager
def withheld() -> Iterator[None]:
    """The secrets out of this process's environment meanwhile: the processes it starts (a local Ray
    instance's) do not inherit them."""
    held = {k: os.environ.pop(k) for k in SECRET_ENV if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(held)


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
