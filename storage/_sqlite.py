"""SQLite backend: WAL, one long-lived thread per connection, whole units of work per crossing.

The writer connection lives on its own thread and only ever runs there. A crossing is one
job on the thread's queue; the result comes back through the trio token's
``run_sync_soon`` + ``reschedule`` (no thread pool, no per-call thread, no shared connection
across threads). A trio semaphore per connection gives a transaction exclusive use of it
from its first crossing (BEGIN) to its last (COMMIT/ROLLBACK); read-only transactions use a
second connection and thread, so reads do not queue behind writes (WAL readers never block).

Durability: ``synchronous=FULL`` (default) fsyncs the WAL at every COMMIT before the crossing
returns, so an acknowledged commit survives SIGKILL and power loss; ``NORMAL`` still
survives SIGKILL (the WAL is written before COMMIT returns) but not power loss.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import outcome
import trio

from . import _validate as v
from ._config import StoreConfig
from ._errors import StoreError, StoreUnavailable, translate_sqlite
from ._migrations import Migration, pending_migrations
from ._migrations.sqlite import MIGRATIONS
from ._model import PoolStats
from ._sql import SQLITE, Cmd, to_sqlite
from ._store import StoreBase
from ._time import to_micros
from ._transaction import Transaction
from ._tx import Const, End, Op, Step

__all__ = ["SqliteStore"]

T = TypeVar("T")

_Job = Callable[[sqlite3.Connection], Any]


class _Worker:
    """A thread that owns one connection and runs jobs against it, one at a time."""

    def __init__(self, name: str, connect: Callable[[], sqlite3.Connection]) -> None:
        self._jobs: queue.SimpleQueue[tuple[_Job, Callable[[outcome.Outcome[Any]], None]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._main, args=(connect,), name=name, daemon=True)
        self._stopped = False

    async def start(self) -> None:
        self._thread.start()
        await self.call(lambda conn: None)  # surfaces a failed connect here

    def _main(self, connect: Callable[[], sqlite3.Connection]) -> None:
        conn: sqlite3.Connection | None = None
        failure: BaseException | None = None
        try:
            conn = connect()
        except BaseException as exc:  # reported to every caller instead of killing the thread
            failure = exc
        while (item := self._jobs.get()) is not None:
            job, deliver = item
            if conn is None:
                assert failure is not None
                deliver(outcome.Error(_translated(failure)))
                continue
            try:
                result: outcome.Outcome[Any] = outcome.Value(job(conn))
            except BaseException as exc:
                result = outcome.Error(_translated(exc))
            deliver(result)
        if conn is not None:
            conn.close()  # idempotent: stop() normally closed it already

    async def call(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job(conn)`` on the thread and return its result (errors translated).

        Not cancellable once queued: the job runs to the end either way, and giving up on it
        would leave the connection in an unknown state. Jobs are short (one unit of work).
        """
        if self._stopped:
            raise StoreError("the store is closed")
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()

        def deliver(result: outcome.Outcome[Any]) -> None:
            try:
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)
            except trio.RunFinishedError:
                pass  # the trio run that asked is gone, and its task with it

        self._jobs.put((job, deliver))
        return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)  # type: ignore[no-any-return]

    async def stop(self) -> None:
        """Close the connection (after the jobs queued before this one) and end the thread."""
        if not self._stopped:
            if self._thread.is_alive():
                try:
                    await self.call(lambda conn: conn.close())
                except StoreError:
                    pass  # it never opened: nothing to close
            self._stopped = True
            self._jobs.put(None)


def _translated(exc: BaseException) -> BaseException:
    error: StoreError
    if isinstance(exc, sqlite3.Error):
        error = translate_sqlite(exc)
    elif isinstance(exc, OSError):  # e.g. the database directory cannot be created
        error = StoreUnavailable(f"{type(exc).__name__}: {exc}")
    else:
        return exc
    error.__cause__ = exc
    return error


