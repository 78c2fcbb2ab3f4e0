"""Health-sample ingestion: three lane actors (hot, cold, change) with group commit, and a reaper."""

from ._lane import SAMPLES_CHANGED, IngestLane, LaneGauge
from ._messages import LANES, IngestBatch, IngestOutcome, Lane, LaneReport, LaneStatus
from ._payload import payload_hash, payload_hash_raw
from ._priority import LanePriority, PriorityConfig, background_wait
from ._rate import DrainRate, retry_after_ms
from ._reaper import IngestReaper, ReapedSoFar, ReapNow
from ._samples import (
    DeletionInput,
    DeletionLike,
    Rejection,
    SampleInput,
    SampleLike,
    affected_keys,
    local_date,
    normalize_samples,
)
from ._service import IngestConfig, IngestService, IngestUnavailable, LaneFull, ingest_service
from ._units import REGISTRY, SLEEP_STAGES, Metric, to_canonical

__all__ = [
    "LANES",
    "REGISTRY",
    "SAMPLES_CHANGED",
    "SLEEP_STAGES",
    "DeletionInput",
    "DeletionLike",
    "DrainRate",
    "IngestBatch",
    "IngestConfig",
    "IngestLane",
    "IngestOutcome",
    "IngestReaper",
    "IngestService",
    "IngestUnavailable",
    "Lane",
    "LaneFull",
    "LaneGauge",
    "LanePriority",
    "LaneReport",
    "LaneStatus",
    "Metric",
    "PriorityConfig",
    "ReapNow",
    "ReapedSoFar",
    "Rejection",
    "SampleInput",
    "SampleLike",
    "affected_keys",
    "background_wait",
    "ingest_service",
    "local_date",
    "normalize_samples",
    "payload_hash",
    "payload_hash_raw",
    "retry_after_ms",
    "to_canonical",
]
