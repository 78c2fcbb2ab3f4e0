"""Vigil's supervision tree: what ``run.py serve`` starts, and the facades the HTTP layer is given.

    root (one_for_one)
     ├── telemetry          lifecycle event totals and recent history for operators
     ├── ingest (one_for_one)
     │    ├── hot, cold, change    IngestLane: group-committing lanes, bounded, 429 when full
     │    └── reaper               frees requests a dead process left "processing"
     ├── accounts (keyed by user)  settings and sample reads, serialized per user
     ├── projection (one_for_one)  read models with freshness; in the worker role also the outbox
     │                             dispatcher, a worker per projection handler and the reaper
     ├── sync (one_for_one)
     │    └── devices (keyed by (user, device))   pushes, pulls and conflicts; server-made changes
     ├── ai (one_for_one)          weekly reports from Anthropic (keyed by user) and the provider's connections
     ├── realtime (one_for_one)
     │    ├── hub                  envelopes to the users' local WebSocket connections
     │    └── bridge               with a Redis URL: envelopes to and from the other processes
     ├── exports (one_for_one)     with VIGIL_S3_*: users' export jobs (desk); in the worker role the
     │                             export worker streaming them to the bucket
     └── maintenance (one_for_one) not in the web role: the retention reapers (ingest results, sync results,
                                   tombstones, stale checkpoint leases), one lease each across processes

``role`` (``run.py serve --role``) picks what this process runs: ``web`` the domains HTTP calls
(ingestion, accounts, projection reads, realtime), ``worker`` the projection pipeline (dispatcher,
handlers, reapers), ``all`` both. Any number of each share one PostgreSQL (and Redis, which carries
the realtime envelopes between them).

Each domain is its own subtree, so a failing one restarts without touching the others. A domain
package builds its subtree before the system starts (``XDomain``) and, once it runs, the facade
(``XService``) that transport calls; :class:`Services` bundles the facades.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from actors.accounts import AccountsConfig, AccountsDomain, AccountsService
from actors.ai import AiConfig, AiDomain, AiService
from actors.exports import ExportsConfig, ExportsDomain, ExportsService
from actors.ingest import DecodePool, IngestConfig, IngestDomain, IngestService
from actors.maintenance import MaintenanceConfig, MaintenanceDomain, MaintenanceService
from actors.projection import (
    Projection,
    ProjectionConfig,
    ProjectionDomain,
    ProjectionService,
    Publishes,
    process_owner,
)
from actors.realtime import RealtimeConfig, RealtimeDomain, RealtimeService
from actors.sync import SyncConfig, SyncDomain, SyncService
from kernel import ActorSystem, ChildSpec, CircuitBreaker, Dependency, Supervisor
from storage import Store
from storage.coordination import Leases

from ._telemetry_collector import TelemetryCollector


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeConfig:
    """Restart policy of the root, the collector's cadence and each domain's settings."""

    max_restarts: int = 10
    within: float = 60.0
    base_delay: float = 0.05
    max_delay: float = 5.0
    telemetry_interval: float = 1.0
    ingest: IngestConfig = field(default_factory=IngestConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    realtime: RealtimeConfig = field(default_factory=RealtimeConfig)
    exports: ExportsConfig = field(default_factory=ExportsConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    ai: AiConfig = field(default_factory=AiConfig)


Role = Literal["all", "web", "worker"]
ROLES: tuple[Role, ...] = ("all", "web", "worker")


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """The domains' facades over a running system: everything the HTTP layer may call."""

    ingest: IngestService
    accounts: AccountsService
    projection: ProjectionService
    realtime: RealtimeService
    exports: ExportsService
    sync: SyncService
    # What every reaper of this process removed (vigil_reaped_total); reap_now in the worker role.
    maintenance: MaintenanceService | None = None
    ai: AiService


@dataclass(frozen=True, slots=True)
class Application:
    """The tree to start, and (once it runs) the facades over it."""

    tree: Supervisor
    ingest: IngestDomain
    accounts: AccountsDomain
    projection: ProjectionDomain
    realtime: RealtimeDomain
    exports: ExportsDomain
    sync: SyncDomain
    maintenance: MaintenanceDomain
    ai: AiDomain
    # Where the projection workers say a read model caught up; bound to the realtime service on start.
    hub_link: HubLink
    role: Role = "all"

    def services(self, system: ActorSystem, *, decode_pool: DecodePool | None = None) -> Services:
        """The facades over ``system``, which must be running this application's tree."""
        root = self.tree.name
        realtime = self.realtime.service(system, under=root)
        self.hub_link.bind(realtime)
        sync = self.sync.service(system, under=root, publisher=realtime)
        # The stale-session reaper ends sessions through the sync domain's apply path for server changes.
        self.projection.session_ender.bind(sync.apply_server_change)
        return Services(ingest=self.ingest.service(system, under=root, decode_pool=decode_pool),
                        accounts=self.accounts.service(system, under=root),
                        projection=self.projection.service(system, under=root), realtime=realtime,
                        exports=self.exports.service(system, under=root), sync=sync, ai=self.ai.service(system, under=root),
                        maintenance=self.maintenance.service(system if self.role != "web" else None, under=root))


