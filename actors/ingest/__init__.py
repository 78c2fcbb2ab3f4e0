"""Health-sample ingestion: three lane actors (hot, cold, change) with group commit, and a reaper."""

from ._lane import SAMPLES_CHANGED, IngestLane, LaneGauge
from ._messages import LANES, IngestBatch, IngestOutcome, Lane, LaneReport, LaneStatus
from ._payload import parse_body, payload_hash, payload_hash_parsed, payload_hash_raw
from ._priority import LanePriority, PriorityConfig, background_wait
from ._rate import DrainRate, retry_after_ms
from ._reaper import IngestReaper, ReapedSoFar, ReapNow
from ._samples import (
    DeletionInput,
    DeletionLike,
    PreparedUpload,
    PreparesSamples,
    Rejection,
    SampleInput,
    SampleLike,
    affected_keys,
    local_date,
    local_keys,
    normalize_samples,
    prepare_upload,
    preparing_upload,
    run_steps,
    run_steps_async,
    sample_minutes,
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
    "PreparedUpload",
    "PreparesSamples",
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
    "local_keys",
    "normalize_samples",
    "parse_body",
    "payload_hash",
    "payload_hash_parsed",
    "payload_hash_raw",
    "prepare_upload",
    "preparing_upload",
    "retry_after_ms",
    "run_steps",
    "run_steps_async",
    "sample_minutes",
    "to_canonical",
]
