"""The retention reapers' schedule: each a frozen ``ReapJob`` (interval, retention, batch size), and what each
one runs against the store. Pure data and one pure function; the actor in ``_reaper`` is the I/O shell.

=====================  ==========  ===============================  =========================================
reaper                 interval    retention                        removes
=====================  ==========  ===============================  =========================================
ingest_results         1 h         7 days (at least 7 days)         finished ingest requests (their results
                                                                    answer an offline phone's retries)
sync_results           1 h         7 days (at least 7 days)         recorded sync operation results
tombstones             1 h         30 days                          soft-deleted samples' payloads (the
                                                                    identity stays deleted)
checkpoint_leases      1 min       leases expired for 60 s          frees stale projection checkpoints
=====================  ==========  ===============================  =========================================

The two older reapers keep their own schedules beside their domains: ``ingest_claims`` (actors.ingest: every
30 s, claims stale after 120 s) and ``outbox`` (actors.projection: every 10 min, completed events after 24 h).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from storage import Op, Transaction

DAY = 24 * 3600.0
# Long enough for an offline phone's retries (issue 13): a result must still answer a week-late retry.
MIN_RESULT_RETENTION = 7 * DAY


@dataclass(frozen=True, slots=True, kw_only=True)
class ReapJob:
    name: str
    interval: float | None  # seconds between passes; None: only when asked (tests)
    retention: float  # seconds: what is older goes
    limit: int = 10_000  # rows per statement; a pass repeats while a statement hits it

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a reap job needs a name")
        if self.interval is not None and not (math.isfinite(self.interval) and self.interval > 0):
            raise ValueError(f"{self.name}: interval must be positive, got {self.interval}")
        if not (math.isfinite(self.retention) and self.retention > 0):
            raise ValueError(f"{self.name}: retention must be positive, got {self.retention}")
        if self.limit < 1:
            raise ValueError(f"{self.name}: limit must be >= 1, got {self.limit}")

    @property
    def lease_ttl(self) -> float:
        """Held across passes (renewed by each); lapses one and a half intervals after its holder died."""
        return 1.5 * self.interval if self.interval is not None else 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class MaintenanceConfig:
    ingest_results: ReapJob = field(default_factory=lambda: ReapJob(name="ingest_results", interval=3600.0,
                                                                    retention=MIN_RESULT_RETENTION))
    sync_results: ReapJob = field(default_factory=lambda: ReapJob(name="sync_results", interval=3600.0,
                                                                  retention=MIN_RESULT_RETENTION))
    tombstones: ReapJob = field(default_factory=lambda: ReapJob(name="tombstones", interval=3600.0,
                                                                retention=30 * DAY))
    checkpoint_leases: ReapJob = field(default_factory=lambda: ReapJob(name="checkpoint_leases", interval=60.0,
                                                                       retention=60.0))
    ask_timeout: float = 60.0

    def __post_init__(self) -> None:
        for job in (self.ingest_results, self.sync_results):
            if job.retention < MIN_RESULT_RETENTION:
                raise ValueError(f"{job.name}: results are kept at least 7 days (an offline phone retries late), "
                                 f"got {job.retention} s")

    @property
    def jobs(self) -> tuple[ReapJob, ...]:
        return (self.ingest_results, self.sync_results, self.tombstones, self.checkpoint_leases)


# What one statement of a job does: (transaction, job) -> an operation returning how many rows it touched.
Statement = Callable[[Transaction, ReapJob], Op[int]]

STATEMENTS: dict[str, Statement] = {
    "ingest_results": lambda tx, job: tx.ingest.purge_finished(job.retention, limit=job.limit),
    "sync_results": lambda tx, job: tx.sync_ops.purge(job.retention, limit=job.limit),
    "tombstones": lambda tx, job: tx.samples.purge_deleted(job.retention, limit=job.limit),
    # Unbounded by design: expired leases are few (a crashed holder's batch), and one statement frees them all.
    "checkpoint_leases": lambda tx, job: tx.checkpoints.reap_expired(job.retention),
}


def another_batch(job: ReapJob, touched: int) -> bool:
    """Whether another statement should follow in the same pass: the last one hit the batch limit."""
    return job.name != "checkpoint_leases" and touched >= job.limit


__all__ = ["DAY", "MIN_RESULT_RETENTION", "STATEMENTS", "MaintenanceConfig", "ReapJob", "Statement", "another_batch"]