class HubLink:
    """The projection workers' ``Publishes``: the realtime hub of this process once the system runs (the
    workers are built before it), plus an extra listener if one was given (tests, benchmarks). Before
    ``bind`` (the first moments of start-up) an update reaches only that listener: a client that connects
    later reads the freshness anyway."""

    def __init__(self, *, also: Publishes | None = None) -> None:
        self._hub: Publishes | None = None
        self._also = also

    def bind(self, hub: Publishes) -> None:
        self._hub = hub

    def projection_updated(self, *, user_id: str, handler: str, projected: int, correlation_id: str | None) -> None:
        for target in (self._hub, self._also):
            if target is not None:
                target.projection_updated(user_id=user_id, handler=handler, projected=projected,
                                          correlation_id=correlation_id)


def _telemetry(config: TreeConfig) -> ChildSpec:
    return ChildSpec("telemetry", TelemetryCollector, kwargs={"interval": config.telemetry_interval},
                     mailbox=64, overflow="drop_oldest")


def _root(config: TreeConfig, children: list[ChildSpec | Supervisor]) -> Supervisor:
    return Supervisor("root", strategy="one_for_one", max_restarts=config.max_restarts, within=config.within,
                      base_delay=config.base_delay, max_delay=config.max_delay, children=children)


def root_tree(config: TreeConfig | None = None) -> Supervisor:
    """The infrastructure-only tree (no store): what runs before any domain is configured."""
    config = config or TreeConfig()
    return _root(config, [_telemetry(config)])


def application(store: Store, config: TreeConfig | None = None, *, role: Role = "all",
                publisher: Publishes | None = None, projections: Sequence[Projection] | None = None,
                s3_breaker: CircuitBreaker | None = None, leases: Leases | None = None,
                ai_breaker: CircuitBreaker | None = None, redis: Dependency | None = None) -> Application:
    """The application over ``store`` for one process ``role``; ``publisher`` hears that a user's read model
    caught up (the realtime hub); ``projections`` replaces the default read models (tests, benchmarks);
    ``s3_breaker`` is the object storage's breaker (the shared registry's), else the exports domain makes one;
    ``leases`` (the coordination leases) make each reaper, the stale-session one included, a single instance
    across processes; ``ai_breaker`` is the AI provider's breaker (the shared registry's; by default the AI
    domain makes one); ``redis`` is the Redis dependency (``Breakers["redis"]``, the one the coordination was
    opened with) that the realtime bridge's own Redis connection goes through."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    config = config or TreeConfig()
    owner = process_owner()
    maintenance = MaintenanceDomain(store, config.maintenance, owner=owner, leases=leases)
    ingest = IngestDomain(store, config.ingest,
                          reap_guard=maintenance.guard("ingest_claims", ttl=1.5 * config.ingest.reap_interval))
    accounts = AccountsDomain(store, config.accounts)
    hub_link = HubLink(also=publisher)
    outbox_interval = config.projection.reaper.interval
    projection = ProjectionDomain(store, replace(config.projection, run_workers=role != "web"), publisher=hub_link,
                                  projections=projections, owner=owner, leases=leases,
                                  reap_guard=maintenance.guard("outbox", ttl=1.5 * (outbox_interval or 40.0)))
    realtime = RealtimeDomain(config.realtime, redis=redis)
    exports = ExportsDomain(store, replace(config.exports, run_workers=role != "web"), breaker=s3_breaker,
                            owner=owner)
    sync = SyncDomain(store, config.sync)
    ai = AiDomain(store, config.ai, breaker=ai_breaker)
    children: list[ChildSpec | Supervisor] = [_telemetry(config), ingest.subtree(), accounts.child_spec(),
                                              projection.subtree(), sync.subtree(), ai.subtree(), realtime.subtree(),
                                              exports.subtree()]
    if role != "web":  # the retention reapers are background work
        children.append(maintenance.subtree())
    tree = _root(config, children)
    return Application(tree=tree, ingest=ingest, accounts=accounts, projection=projection, realtime=realtime,
                       exports=exports, sync=sync, maintenance=maintenance, ai=ai, hub_link=hub_link, role=role)
