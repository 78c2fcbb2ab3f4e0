"""One retention reaper: a timer, a lease and a bounded loop of statements (``_jobs``)."""

from __future__ import annotations

import logging
from typing import Any

from kernel import Actor
from storage import Store, StoreError

from ._guard import ReapGuard
from ._jobs import ReapJob, Statement, another_batch
from ._messages import ReapedSoFar, ReapNow, Tick

log = logging.getLogger("vigil.maintenance")


class Reaper(Actor):
    def __init__(self, *, store: Store, job: ReapJob, statement: Statement, guard: ReapGuard) -> None:
        self.store = store
        self.job = job
        self.statement = statement
        self.guard = guard
        self.reaped = 0

    async def started(self) -> None:
        self._schedule()

    async def stopping(self) -> None:
        await self.guard.release()

    async def receive(self, msg: Any) -> Any:
        match msg:
            case ReapNow():
                return await self._pass()
            case ReapedSoFar():
                return self.reaped
            case Tick():
                try:
                    await self._pass()
                except StoreError as exc:  # the database is down: try again next interval, no restart
                    log.warning("reaper pass failed", extra={"fields": {"reaper": self.job.name, "error": str(exc),
                                                                        "retryInSeconds": self.job.interval}})
                finally:
                    self._schedule()
                return None
            case _:
                raise TypeError(f"reaper {self.job.name}: unexpected message {msg!r}")

    def _schedule(self) -> None:
        if self.job.interval is not None:
            self.send_after(self.job.interval, Tick())

    async def _pass(self) -> int:
        if not await self.guard.acquire():
            return 0  # another process holds this reaper's lease
        total = 0
        while True:
            async with self.store.transaction() as tx:
                (touched,) = await tx.commit(self.statement(tx, self.job))
            total += int(touched)
            self.reaped += int(touched)
            self.guard.reaped(int(touched))
            if not another_batch(self.job, int(touched)):
                break
        if total:
            log.info("reaped", extra={"fields": {"reaper": self.job.name, "count": total}})
        return total


__all__ = ["Reaper"]
