"""The ingest reaper: frees requests left "processing".

A lane claims and completes a request in one transaction, so it never leaves a claim behind; the
reaper is the safety net for claims committed on their own by anything else (a process of an
earlier version that died mid-way, a claim written by hand or by a tool). A claim older than
``stale_after`` is marked failed, so the client's retry (same requestId, same hash) claims it again
instead of getting 409 forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.maintenance import ReapGuard
from kernel import Actor
from storage import Store


@dataclass(frozen=True, slots=True, kw_only=True)
class ReapNow:
    """Ask message: reap once now; the reply is the number of requests freed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReapedSoFar:
    """Ask message: how many requests this incarnation has freed, ticks and ReapNow together.

    Answered in mailbox order, so the reply also says that every reap queued before it has finished.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class _Tick:
    """The periodic reap; re-armed after each one, so a slow reap never lets ticks pile up."""


class IngestReaper(Actor):
    def __init__(self, *, store: Store, interval: float = 30.0, stale_after: float = 120.0,
                 guard: ReapGuard | None = None) -> None:
        self.store = store
        self.interval = interval
        self.stale_after = stale_after
        self.guard = guard  # the lease across processes and the vigil_reaped_total tally ("ingest_claims")
        self.reaped = 0

    async def started(self) -> None:
        self.send_after(self.interval, _Tick())

    async def stopping(self) -> None:
        if self.guard is not None:
            await self.guard.release()

    async def receive(self, msg: Any) -> Any:
        match msg:
            case ReapNow():
                return await self._reap()
            case ReapedSoFar():
                return self.reaped
            case _Tick():
                try:
                    await self._reap()
                finally:
                    self.send_after(self.interval, _Tick())
                return None
            case _:
                raise TypeError(f"ingest reaper: unexpected message {msg!r}")

    async def _reap(self) -> int:
        if self.guard is not None and not await self.guard.acquire():
            return 0  # another process runs this reaper
        async with self.store.transaction() as tx:
            (freed,) = await tx.commit(tx.ingest.reap_stale(self.stale_after))
        self.reaped += freed
        if self.guard is not None:
            self.guard.reaped(int(freed))
        return int(freed)
