"""PostgreSQL schema: timestamptz (UTC instants), date, jsonb, bigint identities."""

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
                    user_id text PRIMARY KEY,
                    allow_health_data_upload boolean NOT NULL DEFAULT true,
                    blocked_metrics jsonb NOT NULL DEFAULT '[]',
                    timezone text NOT NULL DEFAULT 'UTC',
                    created_at timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL
                )""",
                """CREATE TABLE health_samples (
                    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    user_id text NOT NULL,
                    source_id text NOT NULL,
                    source_record_id text NOT NULL,
                    start_at timestamptz NOT NULL,
                    end_at timestamptz NOT NULL,
                    metric text NOT NULL,
                    value double precision NOT NULL,
                    unit text NOT NULL,
                    metadata jsonb NOT NULL,
                    revision integer NOT NULL DEFAULT 1,
                    created_at timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL,
                    deleted_at timestamptz
                )""",
                "CREATE UNIQUE INDEX health_samples_natural_key"
                " ON health_samples (user_id, source_id, source_record_id, start_at)",
                "CREATE INDEX health_samples_user_metric_start ON health_samples (user_id, metric, start_at, id)",
                "CREATE INDEX health_samples_user_start ON health_samples (user_id, start_at, id)",
                "CREATE INDEX health_samples_deleted ON health_samples (deleted_at) WHERE deleted_at IS NOT NULL",
                """CREATE TABLE ingest_requests (
                    user_id text NOT NULL,
                    request_id text NOT NULL,
                    payload_hash text NOT NULL,
                    lane text,
                    status text NOT NULL CHECK (status IN ('processing', 'completed', 'failed')),
                    result jsonb,
                    error text,
                    created_at timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL,
                    PRIMARY KEY (user_id, request_id)
                )""",
                "CREATE INDEX ingest_requests_processing ON ingest_requests (updated_at) WHERE status = 'processing'",
                """CREATE TABLE outbox_events (
                    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    user_id text NOT NULL,
                    type text NOT NULL,
                    payload jsonb NOT NULL,
                    event_hash text NOT NULL,
                    dedupe_key text UNIQUE,
                    status text NOT NULL CHECK (status IN ('pending', 'processing', 'done', 'dead')),
                    attempts integer NOT NULL DEFAULT 0,
                    next_attempt_at timestamptz NOT NULL,
                    lease_owner text,
                    lease_expires_at timestamptz,
                    last_error text,
                    created_at timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL
                )""",
                "CREATE INDEX outbox_events_pending ON outbox_events (next_attempt_at, id) WHERE status = 'pending'",
                "CREATE INDEX outbox_events_processing ON outbox_events (lease_expires_at)"
                " WHERE status = 'processing'",
                "CREATE INDEX outbox_events_dead ON outbox_events (id) WHERE status = 'dead'",
                "CREATE INDEX outbox_events_done ON outbox_events (updated_at) WHERE status = 'done'",
                "CREATE INDEX outbox_events_hash ON outbox_events (event_hash)",
                """CREATE TABLE projection_checkpoints (
                    event_id bigint NOT NULL,
                    handler text NOT NULL,
                    status text NOT NULL CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
                    attempts integer NOT NULL DEFAULT 0,
                    lease_owner text,
                    lease_expires_at timestamptz,
                    last_error text,
                    created_at timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL,
                    PRIMARY KEY (event_id, handler)
                )""",
                """CREATE TABLE daily_rollups (
                    user_id text NOT NULL,
                    metric text NOT NULL,
                    local_date date NOT NULL,
                    unit text NOT NULL,
                    sample_count bigint NOT NULL,
                    value_sum double precision NOT NULL,
                    value_min double precision NOT NULL,
                    value_max double precision NOT NULL,
                    updated_at timestamptz NOT NULL,
                    PRIMARY KEY (user_id, metric, local_date)
                )""",
                """CREATE TABLE sleep_nights (
                    user_id text NOT NULL,
                    night_date date NOT NULL,
                    start_at timestamptz NOT NULL,
                    end_at timestamptz NOT NULL,
                    asleep_minutes double precision NOT NULL,
                    awake_minutes double precision NOT NULL,
                    stages jsonb NOT NULL,
                    updated_at timestamptz NOT NULL,
                    PRIMARY KEY (user_id, night_date)
                )""",
                """CREATE TABLE user_watermarks (
                    user_id text PRIMARY KEY,
                    watermark bigint NOT NULL,
                    updated_at timestamptz NOT NULL
                )""",
                """CREATE TABLE projection_watermarks (
                    user_id text NOT NULL,
                    handler text NOT NULL,
                    projected_watermark bigint NOT NULL,
                    updated_at timestamptz NOT NULL,
                    PRIMARY KEY (user_id, handler)
                )""",
                """CREATE TABLE sync_entities (
                    user_id text NOT NULL,
                    entity_type text NOT NULL,
                    entity_id text NOT NULL,
                    version bigint NOT NULL,
                    data jsonb NOT NULL,
                    deleted boolean NOT NULL,
                    created_at timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL,
                    PRIMARY KEY (user_id, entity_type, entity_id)
                )""",
                """CREATE TABLE sync_operations (
                    user_id text NOT NULL,
                    device_id text NOT NULL,
                    client_op_id text NOT NULL,
                    result jsonb NOT NULL,
                    created_at timestamptz NOT NULL,
                    PRIMARY KEY (user_id, device_id, client_op_id)
                )""",
                """CREATE TABLE sync_sequences (
                    user_id text PRIMARY KEY,
                    last_seq bigint NOT NULL
                )""",
                """CREATE TABLE sync_changes (
                    user_id text NOT NULL,
                    seq bigint NOT NULL,
                    entity_type text NOT NULL,
                    entity_id text NOT NULL,
                    op text NOT NULL CHECK (op IN ('create', 'update', 'delete')),
                    version bigint NOT NULL,
                    data jsonb NOT NULL,
                    deleted boolean NOT NULL,
                    device_id text,
                    changed_at timestamptz NOT NULL,
                    PRIMARY KEY (user_id, seq)
                )""",
                """CREATE TABLE sync_devices (
                    user_id text NOT NULL,
                    device_id text NOT NULL,
                    acked_seq bigint NOT NULL,
                    created_at timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL,
                    PRIMARY KEY (user_id, device_id)
                )""",
                """CREATE TABLE sync_conflicts (
                    id text PRIMARY KEY,
                    user_id text NOT NULL,
                    device_id text,
                    entity_type text NOT NULL,
                    entity_id text NOT NULL,
                    server_version bigint NOT NULL,
                    base_version bigint,
                    server_data jsonb NOT NULL,
                    client_data jsonb NOT NULL,
                    status text NOT NULL CHECK (status IN ('open', 'resolved')),
                    resolution text,
                    resolved_data jsonb,
                    created_at timestamptz NOT NULL,
                    resolved_at timestamptz
                )""",
                "CREATE INDEX sync_conflicts_user_status ON sync_conflicts (user_id, status, created_at)",
                """CREATE TABLE dead_letters (
                    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    source text NOT NULL,
                    user_id text,
                    key text,
                    payload jsonb NOT NULL,
                    error text NOT NULL,
                    created_at timestamptz NOT NULL
                )""",
                "CREATE INDEX dead_letters_source ON dead_letters (source, id)",
            ),
        ),
        Migration(
            2,
            "read side: one status vocabulary, content dedupe, leased checkpoints, watermark ranges",
            (
                "ALTER TABLE users ADD COLUMN source_priority jsonb NOT NULL DEFAULT '[]'",
                "ALTER TABLE outbox_events ADD COLUMN correlation_id text",
                "ALTER TABLE outbox_events DROP CONSTRAINT outbox_events_status_check",
                "UPDATE outbox_events SET status = 'completed' WHERE status = 'done'",
                "ALTER TABLE outbox_events ADD CONSTRAINT outbox_events_status_check"
                " CHECK (status IN ('pending', 'processing', 'completed', 'dead'))",
                "DROP INDEX outbox_events_done",
                "DROP INDEX outbox_events_hash",
                "CREATE INDEX outbox_events_completed ON outbox_events (updated_at) WHERE status = 'completed'",
                # Content dedupe needs at most one unfinished event per hash (see the SQLite migration).
                _COMPLETE_UNFINISHED_DUPLICATES,
                "CREATE UNIQUE INDEX outbox_events_unfinished_hash ON outbox_events (event_hash)"
                " WHERE status IN ('pending', 'processing')",
                "DROP TABLE projection_checkpoints",
                """CREATE TABLE projection_checkpoints (
                    event_id bigint NOT NULL,
                    handler text NOT NULL,
                    user_id text NOT NULL,
                    event_type text NOT NULL,
                    depends_on text,
                    wm_from bigint,
                    wm_to bigint,
                    correlation_id text,
                    status text NOT NULL
                        CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'dead')),
                    attempts integer NOT NULL DEFAULT 0,
                    next_attempt_at timestamptz NOT NULL,
                    lease_owner text,
                    lease_expires_at timestamptz,
                    last_error text,
                    created_at timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL,
                    PRIMARY KEY (event_id, handler)
                )""",
                *_CHECKPOINT_INDEXES,
                """CREATE TABLE projection_watermark_ranges (
                    user_id text NOT NULL,
                    handler text NOT NULL,
                    wm_from bigint NOT NULL,
                    wm_to bigint NOT NULL,
                    PRIMARY KEY (user_id, handler, wm_from, wm_to)
                )""",
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
                    id text PRIMARY KEY,
                    user_id text NOT NULL,
                    status text NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
                    attempts bigint NOT NULL DEFAULT 0,
                    lease_owner text,
                    lease_expires_at timestamptz,
                    object_key text,
                    rows_exported bigint,
                    bytes_exported bigint,
                    error text,
                    created_at timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL
                )""",
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
                    user_id text NOT NULL,
                    session_id text NOT NULL,
                    product_id text,
                    status text NOT NULL,
                    start_at timestamptz NOT NULL,
                    end_at timestamptz,
                    window_from timestamptz NOT NULL,
                    window_to timestamptz NOT NULL,
                    stats jsonb NOT NULL,
                    delta_during double precision,
                    delta_after double precision,
                    updated_at timestamptz NOT NULL,
                    PRIMARY KEY (user_id, session_id)
                )""",
                "CREATE INDEX session_impacts_window ON session_impacts (user_id, window_from, window_to)",
                """CREATE TABLE product_impacts (
                    user_id text NOT NULL,
                    product_id text NOT NULL,
                    sessions integer NOT NULL,
                    stats jsonb NOT NULL,
                    delta_during double precision,
                    delta_after double precision,
                    updated_at timestamptz NOT NULL,
                    PRIMARY KEY (user_id, product_id)
                )""",
                "CREATE INDEX sync_entities_active_sessions ON sync_entities (user_id, entity_id)"
                " WHERE entity_type = 'consumption_session' AND NOT deleted AND data->>'status' = 'active'",
            ),
        ),
        # Sync (issue 12): a client operation id is unique per user, not per device; entities
        # remember the client's clock of their last write for LAST_WRITE_WINS.
        Migration(
            6,
            "sync: client operation ids unique per user; entity client timestamps",
            (
                "CREATE UNIQUE INDEX sync_operations_user_op ON sync_operations (user_id, client_op_id)",
                "ALTER TABLE sync_entities ADD COLUMN client_ts timestamptz",
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
                    user_id text NOT NULL,
                    iso_week text NOT NULL,
                    watermark bigint NOT NULL,
                    model text NOT NULL,
                    report text NOT NULL,
                    generated_at timestamptz NOT NULL,
                    PRIMARY KEY (user_id, iso_week)
                )""",
                """CREATE TABLE ai_usage (
                    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    user_id text NOT NULL,
                    model text NOT NULL,
                    outcome text NOT NULL,
                    input_tokens bigint NOT NULL,
                    output_tokens bigint NOT NULL,
                    at timestamptz NOT NULL
                )""",
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
