"""The maintenance subtree and its facade.

    maintenance (one_for_one)
     ├── ingest_results      Reaper: finished ingest requests past retention
     ├── sync_results        Reaper: sync operation results past retention
     ├── tombstones          Reaper: soft-deleted samples' payloads past 30 days
     └── checkpoint_leases   Reaper: long-expired projection checkpoint leases

``MaintenanceDomain`` also hands the other domains' reapers (``ingest_claims``, ``outbox``) their guard, so every
reaper shares one lease scheme and one ``vigil_reaped_total`` tally.
"""

from __future__ import annotations

from collections.abc import Mapping

from kernel import ActorRef, ActorSystem, ChildSpec, Supervisor
from storage import Store
from storage.coordination import Leases

from ._errors import UnknownReaper
from ._guard import ReapedCounts, ReapGuard
from ._jobs import STATEMENTS, MaintenanceConfig
from ._messages import ReapedSoFar, ReapNow
from ._reaper import Reaper


class MaintenanceDomain:
    name = "maintenance"

    def __init__(self, store: Store, config: MaintenanceConfig | None = None, *, owner: str,
                 leases: Leases | None = None, counts: ReapedCounts | None = None) -> None:
        self.store = store
        self.config = config or MaintenanceConfig()
        self.owner = owner
        self.leases = leases
        self.counts = counts if counts is not None else ReapedCounts()

    def guard(self, name: str, *, ttl: float) -> ReapGuard:
        """The lease and tally of the reaper ``name`` (this domain's, or another domain's)."""
        return ReapGuard(name, counts=self.counts, leases=self.leases, owner=self.owner, ttl=ttl)

    def subtree(self) -> Supervisor:
        children: list[ChildSpec | Supervisor] = [
            ChildSpec(job.name, Reaper, kwargs={"store": self.store, "job": job, "statement": STATEMENTS[job.name],
                                                "guard": self.guard(job.name, ttl=job.lease_ttl)},
                      mailbox=8, overflow="drop_oldest")
            for job in self.config.jobs
        ]
        return Supervisor(self.name, strategy="one_for_one", max_restarts=20, within=60.0, base_delay=0.5,
                          max_delay=30.0, children=children)

    def service(self, system: ActorSystem | None, *, under: str = "root") -> MaintenanceService:
        """The facade; with ``system`` None (a process that runs no reapers of its own) it only reports counts."""
        refs = {job.name: system.ref(f"{under}/{self.name}/{job.name}") for job in self.config.jobs} \
            if system is not None else {}
        return MaintenanceService(reapers=refs, counts=self.counts, ask_timeout=self.config.ask_timeout)


class MaintenanceService:
    """Run a reaper now (operators, tests); what every reaper of this process removed (``/metrics``)."""

    def __init__(self, *, reapers: Mapping[str, ActorRef], counts: ReapedCounts, ask_timeout: float) -> None:
        self._reapers = dict(reapers)
        self._counts = counts
        self._timeout = ask_timeout

    async def reap_now(self, name: str) -> int:
        """One pass of reaper ``name`` now (subject to its lease); how many rows it reaped."""
        return int(await self._reaper(name).ask(ReapNow(), timeout=self._timeout))

    async def reaped_so_far(self, name: str) -> int:
        """What reaper ``name``'s current incarnation reaped, once every pass queued before this has finished."""
        return int(await self._reaper(name).ask(ReapedSoFar(), timeout=self._timeout))

    def _reaper(self, name: str) -> ActorRef:
        ref = self._reapers.get(name)
        if ref is None:
            raise UnknownReaper(name, tuple(self._reapers))
        return ref

    def reaped(self) -> Mapping[str, int]:
        return self._counts.snapshot()


__all__ = ["MaintenanceDomain", "MaintenanceService"]
