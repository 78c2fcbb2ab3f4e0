"""The stale-session reaper: a ``consumption_session`` still ``active`` an hour past its ``endAt`` is ended by
the server (API.md "Sync": a change every device pulls, and that triggers session impact).

Ending goes through the sync domain's apply path for server-made changes (``EndSession``: in production
``SyncService.apply_server_change``, bound once the system runs: see ``SessionEnder``), never around it, so the
change gets its version, its place in the change log, its outbox event and its realtime ``sync.changed``.

Every ``interval`` one process does a pass: it holds the coordination lease ``LEASE`` (Redis across processes;
in-process without Redis) for ``lease_ttl`` and renews it on each pass while it lives, so a crashed holder's
successor takes over within a ttl. A pass pages through the active sessions (a partial index holds only those)
and ends the stale ones (``is_stale``, against the store's wall clock). One that fails to end is logged and
tried again next pass.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from kernel import Actor
from storage import Json, Store, StoreError, SyncEntity
from storage.coordination import CoordinationError, Leases

from ._impact import SESSION, STALE_AFTER, ended, is_stale

log = logging.getLogger("vigil.projection")

# (user_id, entity_type, entity_id, data): apply a server-made change to a synced entity (what it returns is
# not read: SyncService.apply_server_change returns the stored entity).
EndSession = Callable[[str, str, str, Json], Awaitable[object]]
LEASE = "projection:stale-session-reaper"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionReaperConfig:
    interval: float | None = 60.0  # seconds between passes; None: only when asked (ReapSessions)
    grace: float = STALE_AFTER.total_seconds()  # how long past endAt an active session is left alone
    page: int = 500  # active sessions read per statement
    lease_ttl: float | None = None  # None: 3 * interval (a missed pass or two does not hand over)

    @property
    def ttl(self) -> float:
        if self.lease_ttl is not None:
            return self.lease_ttl
        return 3 * self.interval if self.interval is not None else 300.0


class NotBound(RuntimeError):
    """The session ender has no apply path yet (the sync domain is not wired in)."""


class SessionEnder:
    """The ``EndSession`` the reaper calls, bound to the sync domain's apply path once the system runs
    (the reaper is built before the facades exist): ``bind(sync_service.apply_server_change)``."""

    def __init__(self, end: EndSession | None = None) -> None:
        self._end = end

    def bind(self, end: EndSession) -> None:
        self._end = end

    @property
    def bound(self) -> bool:
        return self._end is not None

    async def __call__(self, user_id: str, entity_type: str, entity_id: str, data: Json) -> object:
        if self._end is None:
            raise NotBound("no apply path for server-made sync changes is bound")
        return await self._end(user_id, entity_type, entity_id, data)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReapSessions:
    """Ask: one pass now (if this process holds the lease); the reply is the number of sessions ended."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Tick:
    pass


class StaleSessionReaper(Actor):
    def __init__(self, *, store: Store, ender: SessionEnder, leases: Leases | None, owner: str,
                 config: SessionReaperConfig) -> None:
        self.store = store
        self.ender = ender
        self.leases = leases
        self.owner = owner
        self.config = config
        self.ended = 0

    async def started(self) -> None:
        self._schedule()

    def _schedule(self) -> None:
        if self.config.interval is not None:
            self.send_after(self.config.interval, _Tick())

    async def receive(self, msg: Any) -> Any:
        match msg:
            case ReapSessions():
                return await self._pass()
            case _Tick():
                try:
                    await self._pass()
                except (StoreError, CoordinationError) as exc:
                    log.warning("stale-session pass failed, next in %s s: %s", self.config.interval, exc)
                finally:
                    self._schedule()
                return None
            case _:
                raise TypeError(f"stale-session reaper: unexpected message {msg!r}")

    async def _holds_lease(self) -> bool:
        if self.leases is None:
            return True
        return await self.leases.acquire(LEASE, self.owner, self.config.ttl)

    async def _current(self, user_id: str, session_id: str) -> SyncEntity | None:
        async with self.store.transaction(readonly=True) as tx:
            (found,) = await tx.commit(tx.entities.get(user_id, SESSION, session_id))
        return found

    async def _pass(self) -> int:
        if not self.ender.bound or not await self._holds_lease():
            return 0
        grace = timedelta(seconds=self.config.grace)
        count = 0
        after: tuple[str, str] | None = None
        while True:
            now = self.store.config.clock()
            async with self.store.transaction(readonly=True) as tx:
                (page,) = await tx.commit(tx.sessions.active(after=after, limit=self.config.page))
            for session in page:
                if not is_stale(session.data, now, grace=grace):
                    continue
                try:
                    # Read again just before: a device's push since the page was read is kept, not overwritten.
                    current = await self._current(session.user_id, session.entity_id)
                    if current is None or current.deleted or not is_stale(current.data, now, grace=grace):
                        continue
                    await self.ender(session.user_id, SESSION, session.entity_id, ended(current.data))
                except Exception as exc:  # its owner's data, a conflict, the database: next pass tries again
                    log.warning("could not end stale session %s of %s: %s", session.entity_id, session.user_id, exc)
                    continue
                count += 1
            if len(page) < self.config.page:
                break
            after = (page[-1].user_id, page[-1].entity_id)
        self.ended += count
        return count


__all__ = ["LEASE", "EndSession", "NotBound", "ReapSessions", "SessionEnder", "SessionReaperConfig",
           "StaleSessionReaper"]
