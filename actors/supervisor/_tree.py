"""Vigil's supervision tree: what ``run.py serve`` starts.

    root (one_for_one)
     ├── telemetry          lifecycle event totals and recent history for operators
     ├── ingest (one_for_one)
     │    ├── hot, cold, change    IngestLane: group-committing lanes, bounded, 429 when full
     │    └── reaper               frees requests a dead process left "processing"
     └── accounts (keyed by user)  settings and sample reads, serialized per user

Each domain is its own subtree, so a failing one restarts without touching the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.ingest import IngestConfig, IngestService, ingest_service
from actors.ingest._account import Account
from kernel import ChildSpec, Supervisor
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
    account_idle_timeout: float = 300.0
    max_live_accounts: int = 10_000


@dataclass(frozen=True, slots=True)
class Application:
    """The tree to start and the handles the HTTP layer needs (by name, for ``create_app``)."""

    tree: Supervisor
    resources: dict[str, object]


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
    ingest: IngestService = ingest_service(store, config.ingest)
    accounts = ChildSpec("accounts", Account, kwargs={"store": store}, keyed=True,
                         idle_timeout=config.account_idle_timeout, max_live=config.max_live_accounts, mailbox=256)
    tree = _root(config, [_telemetry(config), ingest.subtree(), accounts])
    return Application(tree=tree, resources={"ingest": ingest, "store": store})
