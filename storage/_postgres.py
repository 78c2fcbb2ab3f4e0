"""PostgreSQL backend: an asyncpg pool driven through trio-asyncio.

Every asyncpg call goes through :meth:`PostgresStore._aio`, the single bridge crossing (and
the single place driver errors are translated). A crossing costs ~100 µs, so a crossing runs
a whole batch of a transaction's statements inside one asyncio coroutine: acquiring the
connection and BEGIN ride on the first crossing, COMMIT and the release on the last.

The store remembers the trio-asyncio loop it was opened under and passes it explicitly, so
it can be used from any task as long as that ``trio_asyncio.open_loop()`` block is running.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypedDict, TypeVar

import asyncpg
import trio
import trio_asyncio

from kernel import CircuitOpen

from . import _validate as v
from ._config import StoreConfig
from ._errors import CommitUnknown, StoreCircuitOpen, StoreError, StoreUnavailable, translate_pg
from ._migrations import Migration, pending_migrations
from ._migrations.postgres import MIGRATIONS
from ._model import PoolStats
from ._sql import POSTGRES, Cmd
from ._store import StoreBase
from ._transaction import Transaction
from ._tx import Const, End, Op, Step

__all__ = ["HeldLock", "PostgresStore", "migrate_postgres"]

T = TypeVar("T")

log = logging.getLogger("vigil.storage")


def _lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key; the schema is part of it so tests can share a database."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def _aio(loop: asyncio.AbstractEventLoop, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """The one bridge into asyncio; driver errors come out as storage errors."""
    try:
        return await trio_asyncio.aio_as_trio(fn, loop=loop)(*args)  # type: ignore[no-any-return]
    except Exception as exc:
        error = translate_pg(exc)
        if error is None:
            raise
        raise error from exc


def _server_settings(config: StoreConfig) -> dict[str, str]:
    settings = {"application_name": config.pg_application_name}
    if config.pg_schema:
        settings["search_path"] = config.pg_schema
    return settings


async def _exec(conn: asyncpg.Connection, cmd: Cmd) -> Any:
    kind = cmd.kind
    if kind == "fetch":
        return await conn.fetch(cmd.sql, *cmd.args)
    if kind == "fetchrow":
        return await conn.fetchrow(cmd.sql, *cmd.args)
    if kind == "fetchval":
        return await conn.fetchval(cmd.sql, *cmd.args)
    if kind == "many":
        await conn.executemany(cmd.sql, cmd.args[0])
        return None
    status: str = await conn.execute(cmd.sql, *cmd.args)  # e.g. "UPDATE 3", "INSERT 0 1"
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


async def _run_step(conn: asyncpg.Connection, step: Step) -> Any:
    if isinstance(step, Cmd):
        return await _exec(conn, step)
    if isinstance(step, Const):
        return step.value
    steps = step()
    try:
        cmd = next(steps)
        while True:
            cmd = steps.send(await _exec(conn, cmd))
    except StopIteration as stop:
        return stop.value
    finally:
        steps.close()


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """Pool reset of transaction connections: nothing to undo.

    They never carry session state (no SET, LISTEN or advisory lock; asyncpg itself rolls
    back an open transaction first), so the default RESET ALL / UNLISTEN / unlock-all round
    trip on every release would be pure cost. The lock pool keeps the default reset.
    """


async def _give_back(pool: asyncpg.Pool, conn: asyncpg.Connection, error: BaseException | None) -> None:
    """Return a connection to its pool after a failure without reusing a broken session."""
    try:
        if isinstance(error, asyncpg.PostgresError) and not conn.is_closed():
            # A server-side error leaves the connection sound: roll back and reuse it.
            await conn.execute("ROLLBACK")
        elif error is not None:
            # Cancelled or lost mid-statement: the protocol state is unknown, so drop it.
            conn.terminate()
    except BaseException:
        conn.terminate()
    finally:
        await pool.release(conn)


class _ConnectKwargs(TypedDict):
    """What every asyncpg connection and pool of the store is opened with."""

    timeout: float
    command_timeout: float | None
    server_settings: dict[str, str]


def _connect_kwargs(config: StoreConfig) -> _ConnectKwargs:
    return {
        "timeout": config.pg_connect_timeout,
        "command_timeout": config.pg_command_timeout,
        "server_settings": _server_settings(config),
    }


async def _migrate(
    conn: asyncpg.Connection, schema: str | None, migrations: tuple[Migration, ...]
) -> list[int]:
    """Apply missing migrations in one transaction, serialized across processes (asyncio side)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key("vigil.migrations"))
        if schema:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(f'SET LOCAL search_path TO "{schema}"')
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
            " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        have = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for migration in pending_migrations(have, migrations):
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(migration.version)
        return applied


