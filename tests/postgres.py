"""A database of its own on the local PostgreSQL, for the tests that load one for real.

Where no server can be reached the tests skip, saying why; under ``CI=true`` they fail instead, so
that a CI without PostgreSQL can never pass by loading nothing.
"""

from __future__ import annotations

import contextlib
import os
import typing as t
import uuid

import psycopg
import pytest
from psycopg import sql

if t.TYPE_CHECKING:
    from collections.abc import Iterator

HOST = "127.0.0.1"
PORT = 5432
# The server trusts local connections: user `postgres`, no password (as meltano.yml's defaults).
SERVER = f"host={HOST} port={PORT} user=postgres connect_timeout=5"


def skip_unless_ci(reason: str, promise: str) -> t.NoReturn:
    """Skip for want of a service, saying why, or fail where CI promises to `promise`."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, yet {reason}: CI must {promise}")
    print(f"SKIPPED: {reason}")  # noqa: T201 - the reason must show in the log
    pytest.skip(reason)


def unreachable(reason: str) -> t.NoReturn:
    """Skip for want of a server, or fail where CI promises one."""
    skip_unless_ci(reason, "load a real PostgreSQL")


@contextlib.contextmanager
def scratch_database(server: str = SERVER) -> Iterator[str]:
    """A new database on ``server``, dropped afterwards; yields its name."""
    name = f"tap_scale_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(f"{server} dbname=postgres", autocommit=True)
    except psycopg.OperationalError as error:
        unreachable(f"no PostgreSQL reachable as '{server}' ({error})".replace("\n", " "))
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield name
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def query(database: str, statement: str, params: tuple[t.Any, ...] = ()) -> list[tuple[t.Any, ...]]:
    """Every row of one query on a database of the local server."""
    with psycopg.connect(f"{SERVER} dbname={database}") as connection:
        return connection.execute(statement, params).fetchall()