def _connect(path: str, config: StoreConfig, *, readonly: bool) -> sqlite3.Connection:
    if path != ":memory:":
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
    conn = sqlite3.connect(
        path,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        timeout=config.sqlite_busy_timeout_ms / 1000,
        cached_statements=256,
    )
    conn.row_factory = sqlite3.Row
    if not readonly:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={config.sqlite_synchronous}")
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    return conn


def _exec(conn: sqlite3.Connection, cmd: Cmd) -> Any:
    sql = to_sqlite(cmd.sql)
    kind = cmd.kind
    if kind == "many":
        conn.executemany(sql, cmd.args[0])
        return None
    cursor = conn.execute(sql, cmd.args)
    if kind == "execute":
        return cursor.rowcount
    rows = cursor.fetchall()  # always drain: a RETURNING statement finishes only when read
    if kind == "fetch":
        return rows
    if not rows:
        return None
    return rows[0] if kind == "fetchrow" else rows[0][0]


def _run_step(conn: sqlite3.Connection, step: Step) -> Any:
    if isinstance(step, Cmd):
        return _exec(conn, step)
    if isinstance(step, Const):
        return step.value
    steps = step()
    try:
        cmd = next(steps)
        while True:
            cmd = steps.send(_exec(conn, cmd))
    except StopIteration as stop:
        return stop.value
    finally:
        steps.close()


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # a failed ROLLBACK leaves nothing to keep; the next BEGIN starts clean


def _migrate(conn: sqlite3.Connection, migrations: tuple[Migration, ...], now: int) -> list[int]:
    conn.execute("BEGIN IMMEDIATE")  # DDL is transactional in SQLite: all or nothing
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT"
        )
        have = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        applied = []
        for migration in pending_migrations(have, migrations):
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, now),
            )
            applied.append(migration.version)
        conn.execute("COMMIT")
        return applied
    except BaseException:
        _rollback_quietly(conn)
        raise


class _Slot:
    """One transaction at a time on a connection; FIFO, except that urgent waiters go first.

    Not a Lock: a transaction may end in another task than the one that began it. Ownership is
    handed straight to the woken waiter, so nobody can slip in between.
    """

    def __init__(self) -> None:
        self._held = False
        self._urgent = trio.lowlevel.ParkingLot()
        self._normal = trio.lowlevel.ParkingLot()

    async def acquire(self, *, urgent: bool = False) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._held:
            self._held = True
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        await (self._urgent if urgent else self._normal).park()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        if self._urgent:
            self._urgent.unpark()
        elif self._normal:
            self._normal.unpark()
        else:
            self._held = False


class _Connection:
    """A worker plus the slot that gives one transaction at a time the connection."""

    def __init__(self, worker: _Worker, begin_sql: str, *, readonly: bool) -> None:
        self.worker = worker
        self.begin_sql = begin_sql
        self.readonly = readonly  # opened with query_only
        self.slot = _Slot()


class SqliteTransaction(Transaction):
    dialect = SQLITE

    def __init__(
        self, store: SqliteStore, connection: _Connection, *, readonly: bool, retry_first: bool, urgent: bool
    ) -> None:
        super().__init__(store.config, store._rng, readonly=readonly, retry_first=retry_first, urgent=urgent)
        self._store = store
        self._conn = connection

    def _notify_outbox(self, event_id: int) -> None:
        self._store._publish(event_id)

    async def _cross(self, ops: list[Op[Any]], *, begin: bool, end: End) -> list[Any]:
        connection = self._conn
        steps = [op.step for op in ops]
        begin_sql = "BEGIN" if self.readonly else connection.begin_sql
        # A read-only unit of work on the writer connection (:memory:) must not write either.
        guard = self.readonly and not connection.readonly

        def job(conn: sqlite3.Connection) -> list[Any]:
            if begin:
                if guard:
                    conn.execute("PRAGMA query_only=ON")
                conn.execute(begin_sql)
            try:
                results = [_run_step(conn, step) for step in steps]
                if end is not None:
                    conn.execute("COMMIT" if end == "commit" else "ROLLBACK")
            except BaseException:
                _rollback_quietly(conn)
                if guard:
                    conn.execute("PRAGMA query_only=OFF")
                raise
            if guard and end is not None:
                conn.execute("PRAGMA query_only=OFF")
            return results

        if begin:
            await connection.slot.acquire(urgent=self.urgent)
        try:
            results = await connection.worker.call(job)
        except BaseException:
            connection.slot.release()
            raise
        if end is not None:
            connection.slot.release()
        return results