async def _schema_version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    return (
        int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")) if exists else 0
    )


async def migrate_postgres(dsn: str, config: StoreConfig, loop: asyncio.AbstractEventLoop) -> list[int]:
    """Run the migrations over one short-lived connection; returns the versions applied."""

    async def run() -> list[int]:
        conn = await asyncpg.connect(dsn, **_connect_kwargs(config))
        try:
            return await _migrate(conn, config.pg_schema, MIGRATIONS)
        finally:
            await conn.close()

    return await _aio(loop, run)


class PostgresTransaction(Transaction):
    dialect = POSTGRES

    def __init__(self, store: PostgresStore, *, readonly: bool, retry_first: bool, urgent: bool) -> None:
        super().__init__(store.config, store._rng, readonly=readonly, retry_first=retry_first, urgent=urgent,
                         on_retry=store.count_retry)
        self._store = store
        self._conn: asyncpg.Connection | None = None
        self._commit_sent = False
        self.notify_channel = store.notify_channel

    async def _cross(self, ops: list[Op[Any]], *, begin: bool, end: End) -> list[Any]:
        steps = [op.step for op in ops]
        if end == "rollback" and not ops:  # giving back what the unit held: never refused, never counted
            return await self._cross_unguarded(steps, begin, end)
        # The breaker admits units of work at their first crossing; later ones of an admitted unit only
        # report how they went (a refusal mid-unit would strand its connection).
        return await self._store._guarded(self._cross_unguarded, steps, begin, end, admit=begin)

    async def _cross_unguarded(self, steps: list[Step], begin: bool, end: End) -> list[Any]:
        try:
            return await self._store._aio(self._batch, steps, begin, end)
        except StoreUnavailable as exc:
            if self._commit_sent and not isinstance(exc, CommitUnknown):
                raise CommitUnknown(f"connection lost during COMMIT: {exc}") from exc
            raise

    async def _batch(self, steps: list[Step], begin: bool, end: End) -> list[Any]:
        # asyncio side: runs the whole batch in one bridge crossing.
        pool = self._store._pool
        if begin:
            self._commit_sent = False
            self._conn = await pool.acquire()
        conn = self._conn
        assert conn is not None
        try:
            if begin and end == "commit" and not self.readonly and len(steps) == 1 and isinstance(steps[0], Cmd):
                # A unit of work that is one statement: PostgreSQL runs it atomically on its own, so BEGIN and
                # COMMIT would be two round trips for nothing. A lost connection leaves its outcome as unknown as
                # a lost COMMIT's.
                self._commit_sent = True
                results = [await _exec(conn, steps[0])]
            else:
                if begin:
                    await conn.execute("BEGIN READ ONLY" if self.readonly else "BEGIN")
                results = [await _run_step(conn, step) for step in steps]
            if end == "commit" and not self._commit_sent:
                self._commit_sent = True
                await conn.execute("COMMIT")
            elif end == "rollback":
                await conn.execute("ROLLBACK")
        except BaseException as exc:
            self._conn = None
            await _give_back(pool, conn, exc)
            raise
        if end is not None:
            self._conn = None
            await pool.release(conn)
        return results


