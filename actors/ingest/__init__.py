"""Health-sample ingestion: three lane actors (hot, cold, change) with group commit, and a reaper."""

from ._lane import SAMPLES_CHANGED, IngestLane, LaneGauge
from ._messages import LANES, IngestBatch, IngestOutcome, Lane, LaneReport, LaneStatus
from ._payload import payload_hash, payload_hash_raw
from ._rate import DrainRate, retry_after_ms
from ._reaper import IngestReaper, ReapNow
from ._samples import (
    DeletionInput,
    Rejection,
    SampleInput,
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
    "LaneReport",
    "LaneStatus",
    "Metric",
    "ReapNow",
    "Rejection",
    "SampleInput",
    "affected_keys",
    "ingest_service",
    "local_date",
    "normalize_samples",
    "payload_hash",
    "payload_hash_raw",
    "retry_after_ms",
    "to_canonical",
]
