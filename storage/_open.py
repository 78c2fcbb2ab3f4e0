"""Choosing and opening a backend from a URL, and running migrations."""

from __future__ import annotations

from collections.abc import Generator
from contextlib import AsyncExitStack
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kernel import POSTGRES, Breakers

from ._config import StoreConfig
from ._errors import InvalidData, StoreError
from ._protocol import Store

if TYPE_CHECKING:
    # Imported where used at run time: a SQLite deployment never loads asyncpg.
    from ._postgres import PostgresStore
    from ._sqlite import SqliteStore

__all__ = ["StoreOpener", "migrate", "open_store", "parse_url"]


def parse_url(url: str) -> tuple[str, str]:
    """``("sqlite", path)`` or ``("postgresql", dsn)``.

    ``sqlite:///./data/vigil.db`` (relative), ``sqlite:////var/lib/vigil.db`` (absolute),
    ``sqlite:///:memory:``; ``postgresql://user@host:5432/db`` (or ``postgres://``).
    """
    if not isinstance(url, str):
        raise InvalidData("url", "expected a string")
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            raise InvalidData("url", "expected sqlite:///PATH or sqlite:///:memory:")
        return "sqlite", url[len("sqlite:///") :]
    if scheme in ("postgresql", "postgres"):
        return "postgresql", url
    raise InvalidData("url", f"unsupported database URL scheme {scheme!r} (use sqlite or postgresql)")


async def _open(url: str, config: StoreConfig, breakers: Breakers | None = None) -> SqliteStore | PostgresStore:
    kind, target = parse_url(url)
    store: SqliteStore | PostgresStore
    if kind == "sqlite":
        from ._sqlite import SqliteStore

        store = SqliteStore(target, config)
    else:
        import trio_asyncio

        from ._postgres import PostgresStore

        loop = trio_asyncio.current_loop.get()
        if loop is None:
            raise StoreError(
                "a PostgreSQL store must be opened inside `async with trio_asyncio.open_loop():`"
                " (or use `async with open_store(url)`, which opens one)"
            )
        store = PostgresStore(target, config, loop)
        if breakers is not None:
            store.dependency = breakers[POSTGRES]
    await store._open()
    return store


class StoreOpener:
    """What :func:`open_store` returns: await it, or use it as an async context manager.

    ``store = await open_store(url)`` needs a running trio-asyncio loop for PostgreSQL and
    leaves ``await store.close()`` to the caller. ``async with open_store(url) as store``
    closes it on exit and, for PostgreSQL, opens ``trio_asyncio.open_loop()`` around the
    block when none is running (tasks started inside the block can then use the store).
    """

    def __init__(self, url: str, config: StoreConfig, breakers: Breakers | None = None) -> None:
        self._url = url
        self._config = config
        self._breakers = breakers
        self._stack = AsyncExitStack()
        self._store: Store | None = None

    def __await__(self) -> Generator[Any, None, Store]:
        return _open(self._url, self._config, self._breakers).__await__()

    async def __aenter__(self) -> Store:
        if parse_url(self._url)[0] == "postgresql":
            import trio_asyncio

            if trio_asyncio.current_loop.get() is None:
                await self._stack.enter_async_context(trio_asyncio.open_loop())
        try:
            self._store = await _open(self._url, self._config, self._breakers)
        except BaseException:
            await self._stack.aclose()
            raise
        return self._store

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._store is not None:
                await self._store.close()
        finally:
            await self._stack.aclose()


def open_store(url: str, *, config: StoreConfig | None = None, breakers: Breakers | None = None) -> StoreOpener:
    """Open the store the URL names (``sqlite:///...`` or ``postgresql://...``); migrations
    run on open (always for SQLite, per ``config.migrate_on_open`` for PostgreSQL). With ``breakers``,
    PostgreSQL's work goes through ``breakers["postgres"]`` (refused fast with StoreCircuitOpen while it is
    open) and the store's retries are counted there."""
    parse_url(url)  # fail fast on a bad URL, before anything is awaited
    return StoreOpener(url, config or StoreConfig(), breakers)


async def migrate(url: str, *, config: StoreConfig | None = None) -> list[int]:
    """Bring the database at ``url`` to the newest schema; returns the versions applied.

    A trio async function (``trio.run(migrate, url)``); for PostgreSQL it opens its own
    trio-asyncio loop when none is running. Safe to run concurrently from several processes.
    """
    config = replace(config or StoreConfig(), migrate_on_open=True)
    kind, target = parse_url(url)
    if kind == "sqlite":
        async with open_store(url, config=config) as store:
            return list(store.applied_migrations)
    import trio_asyncio

    from ._postgres import migrate_postgres

    async with AsyncExitStack() as stack:
        if trio_asyncio.current_loop.get() is None:
            await stack.enter_async_context(trio_asyncio.open_loop())
        return await migrate_postgres(target, config, trio_asyncio.current_loop.get())
