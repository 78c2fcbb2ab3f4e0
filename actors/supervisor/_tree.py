"""Vigil's supervision tree: what ``run.py serve`` starts.

    root (one_for_one)
     └── telemetry          lifecycle event totals and recent history for operators

Later capabilities add their supervisors here (ingest lanes and reapers, projections, sync), each
as its own subtree so a failing domain restarts without touching the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from kernel import ChildSpec, Supervisor

from ._telemetry_collector import TelemetryCollector


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeConfig:
    """Restart policy of the root and the collector's cadence."""

    max_restarts: int = 10
    within: float = 60.0
    base_delay: float = 0.05
    max_delay: float = 5.0
    telemetry_interval: float = 1.0


def root_tree(config: TreeConfig | None = None) -> Supervisor:
    config = config or TreeConfig()
    return Supervisor(
        "root",
        strategy="one_for_one",
        max_restarts=config.max_restarts,
        within=config.within,
        base_delay=config.base_delay,
        max_delay=config.max_delay,
        children=[
            ChildSpec(
                "telemetry",
                TelemetryCollector,
                kwargs={"interval": config.telemetry_interval},
                mailbox=64,
                overflow="drop_oldest",
            ),
        ],
    )
