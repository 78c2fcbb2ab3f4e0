"""The storage error hierarchy and the one place driver errors are translated into it.

Driver exceptions (``sqlite3.Error``, ``asyncpg`` errors, socket errors) never escape the
storage boundary: each backend calls :func:`translate_sqlite` or :func:`translate_pg` exactly
once, where its work comes back from the database thread or the asyncio bridge.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from kernel import NO_RETRY, RetryAfter, RetryDecision

__all__ = [
    "CommitUnknown",
    "ConflictError",
    "IntegrityError",
    "InvalidData",
    "NotFound",
    "SerializationFailure",
    "StoreCircuitOpen",
    "StoreError",
    "StoreUnavailable",
    "UniqueViolation",
    "store_retry_decision",
    "translate_pg",
    "translate_sqlite",
]


class StoreError(Exception):
    """Base of every error the storage layer raises on purpose.

    ``retryable`` says whether running the whole unit of work again may succeed; the store
    has always rolled the transaction back before raising.
    """

    retryable: bool = False


class InvalidData(StoreError, ValueError):
    """Input refused before it reached the database (or a value the database refused)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its two fields (args holds only the message): crosses process boundaries.
        return (type(self), (self.field, self.problem))


class NotFound(StoreError, LookupError):
    """A row the operation needs does not exist."""


class IntegrityError(StoreError):
    """A database constraint rejected the write."""


class UniqueViolation(IntegrityError):
    """A unique key (natural key, dedupe key, primary key) already exists."""


class ConflictError(StoreError):
    """A concurrent change won: an optimistic version check failed or the state moved on."""


class SerializationFailure(ConflictError):
    """Serialization failure, deadlock, lock timeout or a busy SQLite file: safe to retry."""

    retryable = True


class StoreUnavailable(StoreError):
    """The database cannot be reached or the connection was lost: retry later."""

    retryable = True


class StoreCircuitOpen(StoreUnavailable):
    """The database's circuit breaker is open: refused at once, without a connection attempt.

    Retryable for a client (``retry_after`` seconds from now a probe goes through), but never retried
    inside the store: a refusal must answer fast."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.retry_after))


class CommitUnknown(StoreUnavailable):
    """The connection died while COMMIT was in flight: the outcome is unknown.

    Not retried automatically, because the work may already be committed; idempotent units
    of work (natural-key upserts, dedupe-keyed outbox events) may be retried by the caller.
    """

    retryable = False


# --- SQLite ------------------------------------------------------------------------------

# Extended result codes (sqlite3.h); Python >= 3.11 exposes them as ``sqlite_errorcode``.
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_CONSTRAINT_PRIMARYKEY = 1555
_SQLITE_CONSTRAINT_UNIQUE = 2067
_SQLITE_TOOBIG = 18
_SQLITE_MISMATCH = 20
_SQLITE_CANTOPEN = 14
_SQLITE_IOERR = 10
_SQLITE_FULL = 13


def store_retry_decision(exc: Exception) -> RetryDecision:
    """The store's classification for ``kernel.retry_call``: a retryable StoreError runs again; a breaker's
    refusal, CommitUnknown and everything else do not."""
    if isinstance(exc, StoreError) and exc.retryable and not isinstance(exc, StoreCircuitOpen):
        return RetryAfter()
    return NO_RETRY


def translate_sqlite(exc: sqlite3.Error) -> StoreError:
    """Map a ``sqlite3`` error to the storage hierarchy (the caller chains ``from exc``)."""
    code: int = getattr(exc, "sqlite_errorcode", 0) or 0
    primary = code & 0xFF
    message = str(exc)
    if code in (_SQLITE_CONSTRAINT_UNIQUE, _SQLITE_CONSTRAINT_PRIMARYKEY) or (
        isinstance(exc, sqlite3.IntegrityError) and "UNIQUE constraint failed" in message
    ):
        return UniqueViolation(message)
    if isinstance(exc, sqlite3.IntegrityError):
        return IntegrityError(message)
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or "database is locked" in message:
        return SerializationFailure(message)
    if primary in (_SQLITE_TOOBIG, _SQLITE_MISMATCH) or isinstance(exc, sqlite3.DataError):
        return InvalidData("value", message)
    if primary in (_SQLITE_CANTOPEN, _SQLITE_IOERR, _SQLITE_FULL):
        return StoreUnavailable(message)
    return StoreError(f"{type(exc).__name__}: {message}")


# --- PostgreSQL --------------------------------------------------------------------------

_PG_TRANSIENT_STATES = frozenset({"40001", "40P01", "55P03"})  # serialization, deadlock, lock n/a
# Server going away or refusing: admin shutdown, crash shutdown, cannot connect now, too many.
_PG_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300", "53000"})


def translate_pg(exc: BaseException) -> StoreError | None:
    """Map an asyncpg/socket error to the storage hierarchy; None for anything else.

    Anything else (a bug in an operation, a cancellation) must propagate unchanged.
    """
    import asyncpg  # local: the SQLite-only deployment never imports the driver

    if isinstance(exc, asyncpg.PostgresError):
        state: str = getattr(exc, "sqlstate", "") or ""
        message = f"{state} {exc}".strip()
        if state == "23505":
            return UniqueViolation(message)
        if state.startswith("23"):
            return IntegrityError(message)
        if state in _PG_TRANSIENT_STATES:
            return SerializationFailure(message)
        if state.startswith("08") or state in _PG_UNAVAILABLE_STATES:
            return StoreUnavailable(message)
        if state.startswith("22"):
            return InvalidData("value", message)
        return StoreError(message)
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.InternalClientError):
        # "connection is closed", "cannot perform operation: another operation is in progress"
        # after a lost connection, pool closing...: the connection is unusable.
        return StoreUnavailable(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, OSError | asyncio.TimeoutError | TimeoutError | EOFError):
        return StoreUnavailable(f"{type(exc).__name__}: {exc}")
    return None
