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
reruns ``work(tx)`` on transient errors with ``kernel.retry_call`` (full jitter, ``RetryPolicy``).

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
          ├── StoreCircuitOpen      the breaker refused at once; ``.retry_after``  [never retried inside]
          └── CommitUnknown         lost during COMMIT: outcome unknown       [not retryable]
"""

from ._backup import DatabaseInfo, dump_database, inspect_database, load_database, pg_tool
from ._config import Limits, OutboxPolicy, RetryPolicy, StoreConfig, utc_now
from ._errors import (
    CommitUnknown,
    ConflictError,
    IntegrityError,
    InvalidData,
    NotFound,
    SerializationFailure,
    StoreCircuitOpen,
    StoreError,
    StoreUnavailable,
    UniqueViolation,
)
from ._model import (
    CHECKPOINT_STATUSES,
    EXPORT_STATUSES,
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
    Discarded,
    Enqueued,
    ExportJob,
    ExportStatus,
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
    ProductImpact,
    ProjectionState,
    SampleCursor,
    SampleIn,
    SampleKey,
    SampleRecord,
    SessionImpact,
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
    "DatabaseInfo",
    "DeadLetter",
    "DeadLetterItem",
    "Discarded",
    "DeletedSamples",
    "DeviceState",
    "EXPORT_STATUSES",
    "Enqueued",
    "ExportJob",
    "ExportStatus",
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
    "ProductImpact",
    "ProjectionState",
    "RetryPolicy",
    "SampleCursor",
    "SampleIn",
    "SampleKey",
    "SampleRecord",
    "SessionImpact",
    "SamplePreparer",
    "SerializationFailure",
    "SleepNight",
    "Store",
    "StoreCircuitOpen",
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
    "dump_database",
    "inspect_database",
    "load_database",
    "migrate",
    "open_store",
    "pg_tool",
    "utc_now",
]
