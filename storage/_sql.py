"""Statements as data, and the two dialects that run them.

Repositories are written once: an operation is either one :class:`Cmd` or a generator that
yields :class:`Cmd` values and receives their results. The SQLite backend runs them
synchronously on its database thread; the PostgreSQL backend awaits them on the asyncio side
of the bridge. SQL is written with PostgreSQL's ``$n`` placeholders; SQLite reads them as
``?n``. The few statements that must differ (bulk rows, ``SKIP LOCKED``) branch on the dialect.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Generator, Sequence
from datetime import date, datetime
from functools import lru_cache
from typing import Any, Literal, NamedTuple, TypeVar

from ._time import from_micros, micros_unchecked

T = TypeVar("T")

CmdKind = Literal["fetch", "fetchrow", "fetchval", "execute", "many"]


class Cmd(NamedTuple):
    kind: CmdKind
    sql: str
    args: tuple[Any, ...]


def fetch(sql: str, *args: Any) -> Cmd:
    """All rows."""
    return Cmd("fetch", sql, args)


def fetchrow(sql: str, *args: Any) -> Cmd:
    """The first row or None."""
    return Cmd("fetchrow", sql, args)


def fetchval(sql: str, *args: Any) -> Cmd:
    """The first column of the first row, or None."""
    return Cmd("fetchval", sql, args)


def execute(sql: str, *args: Any) -> Cmd:
    """The number of rows the statement changed."""
    return Cmd("execute", sql, args)


def many(sql: str, rows: Sequence[Sequence[Any]]) -> Cmd:
    """One statement over many argument rows, in one driver call (executemany)."""
    return Cmd("many", sql, (rows,))


# A multi-statement operation: a generator function yielding commands, returning the result.
Steps = Generator[Cmd, Any, T]
StepsFn = Callable[[], Steps[T]]


class Dialect(abc.ABC):
    """What differs between the backends, as far as repositories are concerned."""

    name: Literal["sqlite", "postgresql"]
    # Appended to the SELECT of a claim: row locks that concurrent claimers skip.
    skip_locked: str

    @abc.abstractmethod
    def ts(self, value: datetime) -> Any:
        """An aware datetime (already checked) in the driver's form."""

    @abc.abstractmethod
    def ts_out(self, value: Any) -> datetime:
        """A stored timestamp as an aware UTC datetime."""

    @abc.abstractmethod
    def day(self, value: date) -> Any:
        """A calendar date in the driver's form."""

    @abc.abstractmethod
    def day_out(self, value: Any) -> date:
        """A stored date."""

    def opt_ts_out(self, value: Any) -> datetime | None:
        return None if value is None else self.ts_out(value)


class SqliteDialect(Dialect):
    """Timestamps are INTEGER microseconds since the epoch (UTC), dates ISO text."""

    name = "sqlite"
    skip_locked = ""  # one writer: the claiming UPDATE cannot race another one

    def ts(self, value: datetime) -> int:
        return micros_unchecked(value)

    def ts_out(self, value: Any) -> datetime:
        return from_micros(value)

    def day(self, value: date) -> str:
        return value.isoformat()

    def day_out(self, value: Any) -> date:
        return date.fromisoformat(value)


class PostgresDialect(Dialect):
    """asyncpg converts timestamptz and date natively (aware UTC datetimes come back)."""

    name = "postgresql"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def ts(self, value: datetime) -> datetime:
        return value

    def ts_out(self, value: Any) -> datetime:
        return value  # type: ignore[no-any-return]

    def day(self, value: date) -> date:
        return value

    def day_out(self, value: Any) -> date:
        return value  # type: ignore[no-any-return]


SQLITE = SqliteDialect()
POSTGRES = PostgresDialect()

_PLACEHOLDER = re.compile(r"\$(\d+)")


@lru_cache(maxsize=1024)
def to_sqlite(sql: str) -> str:
    """``$1`` → ``?1``: SQLite binds numbered parameters positionally, as asyncpg does."""
    return _PLACEHOLDER.sub(r"?\1", sql)
