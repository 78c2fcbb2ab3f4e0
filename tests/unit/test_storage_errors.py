"""Driver errors are translated once into the storage hierarchy."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from storage import (
    CommitUnknown,
    ConflictError,
    IntegrityError,
    InvalidData,
    NotFound,
    SerializationFailure,
    StoreError,
    StoreUnavailable,
    UniqueViolation,
)
from storage._errors import translate_pg, translate_sqlite


def test_hierarchy_and_retryability() -> None:
    assert issubclass(UniqueViolation, IntegrityError) and issubclass(IntegrityError, StoreError)
    assert issubclass(SerializationFailure, ConflictError)
    assert issubclass(InvalidData, ValueError) and issubclass(NotFound, LookupError)
    assert SerializationFailure.retryable and StoreUnavailable.retryable
    assert not CommitUnknown.retryable and issubclass(CommitUnknown, StoreUnavailable)
    assert not any(c.retryable for c in (StoreError, InvalidData, NotFound, IntegrityError, ConflictError))


def _sqlite_error(conn: sqlite3.Connection, sql: str) -> sqlite3.Error:
    with pytest.raises(sqlite3.Error) as caught:
        conn.execute(sql)
    return caught.value


def test_sqlite_errors(tmp_path: Path) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, u TEXT UNIQUE, n INTEGER CHECK (n > 0)) STRICT")
    conn.execute("INSERT INTO t VALUES (1, 'a', 1)")
    assert type(translate_sqlite(_sqlite_error(conn, "INSERT INTO t VALUES (2, 'a', 1)"))) is UniqueViolation
    assert type(translate_sqlite(_sqlite_error(conn, "INSERT INTO t VALUES (1, 'b', 1)"))) is UniqueViolation
    assert type(translate_sqlite(_sqlite_error(conn, "INSERT INTO t VALUES (3, 'c', 0)"))) is IntegrityError
    assert type(translate_sqlite(_sqlite_error(conn, "INSERT INTO t VALUES (3, 'c', 'x')"))) is IntegrityError
    assert type(translate_sqlite(_sqlite_error(conn, "SELEC 1"))) is StoreError

    path = str(tmp_path / "locked.db")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE x (a)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    busy = translate_sqlite(_sqlite_error(other, "BEGIN IMMEDIATE"))
    assert type(busy) is SerializationFailure and busy.retryable
    holder.execute("ROLLBACK")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (asyncpg.exceptions.UniqueViolationError("dup"), UniqueViolation),
        (asyncpg.exceptions.ForeignKeyViolationError("fk"), IntegrityError),
        (asyncpg.exceptions.CheckViolationError("check"), IntegrityError),
        (asyncpg.exceptions.SerializationError("ser"), SerializationFailure),
        (asyncpg.exceptions.DeadlockDetectedError("dead"), SerializationFailure),
        (asyncpg.exceptions.LockNotAvailableError("nowait"), SerializationFailure),
        (asyncpg.exceptions.AdminShutdownError("bye"), StoreUnavailable),
        (asyncpg.exceptions.CannotConnectNowError("starting"), StoreUnavailable),
        (asyncpg.exceptions.TooManyConnectionsError("full"), StoreUnavailable),
        (asyncpg.exceptions.ConnectionDoesNotExistError("gone"), StoreUnavailable),
        (asyncpg.exceptions.InterfaceError("connection is closed"), StoreUnavailable),
        (ConnectionRefusedError(111, "refused"), StoreUnavailable),
        (TimeoutError(), StoreUnavailable),
        (asyncpg.exceptions.InvalidTextRepresentationError("bad"), InvalidData),
        (asyncpg.exceptions.StringDataRightTruncationError("long"), InvalidData),
        (asyncpg.exceptions.ReadOnlySQLTransactionError("ro"), StoreError),
        (asyncpg.exceptions.UndefinedTableError("no table"), StoreError),
    ],
)
def test_postgres_errors(exc: BaseException, expected: type[StoreError]) -> None:
    translated = translate_pg(exc)
    assert type(translated) is expected


@pytest.mark.parametrize("exc", [ValueError("bug"), KeyError("k"), asyncio.CancelledError()])
def test_other_exceptions_pass_through(exc: BaseException) -> None:
    assert translate_pg(exc) is None
