"""The store contract both backends implement (type against this, not a backend class)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol, TypeVar

import trio

from ._config import RetryPolicy, StoreConfig
from ._model import PoolStats, PreparedSamples, SampleIn
from ._repos import SamplePreparer
from ._transaction import Transaction

__all__ = ["Store"]

T = TypeVar("T")


class Store(Protocol):
    """A durable store: SQLite (one process) or PostgreSQL (many processes).

    Units of work::

        async with store.transaction() as tx:          # commits on exit, rolls back on error
            counts, wm = await tx.run(tx.samples.upsert_many(user, rows), tx.watermarks.bump(user))
            await tx.commit(tx.outbox.enqueue(user, "health.samples.changed", {...}))

        result = await store.transact(work)            # work(tx) rerun on transient errors
    """

    backend: Literal["sqlite", "postgresql"]
    config: StoreConfig
    applied_migrations: list[int]  # versions this open applied (empty when up to date)

    def transaction(self, *, readonly: bool = False, urgent: bool = False) -> Transaction:
        """A new unit of work (an async context manager yielding itself); ``urgent`` goes before
        waiting non-urgent work on a single-writer backend."""
        ...

    async def transact(
        self,
        work: Callable[[Transaction], Awaitable[T]],
        *,
        readonly: bool = False,
        retry: RetryPolicy | None = None,
        urgent: bool = False,
    ) -> T:
        """Run ``work(tx)`` and commit, retrying the whole unit on transient errors."""
        ...

    def prepare_samples(self, rows: Sequence[SampleIn]) -> PreparedSamples:
        """``rows`` checked and converted now (no I/O) for a later ``tx.samples.upsert_many``;
        raises InvalidData as that would."""
        ...

    @property
    def preparer(self) -> SamplePreparer:
        """``prepare_samples`` as plain, picklable data (backend and limits), for another process."""
        ...

    def device_lock(self, user_id: str, device_id: str) -> AbstractAsyncContextManager[None]:
        """Exclusive per (user, device) for the duration of the block, across processes."""
        ...

    def outbox_notifications(
        self, *, buffer: int = 1024
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[int]]:
        """Outbox event ids as they commit (a wake-up hint; poll as well)."""
        ...

    def pool_stats(self) -> PoolStats:
        """Connections in use, open and at most (no I/O): what /metrics shows of the pool."""
        ...

    async def ping(self) -> None:
        """Raise StoreError unless the database answers (health checks)."""
        ...

    async def close(self) -> None:
        """Release connections and threads; idempotent."""
        ...
