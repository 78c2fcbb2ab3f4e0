"""The projection reaper: completed outbox events and their checkpoints go after ``retention``.

Nothing grows forever: at 20,000 events a second the outbox would otherwise hold billions of rows within a
week. Dead letters stay until an operator replays or discards them. One pass deletes at most ``limit`` rows, and
a pass that hit the limit runs again at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from actors.maintenance import ReapGuard
from kernel import Actor
from storage import Store, StoreError

log = logging.getLogger("vigil.projection")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReaperConfig:
    interval: float | None = 600.0  # None: only when asked (PurgeNow)
    retention: float = 24 * 3600.0  # completed events and checkpoints are kept this long (seconds)
    limit: int = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class PurgeNow:
    """Ask: purge once now; the reply is the number of events deleted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Tick:
    pass


class ProjectionReaper(Actor):
    def __init__(self, *, store: Store, config: ReaperConfig, guard: ReapGuard | None = None) -> None:
        self.store = store
        self.config = config
        self.guard = guard  # the lease across processes and the vigil_reaped_total tally ("outbox")
        self.purged = 0

    async def started(self) -> None:
        self._schedule()

    async def stopping(self) -> None:
        if self.guard is not None:
            await self.guard.release()

    async def receive(self, msg: Any) -> Any:
        match msg:
            case PurgeNow():
                return await self._purge()
            case _Tick():
                try:
                    await self._purge()
                except StoreError as exc:
                    log.warning("outbox purge failed, next try in %s s: %s", self.config.interval, exc)
                finally:
                    self._schedule()
                return None
            case _:
                raise TypeError(f"projection reaper: unexpected message {msg!r}")

    def _schedule(self) -> None:
        if self.config.interval is not None:
            self.send_after(self.config.interval, _Tick())

    async def _purge(self) -> int:
        if self.guard is not None and not await self.guard.acquire():
            return 0  # another process runs this reaper
        total = 0
        while True:
            async with self.store.transaction() as tx:
                (deleted,) = await tx.commit(tx.outbox.purge_completed(self.config.retention, limit=self.config.limit))
            total += deleted
            if self.guard is not None:
                self.guard.reaped(int(deleted))
            if deleted < self.config.limit:
                break
        self.purged += total
        return total


__all__ = ["ProjectionReaper", "PurgeNow", "ReaperConfig"]
