"""The projection domain's wiring and its facade.

    projection (one_for_one)
     ├── readers (keyed by user)   ProjectionReader: read models with their freshness
     ├── admin                     OutboxAdmin: dead letters; the outbox and lag figures
     │   -- the worker role only: --
     ├── workers (one_for_one)     a ProjectionWorker per handler (daily_rollups, sleep_nights, ...)
     ├── dispatcher                OutboxDispatcher: outbox events -> checkpoints, handed to the workers
     ├── relay                     NotificationRelay: local commits and PostgreSQL NOTIFY -> dispatcher
     ├── reaper                    ProjectionReaper: completed events and checkpoints past retention
     └── session_reaper            StaleSessionReaper: ends consumption sessions left active past endAt

``run.py serve --role web`` runs readers and admin (reads, operators' endpoints), ``--role worker`` adds the
rest; any number of each share one database. ``ProjectionDomain`` builds the subtree (and the state its actors
share: handler gates with their breakers, the figures) before the system starts; ``service(system)`` gives the
``ProjectionService`` the HTTP layer calls.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import trio

from actors.ingest import REGISTRY
from actors.maintenance import ReapGuard
from kernel import ActorRef, ActorSystem, ChildSpec, KeyedRef, Supervisor
from storage import DeadLetterItem, HandlerLag, OutboxStats, Store
from storage.coordination import Leases

from ._dispatcher import DispatcherConfig, NotificationRelay, OutboxDispatcher, OutboxFlusher
from ._errors import NoRollup, NoSession, UnknownDeadLetter
from ._impact_reader import ProductImpactView, SessionImpactView
from ._messages import Dispatch, ReadNights, ReadProductImpact, ReadRollups, ReadSessionImpact, Tick
from ._plan import Route
from ._projections import default_projections, has_rollup
from ._reader import (
    Discard,
    ListDeadLetters,
    NightsView,
    OutboxAdmin,
    ProjectionGauges,
    ProjectionReader,
    Replay,
    RollupsView,
)
from ._reaper import ProjectionReaper, PurgeNow, ReaperConfig
from ._session_reaper import EndSession, ReapSessions, SessionEnder, SessionReaperConfig, StaleSessionReaper
from ._worker import HandlerConfig, HandlerGate, Projection, ProjectionWorker, Publishes


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectionConfig:
    dispatcher: DispatcherConfig = field(default_factory=DispatcherConfig)
    handler: HandlerConfig = field(default_factory=HandlerConfig)
    reaper: ReaperConfig = field(default_factory=ReaperConfig)
    session_reaper: SessionReaperConfig = field(default_factory=SessionReaperConfig)
    reader_idle_timeout: float = 300.0
    ask_timeout: float = 10.0
    figures_interval: float | None = 2.0  # None: read once at start (tests)
    run_workers: bool = True  # False in the web role: reads and operators' endpoints only


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectionFigures:
    """What operators and /metrics read: the outbox's counts, each handler's lag, the local breakers.

    Refreshed in the background every ``figures_interval`` (a scrape never waits for the database);
    ``age`` says how old they are (None: not read yet)."""

    outbox: OutboxStats | None
    lag: tuple[HandlerLag, ...]
    breakers: Mapping[str, str]  # handler -> closed | open | half_open, for the handlers this process runs
    age: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterPage:
    items: tuple[DeadLetterItem, ...]
    next_cursor: str | None  # "<event id>.<handler>" of the last item, when there may be more


def process_owner() -> str:
    """This process's name on the leases it takes (host, pid and a random part: a restarted pid is another owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class ProjectionDomain:
    name = "projection"

    def __init__(self, store: Store, config: ProjectionConfig | None = None, *, publisher: Publishes | None = None,
                 projections: Sequence[Projection] | None = None, owner: str | None = None,
                 end_session: EndSession | None = None, leases: Leases | None = None,
                 reap_guard: ReapGuard | None = None) -> None:
        """``end_session``: the sync domain's apply path for server-made changes, which the stale-session
        reaper ends sessions through; when it exists only once the system runs, bind it later with
        ``session_ender.bind``. ``leases`` keep that reaper to one process (None: every worker process reaps);
        ``reap_guard`` does the same for the outbox reaper."""
        self.store = store
        self.session_ender = SessionEnder(end_session)
        self.leases = leases
        self.reap_guard = reap_guard
        self.config = config or ProjectionConfig()
        self.publisher = publisher
        self.projections = tuple(projections if projections is not None else default_projections())
        names = [p.name for p in self.projections]
        if len(set(names)) != len(names):
            raise ValueError(f"two projections share a name: {names}")
        self.gates = {p.name: HandlerGate(p.name, self.config.handler) for p in self.projections}
        self.gauges = ProjectionGauges()
        self.owner = owner or process_owner()

    def subtree(self) -> Supervisor:
        cfg = self.config
        children: list[ChildSpec | Supervisor] = [
            ChildSpec("readers", ProjectionReader, kwargs={"store": self.store, "gates": self.gates}, keyed=True,
                      idle_timeout=cfg.reader_idle_timeout, mailbox=64),
            ChildSpec("admin", OutboxAdmin, kwargs={"store": self.store, "gauges": self.gauges,
                                                    "refresh_interval": cfg.figures_interval}, mailbox=64),
        ]
        if cfg.run_workers:
            lock_users = self.store.backend == "postgresql"  # SQLite's single writer already serializes them
            workers = [ChildSpec(p.name, ProjectionWorker,
                                 kwargs={"store": self.store, "projection": p, "gate": self.gates[p.name],
                                         "owner": self.owner, "publisher": self.publisher,
                                         "lock_users": lock_users,
                                         "dependents": [d.name for d in self.projections if d.depends_on == p.name],
                                         "dispatcher": "dispatcher"},
                                 mailbox=32, overflow="reject", shutdown_timeout=cfg.handler.timeout)
                       for p in self.projections]
            routes = [Route(name=p.name, depends_on=p.depends_on, subscribes=p.subscribes,
                            worker=f"workers/{p.name}", gate=self.gates[p.name],
                            concerns=getattr(p, "concerns", None)) for p in self.projections]
            children += [
                Supervisor("workers", strategy="one_for_one", max_restarts=20, within=60.0, base_delay=0.1,
                           max_delay=5.0, children=workers),
                # Before the dispatcher: started first, stopped after it.
                ChildSpec("flusher", OutboxFlusher, kwargs={"store": self.store, "owner": self.owner}, mailbox=4),
                ChildSpec("dispatcher", OutboxDispatcher,
                          kwargs={"store": self.store, "routes": routes, "owner": self.owner,
                                  "config": cfg.dispatcher, "gauges": self.gauges, "publisher": self.publisher},
                          mailbox=64),
                ChildSpec("relay", NotificationRelay, kwargs={"store": self.store, "dispatcher": "dispatcher"},
                          mailbox=4, shutdown_timeout=0.5),
                ChildSpec("reaper", ProjectionReaper, kwargs={"store": self.store, "config": cfg.reaper,
                                                              "guard": self.reap_guard},
                          mailbox=8, overflow="drop_oldest"),
                ChildSpec("session_reaper", StaleSessionReaper,
                          kwargs={"store": self.store, "ender": self.session_ender, "leases": self.leases,
                                  "owner": self.owner, "config": cfg.session_reaper}, mailbox=8, overflow="drop_oldest"),
            ]
        return Supervisor(self.name, strategy="one_for_one", max_restarts=20, within=60.0, base_delay=0.1,
                          max_delay=5.0, children=children)

    def service(self, system: ActorSystem, *, under: str = "root") -> ProjectionService:
        path = f"{under}/{self.name}"
        readers = system.ref(f"{path}/readers")
        if not isinstance(readers, KeyedRef):
            raise TypeError(f"{readers.path!r} is not the keyed readers child this domain builds")
        workers = {p.name: system.ref(f"{path}/workers/{p.name}") for p in self.projections} \
            if self.config.run_workers else {}
        dispatcher = system.ref(f"{path}/dispatcher") if self.config.run_workers else None
        reaper = system.ref(f"{path}/reaper") if self.config.run_workers else None
        session_reaper = system.ref(f"{path}/session_reaper") if self.config.run_workers else None
        return ProjectionService(readers=readers, admin=system.ref(f"{path}/admin"), workers=workers,
                                 dispatcher=dispatcher, reaper=reaper, session_reaper=session_reaper, domain=self)


