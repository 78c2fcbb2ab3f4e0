"""The read side: projection handlers that turn committed sample changes (outbox events) into read models —
daily rollups and sleep nights, recomputed from raw samples in the user's timezone with source priority — and
``ProjectionService``, the facade that reads them with their freshness.

Its errors (``ProjectionError`` and below) are drawn in ``_errors``; storage's own pass through.
"""

from ._dispatcher import DispatcherConfig, NotificationRelay, OutboxDispatcher, Route, fan_out
from ._errors import NoRollup, ProjectionError, UnknownDeadLetter
from ._freshness import Freshness, FreshnessStatus, decide_freshness
from ._projections import DailyRollups, SleepNights, day_runs, default_projections
from ._ranking import rank_sources
from ._reader import NightsView, OutboxAdmin, ProjectionGauges, ProjectionReader, RollupsView
from ._reaper import ProjectionReaper, PurgeNow, ReaperConfig
from ._rollups import CUMULATIVE, RollupSample, daily_rollups, has_rollup, rollup_metrics
from ._service import (
    DeadLetterPage,
    ProjectionConfig,
    ProjectionDomain,
    ProjectionFigures,
    ProjectionService,
    process_owner,
)
from ._sleep import STAGE_NAMES, sleep_nights
from ._work import SAMPLES_CHANGED, SETTINGS_CHANGED, EventDigest, UserWork, group_work
from ._worker import HandlerConfig, HandlerGate, Projection, ProjectionWorker, Publishes

__all__ = [
    "process_owner",
    "CUMULATIVE",
    "SAMPLES_CHANGED",
    "SETTINGS_CHANGED",
    "STAGE_NAMES",
    "DailyRollups",
    "DeadLetterPage",
    "DispatcherConfig",
    "EventDigest",
    "Freshness",
    "FreshnessStatus",
    "HandlerConfig",
    "HandlerGate",
    "NightsView",
    "NoRollup",
    "NotificationRelay",
    "OutboxAdmin",
    "OutboxDispatcher",
    "Projection",
    "ProjectionConfig",
    "ProjectionDomain",
    "ProjectionError",
    "ProjectionFigures",
    "ProjectionGauges",
    "ProjectionReader",
    "ProjectionReaper",
    "ProjectionService",
    "ProjectionWorker",
    "Publishes",
    "PurgeNow",
    "ReaperConfig",
    "RollupSample",
    "RollupsView",
    "Route",
    "SleepNights",
    "UnknownDeadLetter",
    "UserWork",
    "daily_rollups",
    "day_runs",
    "decide_freshness",
    "default_projections",
    "fan_out",
    "group_work",
    "has_rollup",
    "rank_sources",
    "rollup_metrics",
    "sleep_nights",
]