class _LockEntry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.users = 0


class SqliteStore(StoreBase):
    """See the module docstring. Open with :func:`storage.open_store`."""

    backend: Literal["sqlite", "postgresql"] = "sqlite"

    def __init__(self, path: str, config: StoreConfig) -> None:
        super().__init__(config)
        self.path = path
        memory = path == ":memory:"
        self._writer = _Connection(
            _Worker("vigil-sqlite-writer", lambda: _connect(path, config, readonly=False)),
            "BEGIN IMMEDIATE",  # take the write lock up front: no failed lock upgrade mid-way
            readonly=False,
        )
        # A :memory: database exists only inside its one connection, so it reads there too.
        self._reader = (
            _Connection(
                _Worker("vigil-sqlite-reader", lambda: _connect(path, config, readonly=True)),
                "BEGIN",
                readonly=True,
            )
            if not memory
            else self._writer
        )
        self._locks: dict[tuple[str, str], _LockEntry] = {}
        self._subscribers: set[trio.MemorySendChannel[int]] = set()
        self.applied_migrations: list[int] = []

    async def _open(self) -> None:
        await self._writer.worker.start()
        try:
            now = to_micros(self.config.clock(), "clock")
            self.applied_migrations = await self._writer.worker.call(
                lambda conn: _migrate(conn, MIGRATIONS, now)
            )
            if self._reader is not self._writer:
                await self._reader.worker.start()
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.close()
            raise

    def _new_transaction(self, *, readonly: bool, retry_first: bool, urgent: bool) -> SqliteTransaction:
        connection = self._reader if readonly else self._writer
        return SqliteTransaction(self, connection, readonly=readonly, retry_first=retry_first, urgent=urgent)

    async def close(self) -> None:
        """Wait for the running transactions, then close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for connection in {id(c): c for c in (self._writer, self._reader)}.values():
            async with connection.slot:
                await connection.worker.stop()
        for send in list(self._subscribers):
            send.close()

    def pool_stats(self) -> PoolStats:
        connections = {id(c): c for c in (self._writer, self._reader)}.values()  # :memory: has one
        return PoolStats(in_use=sum(c.slot.held for c in connections), open=len(connections),
                         max_size=len(connections))

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        async with self._reader.slot:
            await self._reader.worker.call(lambda conn: conn.execute("SELECT 1").fetchall())

    @asynccontextmanager
    async def device_lock(self, user_id: str, device_id: str) -> AsyncIterator[None]:
        """Serialize work per (user, device). SQLite means one process, so an in-process
        lock is exact; entries are dropped when nobody holds or waits for them."""
        key = (v.text("user_id", user_id, 1024), v.text("device_id", device_id, 1024))
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = _LockEntry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]

    @asynccontextmanager
    async def outbox_notifications(
        self, *, buffer: int = 1024
    ) -> AsyncIterator[trio.MemoryReceiveChannel[int]]:
        """Ids of outbox events as their transactions commit. A hint, not a queue: a full
        buffer drops ids, so consumers must still poll ``claim`` now and then."""
        send, receive = trio.open_memory_channel[int](buffer)
        self._subscribers.add(send)
        try:
            yield receive
        finally:
            self._subscribers.discard(send)
            send.close()

    def _publish(self, event_id: int) -> None:
        for send in list(self._subscribers):
            try:
                send.send_nowait(event_id)
            except trio.WouldBlock:
                pass  # slow subscriber: it polls anyway
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.discard(send)
