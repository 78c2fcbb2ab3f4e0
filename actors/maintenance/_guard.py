"""What makes a reaper one of its kind across processes and visible to operators: a coordination lease per
reaper (``reaper:<name>``) and a shared tally of what each reaper removed (``vigil_reaped_total``).

The lease is held, not released, between passes: the holder renews it every pass, the other processes see it
held and skip; when the holder dies the lease lapses after its ttl and another process takes over. If the
coordination backend fails the pass runs anyway (every reap is idempotent and bounded): Redis down must not let
tables grow. ``release`` gives it up at shutdown, so a successor need not wait for the ttl.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from storage.coordination import CoordinationError, Leases

log = logging.getLogger("vigil.maintenance")


class ReapedCounts:
    """Rows each reaper removed (or freed) since the process started, by reaper name."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def register(self, name: str) -> None:
        """Report ``name`` (at 0) before its first pass, so the series exists from the start."""
        self._counts.setdefault(name, 0)

    def add(self, name: str, count: int) -> None:
        self._counts[name] = self._counts.get(name, 0) + count

    def snapshot(self) -> Mapping[str, int]:
        return dict(self._counts)


class ReapGuard:
    """One reaper's lease across processes and its count; with ``leases`` None (one process) it always may run."""

    def __init__(self, name: str, *, counts: ReapedCounts, leases: Leases | None, owner: str, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError(f"a reaper lease needs a positive ttl, got {ttl}")
        self.name = name
        self.counts = counts
        self._leases = leases
        self._owner = owner
        self._ttl = ttl
        self._lease = f"reaper:{name}"
        counts.register(name)

    async def acquire(self) -> bool:
        """True when this process should run the pass: it holds (or just took) the lease, or the backend failed."""
        if self._leases is None:
            return True
        try:
            return await self._leases.acquire(self._lease, self._owner, self._ttl)
        except CoordinationError as exc:
            log.warning("reaper lease unavailable; reaping anyway", extra={"fields": {"reaper": self.name,
                                                                                      "error": str(exc)}})
            return True

    async def release(self) -> None:
        if self._leases is None:
            return
        try:
            await self._leases.release(self._lease, self._owner)
        except CoordinationError as exc:
            log.warning("could not release a reaper lease (it lapses by itself)",
                        extra={"fields": {"reaper": self.name, "error": str(exc)}})

    def reaped(self, count: int) -> None:
        self.counts.add(self.name, count)


__all__ = ["ReapGuard", "ReapedCounts"]
