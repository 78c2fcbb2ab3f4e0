"""Vigil's storage layer: everything durable goes through here.

Open a store from a URL and do all work in units of work::

    from storage import open_store, SampleIn

    async with open_store("sqlite:///./data/vigil.db") as store:     # or postgresql://...
        async with store.transaction() as tx:
            counts, mark = await tx.run(
                tx.samples.upsert_many(user, rows),                  # one statement per batch
                tx.watermarks.bump(user, by=len(rows)),
            )
            await tx.commit(                                         # + COMMIT: one crossing
                tx.outbox.enqueue(user, "health.samples.changed", {"watermark": mark}),
                tx.ingest.complete(user, request_id, {"inserted": counts.inserted}),
            )

Repository calls return ops; ``await op``, ``tx.run(*ops)``, ``tx.defer(*ops)`` and
``tx.commit(*ops)`` decide how many share a crossing (see ``storage._tx``). Samples, their
outbox event and the watermark commit together or not at all. ``store.transact(work)``
reruns ``work(tx)`` on transient errors with jittered exponential backoff (``RetryPolicy``).

Backends: SQLite (default; WAL, one writer thread, migrates on open) and PostgreSQL (asyncpg
through trio-asyncio, ``unnest`` bulk upserts, SKIP LOCKED claims, LISTEN/NOTIFY, advisory
device locks). ``migrate(url)`` applies the versioned migrations.

Timestamps go in timezone-aware (a naive datetime is InvalidData) and come out aware UTC.

Errors (driver errors are translated once, at the boundary, into these)::

    StoreError                      base; ``.retryable`` says whether rerunning may succeed
     ├── InvalidData                bad input refused before it is stored (NaN, naive time,
     │                              oversized text/JSON, wrong type); also a ValueError
     ├── NotFound                   a row the operation needs does not exist; a LookupError
     ├── IntegrityError             a constraint rejected the write
     │    └── UniqueViolation       a unique key already exists
     ├── ConflictError              a concurrent change won (version check, state moved on)
     │    └── SerializationFailure  serialization failure, deadlock, busy SQLite  [retryable]
     └── StoreUnavailable           cannot connect, connection lost              [retryable]
          └── CommitUnknown         lost during COMMIT: outcome unknown       [not retryable]
"""

from ._config import Limits, OutboxPolicy, RetryPolicy, StoreConfig, utc_now
from ._errors import (
    CommitUnknown,
    ConflictError,
    IntegrityError,
    InvalidData,
    NotFound,
    SerializationFailure,
    StoreError,
    StoreUnavailable,
    UniqueViolation,
)
from ._model import (
    CHECKPOINT_STATUSES,
    OUTBOX_STATUSES,
    AiReport,
    AiUsage,
    AiUsageTotal,
    Change,
    ChangeIn,
    Checkpoint,
    CheckpointIn,
    CheckpointKey,
    CheckpointStatus,
    Conflict,
    DailyRollup,
    DeadLetter,
    DeadLetterItem,
    DeletedSamples,
    DeviceState,
    Enqueued,
    HandlerLag,
    HealthSample,
    IngestBegin,
    IngestRequest,
    Json,
    OutboxEvent,
    OutboxStats,
    OutboxStatus,
    Page,
    PoolStats,
    PreparedSamples,
    ProjectionState,
    SampleCursor,
    SampleIn,
    SampleKey,
    SleepNight,
    SyncEntity,
    UpsertCounts,
    UserSettings,
    UserWatermarks,
)
from ._open import StoreOpener, migrate, open_store
from ._protocol import Store
from ._repos import SamplePreparer
from ._transaction import Transaction
from ._tx import Op

__all__ = [
    "AiReport",
    "AiUsage",
    "AiUsageTotal",
    "CHECKPOINT_STATUSES",
    "OUTBOX_STATUSES",
    "Change",
    "ChangeIn",
    "Checkpoint",
    "CheckpointIn",
    "CheckpointKey",
    "CheckpointStatus",
    "CommitUnknown",
    "Conflict",
    "ConflictError",
    "DailyRollup",
    "DeadLetter",
    "DeadLetterItem",
    "DeletedSamples",
    "DeviceState",
    "Enqueued",
    "HandlerLag",
    "HealthSample",
    "IngestBegin",
    "IngestRequest",
    "IntegrityError",
    "InvalidData",
    "Json",
    "Limits",
    "NotFound",
    "Op",
    "OutboxEvent",
    "OutboxPolicy",
    "OutboxStats",
    "OutboxStatus",
    "PoolStats",
    "Page",
    "PreparedSamples",
    "ProjectionState",
    "RetryPolicy",
    "SampleCursor",
    "SampleIn",
    "SampleKey",
    "SamplePreparer",
    "SerializationFailure",
    "SleepNight",
    "Store",
    "StoreConfig",
    "StoreError",
    "StoreOpener",
    "StoreUnavailable",
    "SyncEntity",
    "Transaction",
    "UniqueViolation",
    "UpsertCounts",
    "UserSettings",
    "UserWatermarks",
    "migrate",
    "open_store",
    "utc_now",
]
