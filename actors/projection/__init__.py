"""The read side: projection handlers that turn committed sample changes (outbox events) into read models —
daily rollups and sleep nights, recomputed from raw samples in the user's timezone with source priority, and the
session read models (heart rate around consumption sessions, per product) with the stale-session reaper — and
``ProjectionService``, the facade that reads them with their freshness.

Its errors (``ProjectionError`` and below) are drawn in ``_errors``; storage's own pass through.
"""

from ._dispatcher import DispatcherConfig, NotificationRelay, OutboxDispatcher
from ._errors import NoRollup, NoSession, ProjectionError, UnknownDeadLetter
from ._freshness import Freshness, FreshnessStatus, decide_freshness
from ._impact import (
    SESSION,
    STALE_AFTER,
    SessionFacts,
    ended,
    is_stale,
    product_impacts,
    session_facts,
    session_impact,
    window_stats,
)
from ._impact_reader import ProductImpactView, SessionImpactView, impact_freshness
from ._plan import Plan, Route, Skip, chunk_ranges, dependency_order, find_skips, plan_dispatch, skip_ranges
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
from ._session_reaper import (
    EndSession,
    NotBound,
    ReapSessions,
    SessionEnder,
    SessionReaperConfig,
    StaleSessionReaper,
)
from ._sessions import PRODUCT_IMPACT, SESSION_IMPACT, ProductImpacts, SessionImpacts
from ._sleep import STAGE_NAMES, sleep_nights
from ._work import SAMPLES_CHANGED, SETTINGS_CHANGED, SYNC_ENTITY_CHANGED, EventDigest, UserWork, group_work
from ._worker import HandlerConfig, HandlerGate, Projection, ProjectionWorker, Publishes

__all__ = [
    "process_owner",
    "CUMULATIVE",
    "PRODUCT_IMPACT",
    "SAMPLES_CHANGED",
    "SESSION",
    "SESSION_IMPACT",
    "SETTINGS_CHANGED",
    "STAGE_NAMES",
    "STALE_AFTER",
    "SYNC_ENTITY_CHANGED",
    "DailyRollups",
    "DeadLetterPage",
    "DispatcherConfig",
    "EndSession",
    "EventDigest",
    "Freshness",
    "FreshnessStatus",
    "HandlerConfig",
    "HandlerGate",
    "NightsView",
    "NoRollup",
    "NoSession",
    "NotBound",
    "NotificationRelay",
    "OutboxAdmin",
    "OutboxDispatcher",
    "ProductImpactView",
    "ProductImpacts",
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
    "ReapSessions",
    "ReaperConfig",
    "RollupSample",
    "RollupsView",
    "Plan",
    "Route",
    "Skip",
    "chunk_ranges",
    "dependency_order",
    "find_skips",
    "skip_ranges",
    "SessionEnder",
    "SessionFacts",
    "SessionImpactView",
    "SessionImpacts",
    "SessionReaperConfig",
    "SleepNights",
    "StaleSessionReaper",
    "UnknownDeadLetter",
    "UserWork",
    "daily_rollups",
    "day_runs",
    "decide_freshness",
    "default_projections",
    "ended",
    "plan_dispatch",
    "group_work",
    "has_rollup",
    "impact_freshness",
    "is_stale",
    "product_impacts",
    "rank_sources",
    "rollup_metrics",
    "session_facts",
    "session_impact",
    "sleep_nights",
    "window_stats",
]