class ProjectionService:
    """Read models with their freshness; dead letters for operators; figures for metrics."""

    def __init__(self, *, readers: KeyedRef, admin: ActorRef, workers: dict[str, ActorRef],
                 dispatcher: ActorRef | None, reaper: ActorRef | None, domain: ProjectionDomain,
                 session_reaper: ActorRef | None = None) -> None:
        self._readers = readers
        self._session_reaper = session_reaper
        self._dispatcher = dispatcher
        self._reaper = reaper
        self._admin = admin
        self._workers = workers
        self._timeout = domain.config.ask_timeout
        self.gauges = domain.gauges
        self.gates = domain.gates

    async def daily_rollups(self, user_id: str, metric: str, start: date, end: date) -> RollupsView:
        if metric not in REGISTRY:
            raise NoRollup(metric, "unknown metric")
        if not has_rollup(metric):
            raise NoRollup(metric, "sleep stages have nights, not daily rollups (GET /v1/health/sleep/nights)")
        view = await self._readers.key(user_id).ask(ReadRollups(metric=metric, start=start, end=end),
                                                    timeout=self._timeout)
        assert isinstance(view, RollupsView)
        return view

    async def sleep_nights(self, user_id: str, start: date, end: date) -> NightsView:
        view = await self._readers.key(user_id).ask(ReadNights(start=start, end=end), timeout=self._timeout)
        assert isinstance(view, NightsView)
        return view

    async def session_impact(self, user_id: str, session_id: str) -> SessionImpactView:
        """Heart rate around one of the user's consumption sessions; ``NoSession`` for any other id."""
        view = await self._readers.key(user_id).ask(ReadSessionImpact(session_id=session_id), timeout=self._timeout)
        if view is None:
            raise NoSession(session_id)
        assert isinstance(view, SessionImpactView)
        return view

    async def product_impact(self, user_id: str) -> ProductImpactView:
        view = await self._readers.key(user_id).ask(ReadProductImpact(), timeout=self._timeout)
        assert isinstance(view, ProductImpactView)
        return view

    async def dead_letters(self, *, cursor: tuple[int, str] | None = None, limit: int = 100) -> DeadLetterPage:
        items = await self._admin.ask(ListDeadLetters(after=cursor, limit=limit + 1), timeout=self._timeout)
        more = len(items) > limit
        items = items[:limit]
        last = items[-1] if items else None
        return DeadLetterPage(items=tuple(items),
                              next_cursor=f"{last.event_id}.{last.handler or ''}" if more and last else None)

    async def replay(self, event_id: int) -> None:
        if not await self._admin.ask(Replay(event_id=event_id), timeout=self._timeout):
            raise UnknownDeadLetter(event_id)
        await self.process_due()  # due now: no need to wait for the next poll

    async def discard(self, event_id: int) -> None:
        if not await self._admin.ask(Discard(event_id=event_id), timeout=self._timeout):
            raise UnknownDeadLetter(event_id)

    async def process_due(self) -> None:
        """Dispatch and claim what is due now instead of at the next poll (retries whose backoff ended,
        expired leases, replayed dead letters); a no-op in the web role, which runs no workers."""
        if self._dispatcher is not None:
            await self._dispatcher.tell(Dispatch())
        for ref in self._workers.values():
            await ref.tell(Tick())

    async def purge_now(self) -> int:
        """Run the reaper once now (it also runs every ``reaper.interval``): completed events and checkpoints
        older than the retention go; returns how many events. 0 in the web role, which runs no reaper."""
        if self._reaper is None:
            return 0
        purged = await self._reaper.ask(PurgeNow(), timeout=self._timeout)
        return int(purged)

    async def reap_sessions_now(self) -> int:
        """One stale-session pass now (it also runs every ``session_reaper.interval``): returns how many sessions
        it ended. 0 in the web role, without the lease, or before an apply path is bound."""
        if self._session_reaper is None:
            return 0
        return int(await self._session_reaper.ask(ReapSessions(), timeout=self._timeout))

    def figures(self) -> ProjectionFigures:
        refreshed = self.gauges.refreshed_at
        age = trio.current_time() - refreshed if math.isfinite(refreshed) else None
        breakers = {name: gate.breaker.snapshot().state for name, gate in self.gates.items()} if self._workers else {}
        return ProjectionFigures(outbox=self.gauges.outbox, lag=self.gauges.handler_lag(), breakers=breakers, age=age)


__all__ = ["DeadLetterPage", "ProjectionFigures", "ProjectionConfig", "ProjectionDomain", "ProjectionService",
           "process_owner"]
