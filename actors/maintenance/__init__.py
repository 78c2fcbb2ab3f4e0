"""Maintenance: the retention reapers (finished ingest requests, sync operation results, tombstones, stale
checkpoint leases), each on a timer with a stated interval and retention, each a single instance across
processes (a coordination lease), each counted in ``vigil_reaped_total{reaper=...}``.

Its errors (``MaintenanceError`` and below) are drawn in ``_errors``; storage's own pass through.
"""

from ._errors import MaintenanceError, UnknownReaper
from ._guard import ReapedCounts, ReapGuard
from ._jobs import DAY, MIN_RESULT_RETENTION, STATEMENTS, MaintenanceConfig, ReapJob, another_batch
from ._messages import ReapedSoFar, ReapNow
from ._reaper import Reaper
from ._service import MaintenanceDomain, MaintenanceService

__all__ = [
    "DAY",
    "MIN_RESULT_RETENTION",
    "STATEMENTS",
    "MaintenanceConfig",
    "MaintenanceDomain",
    "MaintenanceError",
    "MaintenanceService",
    "ReapGuard",
    "ReapJob",
    "ReapNow",
    "ReapedSoFar",
    "ReapedCounts",
    "Reaper",
    "UnknownReaper",
    "another_batch",
]
