"""SQLite schema. Timestamps are INTEGER microseconds since the epoch (UTC), dates ISO text,
JSON documents TEXT, booleans 0/1. STRICT tables refuse values of the wrong type."""

from __future__ import annotations

from . import CHECKPOINT_INDEXES as _CHECKPOINT_INDEXES
from . import COMPLETE_UNFINISHED_DUPLICATES as _COMPLETE_UNFINISHED_DUPLICATES
from . import Migration, check_sequence

MIGRATIONS = check_sequence(
    (
        Migration(
            1,
            "initial schema",
            (
                """CREATE TABLE users (
                    user_id TEXT PRIMARY KEY,
                    allow_health_data_upload INTEGER NOT NULL DEFAULT 1,
                    blocked_metrics TEXT NOT NULL DEFAULT '[]',
                    timezone TEXT NOT NULL DEFAULT 'UTC',
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                ) STRICT""",
                """CREATE TABLE health_samples (
                    id INTEGER PRIMARY KEY,
                    user_id TEXT NOT NULL,
                    source_id TEXT NOT NULL,
                    source_record_id TEXT NOT NULL,
                    start_at INTEGER NOT NULL,
                    end_at INTEGER NOT NULL,
                    metric TEXT NOT NULL,
                    value REAL NOT NULL,
                    unit TEXT NOT NULL,
                    metadata TEXT NOT NULL,
                    revision INTEGER NOT NULL DEFAULT 1,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    deleted_at INTEGER
                ) STRICT""",
                "CREATE UNIQUE INDEX health_samples_natural_key"
                " ON health_samples (user_id, source_id, source_record_id, start_at)",
                "CREATE INDEX health_samples_user_metric_start ON health_samples (user_id, metric, start_at, id)",
                "CREATE INDEX health_samples_user_start ON health_samples (user_id, start_at, id)",
                "CREATE INDEX health_samples_deleted ON health_samples (deleted_at) WHERE deleted_at IS NOT NULL",
                """CREATE TABLE ingest_requests (
                    user_id TEXT NOT NULL,
                    request_id TEXT NOT NULL,
                    payload_hash TEXT NOT NULL,
                    lane TEXT,
                    status TEXT NOT NULL CHECK (status IN ('processing', 'completed', 'failed')),
                    result TEXT,
                    error TEXT,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (user_id, request_id)
                ) STRICT""",
                "CREATE INDEX ingest_requests_processing ON ingest_requests (updated_at) WHERE status = 'processing'",
                # AUTOINCREMENT: ids are shown to operators (replay), so never reuse one after a purge.
                """CREATE TABLE outbox_events (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    user_id TEXT NOT NULL,
                    type TEXT NOT NULL,
                    payload TEXT NOT NULL,
                    event_hash TEXT NOT NULL,
                    dedupe_key TEXT UNIQUE,
                    status TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'done', 'dead')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at INTEGER NOT NULL,
                    lease_owner TEXT,
                    lease_expires_at INTEGER,
                    last_error TEXT,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                ) STRICT""",
                "CREATE INDEX outbox_events_pending ON outbox_events (next_attempt_at, id) WHERE status = 'pending'",
                "CREATE INDEX outbox_events_processing ON outbox_events (lease_expires_at)"
                " WHERE status = 'processing'",
                "CREATE INDEX outbox_events_dead ON outbox_events (id) WHERE status = 'dead'",
                "CREATE INDEX outbox_events_done ON outbox_events (updated_at) WHERE status = 'done'",
                "CREATE INDEX outbox_events_hash ON outbox_events (event_hash)",
                """CREATE TABLE projection_checkpoints (
                    event_id INTEGER NOT NULL,
                    handler TEXT NOT NULL,
                    status TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    lease_owner TEXT,
                    lease_expires_at INTEGER,
                    last_error TEXT,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (event_id, handler)
                ) STRICT""",
                """CREATE TABLE daily_rollups (
                    user_id TEXT NOT NULL,
                    metric TEXT NOT NULL,
                    local_date TEXT NOT NULL,
                    unit TEXT NOT NULL,
                    sample_count INTEGER NOT NULL,
                    value_sum REAL NOT NULL,
                    value_min REAL NOT NULL,
                    value_max REAL NOT NULL,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (user_id, metric, local_date)
                ) STRICT""",
                """CREATE TABLE sleep_nights (
                    user_id TEXT NOT NULL,
                    night_date TEXT NOT NULL,
                    start_at INTEGER NOT NULL,
                    end_at INTEGER NOT NULL,
                    asleep_minutes REAL NOT NULL,
                    awake_minutes REAL NOT NULL,
                    stages TEXT NOT NULL,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (user_id, night_date)
                ) STRICT""",
                """CREATE TABLE user_watermarks (
                    user_id TEXT PRIMARY KEY,
                    watermark INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                ) STRICT""",
                """CREATE TABLE projection_watermarks (
                    user_id TEXT NOT NULL,
                    handler TEXT NOT NULL,
                    projected_watermark INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (user_id, handler)
                ) STRICT""",
                """CREATE TABLE sync_entities (
                    user_id TEXT NOT NULL,
                    entity_type TEXT NOT NULL,
                    entity_id TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    data TEXT NOT NULL,
                    deleted INTEGER NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (user_id, entity_type, entity_id)
                ) STRICT""",
                """CREATE TABLE sync_operations (
                    user_id TEXT NOT NULL,
                    device_id TEXT NOT NULL,
                    client_op_id TEXT NOT NULL,
                    result TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    PRIMARY KEY (user_id, device_id, client_op_id)
                ) STRICT""",
                """CREATE TABLE sync_sequences (
                    user_id TEXT PRIMARY KEY,
                    last_seq INTEGER NOT NULL
                ) STRICT""",
                """CREATE TABLE sync_changes (
                    user_id TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    entity_type TEXT NOT NULL,
                    entity_id TEXT NOT NULL,
                    op TEXT NOT NULL CHECK (op IN ('create', 'update', 'delete')),
                    version INTEGER NOT NULL,
                    data TEXT NOT NULL,
                    deleted INTEGER NOT NULL,
                    device_id TEXT,
                    changed_at INTEGER NOT NULL,
                    PRIMARY KEY (user_id, seq)
                ) STRICT""",
                """CREATE TABLE sync_devices (
                    user_id TEXT NOT NULL,
                    device_id TEXT NOT NULL,
                    acked_seq INTEGER NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (user_id, device_id)
                ) STRICT""",
                """CREATE TABLE sync_conflicts (
                    id TEXT PRIMARY KEY,
                    user_id TEXT NOT NULL,
                    device_id TEXT,
                    entity_type TEXT NOT NULL,
                    entity_id TEXT NOT NULL,
                    server_version INTEGER NOT NULL,
                    base_version INTEGER,
                    server_data TEXT NOT NULL,
                    client_data TEXT NOT NULL,
                    status TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
                    resolution TEXT,
                    resolved_data TEXT,
                    created_at INTEGER NOT NULL,
                    resolved_at INTEGER
                ) STRICT""",
                "CREATE INDEX sync_conflicts_user_status ON sync_conflicts (user_id, status, created_at)",
                """CREATE TABLE dead_letters (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    source TEXT NOT NULL,
                    user_id TEXT,
                    key TEXT,
                    payload TEXT NOT NULL,
                    error TEXT NOT NULL,
                    created_at INTEGER NOT NULL
                ) STRICT""",
                "CREATE INDEX dead_letters_source ON dead_letters (source, id)",
            ),
        ),
        Migration(
            2,
            "read side: one status vocabulary, content dedupe, leased checkpoints, watermark ranges",
            (
                "ALTER TABLE users ADD COLUMN source_priority TEXT NOT NULL DEFAULT '[]'",
                # A CHECK changes ('done' -> 'completed'): SQLite rebuilds the table.
                """CREATE TABLE outbox_events_v2 (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    user_id TEXT NOT NULL,
                    type TEXT NOT NULL,
                    payload TEXT NOT NULL,
                    event_hash TEXT NOT NULL,
                    dedupe_key TEXT UNIQUE,
                    correlation_id TEXT,
                    status TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'completed', 'dead')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at INTEGER NOT NULL,
                    lease_owner TEXT,
                    lease_expires_at INTEGER,
                    last_error TEXT,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                ) STRICT""",
                "INSERT INTO outbox_events_v2 (id, user_id, type, payload, event_hash, dedupe_key, status,"
                " attempts, next_attempt_at, lease_owner, lease_expires_at, last_error, created_at, updated_at)"
                " SELECT id, user_id, type, payload, event_hash, dedupe_key,"
                " CASE status WHEN 'done' THEN 'completed' ELSE status END, attempts, next_attempt_at,"
                " lease_owner, lease_expires_at, last_error, created_at, updated_at FROM outbox_events",
                # Ids are shown to operators: keep the old table's high-water mark (purged ids stay used).
                "INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox_events_v2', seq FROM sqlite_sequence"
                " WHERE name = 'outbox_events'"
                " AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox_events_v2')",
                "UPDATE sqlite_sequence SET seq = (SELECT max(seq) FROM sqlite_sequence"
                " WHERE name IN ('outbox_events', 'outbox_events_v2')) WHERE name = 'outbox_events_v2'",
                "DROP TABLE outbox_events",
                "ALTER TABLE outbox_events_v2 RENAME TO outbox_events",
                "CREATE INDEX outbox_events_pending ON outbox_events (next_attempt_at, id) WHERE status = 'pending'",
                "CREATE INDEX outbox_events_processing ON outbox_events (lease_expires_at)"
                " WHERE status = 'processing'",
                "CREATE INDEX outbox_events_dead ON outbox_events (id) WHERE status = 'dead'",
                "CREATE INDEX outbox_events_completed ON outbox_events (updated_at) WHERE status = 'completed'",
                # Content dedupe needs at most one unfinished event per hash; older duplicates (allowed
                # before) keep the first and complete the rest (projections recompute, so nothing is lost).
                _COMPLETE_UNFINISHED_DUPLICATES,
                "CREATE UNIQUE INDEX outbox_events_unfinished_hash ON outbox_events (event_hash)"
                " WHERE status IN ('pending', 'processing')",
                # Nothing used the old checkpoints: recreated with the read side's columns.
                "DROP TABLE projection_checkpoints",
                """CREATE TABLE projection_checkpoints (
                    event_id INTEGER NOT NULL,
                    handler TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    event_type TEXT NOT NULL,
                    depends_on TEXT,
                    wm_from INTEGER,
                    wm_to INTEGER,
                    correlation_id TEXT,
                    status TEXT NOT NULL
                        CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'dead')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at INTEGER NOT NULL,
                    lease_owner TEXT,
                    lease_expires_at INTEGER,
                    last_error TEXT,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (event_id, handler)
                ) STRICT""",
                *_CHECKPOINT_INDEXES,
                """CREATE TABLE projection_watermark_ranges (
                    user_id TEXT NOT NULL,
                    handler TEXT NOT NULL,
                    wm_from INTEGER NOT NULL,
                    wm_to INTEGER NOT NULL,
                    PRIMARY KEY (user_id, handler, wm_from, wm_to)
                ) STRICT""",
            ),
        ),
        # Deleted identities are kept for good as tombstones (storage/_repos/samples.py), so
        # purge_deleted must find the deleted rows whose payload is still there without walking
        # every tombstone: index exactly those.
        Migration(
            3,
            "index deleted samples still to purge; tombstones are kept",
            (
                "CREATE INDEX health_samples_purgeable ON health_samples (deleted_at)"
                " WHERE deleted_at IS NOT NULL AND metric <> ''",
                "DROP INDEX health_samples_deleted",
            ),
        ),
        # Exports (API.md "AI and exports"): a durable job per POST /v1/exports, leased to one export
        # worker at a time; an expired lease (a crashed worker) makes a running job claimable again.
        Migration(
            4,
            "export jobs",
            (
                """CREATE TABLE export_jobs (
                    id TEXT PRIMARY KEY,
                    user_id TEXT NOT NULL,
                    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    lease_owner TEXT,
                    lease_expires_at INTEGER,
                    object_key TEXT,
                    rows_exported INTEGER,
                    bytes_exported INTEGER,
                    error TEXT,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                ) STRICT""",
                "CREATE INDEX export_jobs_due ON export_jobs (created_at) WHERE status IN ('pending', 'running')",
                "CREATE INDEX export_jobs_user ON export_jobs (user_id, created_at)",
            ),
        ),
        # Session read models (issue 12): heart rate around each consumption session, per product; and the
        # stale-session reaper's scan of active sessions (partial index: only active ones cost anything).
        Migration(
            5,
            "session and product impact read models; index of active consumption sessions",
            (
                """CREATE TABLE session_impacts (
                    user_id TEXT NOT NULL,
                    session_id TEXT NOT NULL,
                    product_id TEXT,
                    status TEXT NOT NULL,
                    start_at INTEGER NOT NULL,
                    end_at INTEGER,
                    window_from INTEGER NOT NULL,
                    window_to INTEGER NOT NULL,
                    stats TEXT NOT NULL,
                    delta_during REAL,
                    delta_after REAL,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (user_id, session_id)
                ) STRICT""",
                "CREATE INDEX session_impacts_window ON session_impacts (user_id, window_from, window_to)",
                """CREATE TABLE product_impacts (
                    user_id TEXT NOT NULL,
                    product_id TEXT NOT NULL,
                    sessions INTEGER NOT NULL,
                    stats TEXT NOT NULL,
                    delta_during REAL,
                    delta_after REAL,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (user_id, product_id)
                ) STRICT""",
                "CREATE INDEX sync_entities_active_sessions ON sync_entities (user_id, entity_id)"
                " WHERE entity_type = 'consumption_session' AND deleted = 0"
                " AND json_extract(data, '$.status') = 'active'",
            ),
        ),
        # Sync (issue 12): a client operation id is unique per user, not per device; entities
        # remember the client's clock of their last write for LAST_WRITE_WINS.
        Migration(
            6,
            "sync: client operation ids unique per user; entity client timestamps",
            (
                "CREATE UNIQUE INDEX sync_operations_user_op ON sync_operations (user_id, client_op_id)",
                "ALTER TABLE sync_entities ADD COLUMN client_ts INTEGER",
            ),
        ),
        # The retention reapers (actors/maintenance) delete finished ingest requests and recorded sync
        # operations past their retention, oldest first, a bounded batch at a time: index exactly those.
        Migration(
            7,
            "index finished ingest requests and sync operations for the retention reapers",
            (
                "CREATE INDEX ingest_requests_finished ON ingest_requests (updated_at) WHERE status <> 'processing'",
                "CREATE INDEX sync_operations_created ON sync_operations (created_at)",
            ),
        ),
        # The AI weekly report (actors/ai): one cached report per (user, ISO week), valid while the user's
        # watermark and the model match; every provider call's tokens and outcome (cost tracking).
        Migration(
            8,
            "AI weekly reports cache and AI usage",
            (
                """CREATE TABLE ai_reports (
                    user_id TEXT NOT NULL,
                    iso_week TEXT NOT NULL,
                    watermark INTEGER NOT NULL,
                    model TEXT NOT NULL,
                    report TEXT NOT NULL,
                    generated_at INTEGER NOT NULL,
                    PRIMARY KEY (user_id, iso_week)
                ) STRICT""",
                """CREATE TABLE ai_usage (
                    id INTEGER PRIMARY KEY,
                    user_id TEXT NOT NULL,
                    model TEXT NOT NULL,
                    outcome TEXT NOT NULL,
                    input_tokens INTEGER NOT NULL,
                    output_tokens INTEGER NOT NULL,
                    at INTEGER NOT NULL
                ) STRICT""",
                "CREATE INDEX ai_usage_at ON ai_usage (at)",
            ),
        ),
        # The AI weekly report (actors/ai) reads a user's sessions that started in its 7-day window.
        Migration(
            9,
            "index session impacts by start for the AI weekly report",
            ("CREATE INDEX session_impacts_start ON session_impacts (user_id, start_at)",),
        ),
    )
)
