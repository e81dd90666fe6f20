"""A SQLAlchemy dialect for the tests: sqlite behind a password, as a database server would be.

`sqlitepw://USER:PASSWORD@localhost//abs/path.db` opens the sqlite file `/abs/path.db`, but, like a
server's driver, gets the password with each connection and refuses any other than `PASSWORD`. Register it
with `register()` in the process that opens the store.
"""
from __future__ import annotations

import sqlite3

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import make_url

SCHEME = "sqlitepw"
PASSWORD = "pw-8d1f0c2e-never-written"


class PasswordSQLiteDialect(SQLiteDialect_pysqlite):
    supports_statement_cache = True

    def create_connect_args(self, url):
        args, params = super().create_connect_args(make_url(f"sqlite:///{url.database}"))
        return args, {**params, "password": url.password}

    def connect(self, *cargs, password=None, **cparams):
        if password != PASSWORD:
            raise sqlite3.OperationalError("password authentication failed")
        return super().connect(*cargs, **cparams)


def register() -> None:
    registry.register(SCHEME, __name__, PasswordSQLiteDialect.__name__)


def url(path, password: str | None = PASSWORD) -> str:
    auth = f"sweep:{password}" if password else "sweep"
    return f"{SCHEME}://{auth}@localhost/{path}"
