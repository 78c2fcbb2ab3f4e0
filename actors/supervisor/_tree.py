"""Vigil's supervision tree: what ``run.py serve`` starts, and the facades the HTTP layer is given.

    root (one_for_one)
     ├── telemetry          lifecycle event totals and recent history for operators
     ├── ingest (one_for_one)
     │    ├── hot, cold, change    IngestLane: group-committing lanes, bounded, 429 when full
     │    └── reaper               frees requests a dead process left "processing"
     ├── accounts (keyed by user)  settings and sample reads, serialized per user
     └── realtime (one_for_one)
          ├── hub                  envelopes to the users' local WebSocket connections
          └── bridge               with a Redis URL: envelopes to and from the other processes

Each domain is its own subtree, so a failing one restarts without touching the others. A domain
package builds its subtree before the system starts (``XDomain``) and, once it runs, the facade
(``XService``) that transport calls; :class:`Services` bundles the facades.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.accounts import AccountsConfig, AccountsDomain, AccountsService
from actors.ingest import DecodePool, IngestConfig, IngestDomain, IngestService
from actors.realtime import RealtimeConfig, RealtimeDomain, RealtimeService
from kernel import ActorSystem, ChildSpec, Supervisor
from storage import Store

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
    realtime: RealtimeConfig = field(default_factory=RealtimeConfig)


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """The domains' facades over a running system: everything the HTTP layer may call."""

    ingest: IngestService
    accounts: AccountsService
    realtime: RealtimeService


@dataclass(frozen=True, slots=True)
class Application:
    """The tree to start, and (once it runs) the facades over it."""

    tree: Supervisor
    ingest: IngestDomain
    accounts: AccountsDomain
    realtime: RealtimeDomain

    def services(self, system: ActorSystem, *, decode_pool: DecodePool | None = None) -> Services:
        """The facades over ``system``, which must be running this application's tree."""
        root = self.tree.name
        return Services(ingest=self.ingest.service(system, under=root, decode_pool=decode_pool),
                        accounts=self.accounts.service(system, under=root),
                        realtime=self.realtime.service(system, under=root))


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


def application(store: Store, config: TreeConfig | None = None) -> Application:
    """The whole application over ``store``."""
    config = config or TreeConfig()
    ingest = IngestDomain(store, config.ingest)
    accounts = AccountsDomain(store, config.accounts)
    realtime = RealtimeDomain(config.realtime)
    tree = _root(config, [_telemetry(config), ingest.subtree(), accounts.child_spec(), realtime.subtree()])
    return Application(tree=tree, ingest=ingest, accounts=accounts, realtime=realtime)