class HeldLock:
    """A session advisory lock this process holds (``PostgresStore.try_lock``); the store releases what is still
    held when it closes."""

    def __init__(self, store: PostgresStore, conn: asyncpg.Connection, key: int) -> None:
        self._store = store
        self._conn: asyncpg.Connection | None = conn
        self._key = key

    @property
    def held(self) -> bool:
        """Not released, and its connection not known to be dead (``alive`` asks the server)."""
        try:
            return self._conn is not None and not self._conn.is_closed()
        except asyncpg.InterfaceError:  # the pool took back a connection that died
            return False

    async def alive(self) -> bool:
        """Whether the lock is still ours, asking the server (its session may have died unnoticed)."""
        conn = self._conn
        if conn is None or not self.held:
            return False
        try:
            await self._store._aio(conn.fetchval, "SELECT 1")
        except StoreError:
            return False
        return True

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        self._store._held_locks.discard(self)
        if conn is not None:
            with trio.CancelScope(shield=True):
                try:
                    await self._store._aio(self._store._unlock, conn, self._key)
                except StoreError:
                    pass  # the session is gone, and the lock with it


class PostgresStore(StoreBase):
    """See the module docstring. Open with :func:`storage.open_store`."""

    backend: Literal["sqlite", "postgresql"] = "postgresql"

    def __init__(self, dsn: str, config: StoreConfig, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(config)
        self._dsn = dsn
        self._loop = loop
        self._pool: asyncpg.Pool = None  # set by _open
        self._lock_pool: asyncpg.Pool = None
        self.notify_channel = config.notify_channel + (f"_{config.pg_schema}" if config.pg_schema else "")
        self._schema_key = config.pg_schema or ""
        self.applied_migrations: list[int] = []
        self._held_locks: set[HeldLock] = set()

    async def _aio(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await _aio(self._loop, fn, *args)

    async def _guarded(self, fn: Callable[..., Awaitable[T]], *args: Any, admit: bool = True) -> T:
        """``await fn(*args)`` as one call of the PostgreSQL breaker (when the store has one): refused at
        once with StoreCircuitOpen while it is open (``admit``); a lost or refused connection, and a call past
        the breaker's call timeout, count as failures; an error the server answered with does not."""
        breaker = self.breaker
        if breaker is None:
            return await fn(*args)
        try:
            return await breaker.call(fn, *args, failures=StoreUnavailable, admit=admit)
        except CircuitOpen as refused:
            raise StoreCircuitOpen(f"the database is unavailable ({refused})", refused.retry_after) from None

    def _connect_kwargs(self) -> _ConnectKwargs:
        return _connect_kwargs(self.config)

    async def _open(self) -> None:
        await self._aio(self._open_pools)

    async def _open_pools(self) -> None:
        kwargs = self._connect_kwargs()
        conn = await asyncpg.connect(self._dsn, **kwargs)
        try:
            if self.config.migrate_on_open:
                self.applied_migrations = await _migrate(conn, self.config.pg_schema, MIGRATIONS)
            elif await _schema_version(conn) < len(MIGRATIONS):
                raise StoreError("the database schema is behind this code: run the migrations first")
        finally:
            await conn.close()
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self.config.pg_min_size,
                max_size=self.config.pg_max_size,
                reset=_no_session_state,
                **kwargs,
            )
            self._lock_pool = await asyncpg.create_pool(
                self._dsn, min_size=0, max_size=self.config.pg_lock_pool_size, **kwargs
            )
        except BaseException:
            await self._close_pools()
            raise

    def _new_transaction(self, *, readonly: bool, retry_first: bool, urgent: bool) -> PostgresTransaction:
        return PostgresTransaction(self, readonly=readonly, retry_first=retry_first, urgent=urgent)

    async def close(self) -> None:
        """Close both pools: connections in use get ``pg_close_timeout`` to come back, then every connection
        is terminated, so close is bounded. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            for held in list(self._held_locks):  # the pool waits for its connections: give them back first
                await held.release()
            await self._aio(self._close_pools)

    async def _close_pools(self) -> None:
        for pool in (self._lock_pool, self._pool):
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), timeout=self.config.pg_close_timeout)
                except TimeoutError:
                    log.warning("connections still in use at close; terminating them",
                                extra={"fields": {"afterSeconds": self.config.pg_close_timeout}})
                    pool.terminate()

    def pool_stats(self) -> PoolStats:
        pool = self._pool
        if pool is None:
            return PoolStats(in_use=0, open=0, max_size=self.config.pg_max_size)
        size = pool.get_size()
        return PoolStats(in_use=size - pool.get_idle_size(), open=size, max_size=pool.get_max_size())

    async def ping(self) -> None:
        """Raise StoreError unless the database answers (through the breaker: refused while it is open, and a
        probe when half open)."""
        await self._guarded(self._aio, self._ping)

    async def _ping(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    @asynccontextmanager
    async def device_lock(self, user_id: str, device_id: str) -> AsyncIterator[None]:
        """Serialize work per (user, device) across every process sharing the database: a
        session advisory lock held on a connection of the dedicated lock pool."""
        key = _lock_key(
            "vigil.device",
            self._schema_key,
            v.text("user_id", user_id, 1024),
            v.text("device_id", device_id, 1024),
        )
        conn = await self._aio(self._lock, key)
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                await self._aio(self._unlock, conn, key)

    async def try_lock(self, name: str) -> HeldLock | None:
        """Take the session advisory lock ``name`` if it is free, never waiting: the held lock, or None when
        another session holds it. Held on a lock-pool connection until released or that connection dies (a
        crashed process frees it at once); through the database's breaker."""
        key = _lock_key("vigil.lease", self._schema_key, v.text("name", name, 1024))
        conn = await self._guarded(self._aio, self._try_lock, key)
        if conn is None:
            return None
        held = HeldLock(self, conn, key)
        self._held_locks.add(held)
        return held

    async def _try_lock(self, key: int) -> asyncpg.Connection | None:
        conn = await self._lock_pool.acquire()
        try:
            got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
        except BaseException as exc:
            await _give_back(self._lock_pool, conn, exc)
            raise
        if not got:
            await self._lock_pool.release(conn)
            return None
        return conn

    async def _lock(self, key: int) -> asyncpg.Connection:
        conn = await self._lock_pool.acquire()
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", key)
        except BaseException as exc:
            # Cancelled while waiting: dropping the session also drops a lock granted meanwhile.
            await _give_back(self._lock_pool, conn, exc)
            raise
        return conn

    async def _unlock(self, conn: asyncpg.Connection, key: int) -> None:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", key)
        except Exception as exc:
            # The session is broken, and a lock never outlives its session: drop both.
            await _give_back(self._lock_pool, conn, exc)
            return
        await self._lock_pool.release(conn)

    @asynccontextmanager
    async def outbox_notifications(
        self, *, buffer: int = 1024
    ) -> AsyncIterator[trio.MemoryReceiveChannel[int]]:
        """Ids of outbox events as their transactions commit (LISTEN on a dedicated
        connection). A hint, not a queue: a full buffer drops ids, so consumers must still
        poll ``claim`` now and then. The channel ends if the connection is lost: subscribe
        again."""
        send, receive = trio.open_memory_channel[int](buffer)

        def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            # Called by the asyncio loop, which trio-asyncio runs on the trio thread.
            try:
                send.send_nowait(int(payload))
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
                pass

        conn = await self._aio(self._listen, on_notify, lambda _conn: send.close())
        try:
            yield receive
        finally:
            send.close()
            with trio.CancelScope(shield=True):
                await self._aio(self._unlisten, conn, on_notify)

    async def _listen(
        self, callback: Callable[..., None], on_lost: Callable[[Any], None]
    ) -> asyncpg.Connection:
        conn = await asyncpg.connect(self._dsn, **self._connect_kwargs())
        try:
            conn.add_termination_listener(on_lost)
            await conn.add_listener(self.notify_channel, callback)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _unlisten(self, conn: asyncpg.Connection, callback: Callable[..., None]) -> None:
        try:
            await conn.remove_listener(self.notify_channel, callback)
        finally:
            await conn.close()
