"""The repositories, written once for both backends.

Every public method checks its arguments on the spot (InvalidData before anything runs) and
returns an :class:`~storage._tx.Op`; see :mod:`storage._tx` for how ops are executed.
All timestamps go in timezone-aware and come out as aware UTC datetimes.
"""

from __future__ import annotations

import abc
import itertools
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any, TypeVar

from . import _validate as v
from ._errors import ConflictError, InvalidData, NotFound
from ._model import (
    Change,
    ChangeIn,
    Checkpoint,
    Conflict,
    DailyRollup,
    DeadLetter,
    DeletedSamples,
    DeviceState,
    Enqueued,
    HealthSample,
    IngestBegin,
    IngestRequest,
    Json,
    OutboxEvent,
    Page,
    PreparedSamples,
    SampleCursor,
    SampleIn,
    SampleKey,
    SleepNight,
    SyncEntity,
    UpsertCounts,
    UserSettings,
)
from ._model import Watermarks as WatermarkState
from ._sql import Dialect, Steps, execute, fetch, fetchrow, fetchval, many
from ._tx import Const, Op, Step, TransactionBase

__all__ = [
    "Changes",
    "Checkpoints",
    "Conflicts",
    "DeadLetters",
    "Devices",
    "Entities",
    "Ingest",
    "Outbox",
    "Rollups",
    "Samples",
    "Sleep",
    "SyncOps",
    "Transaction",
    "Users",
    "Watermarks",
]

T = TypeVar("T")
Row = Any  # sqlite3.Row or asyncpg.Record: both index by column name


class _Repo:
    __slots__ = ("_d", "_limits", "_tx")

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx
        self._d: Dialect = tx.dialect
        self._limits = tx.config.limits

    def _op(
        self,
        step: Step,
        post: Callable[[Any], T] | None = None,
        on_commit: Callable[[T], None] | None = None,
    ) -> Op[T]:
        return Op(self._tx, step, post, on_commit)

    def _now(self) -> datetime:
        return self._tx.now()

    def _id(self, field: str, value: object) -> str:
        return v.text(field, value, self._limits.max_id_chars)

    def _name(self, field: str, value: object) -> str:
        return v.text(field, value, self._limits.max_name_chars)

    def _json(self, field: str, value: object) -> str:
        return v.dump_json(field, value, self._limits.max_json_chars)

    def _error(self, value: object) -> str:
        return v.error_text(value, self._limits.max_error_chars)

    def _limit(self, value: object) -> int:
        return v.positive_limit("limit", value, self._limits.max_batch_rows)

    def _older_than(self, seconds: object) -> Any:
        return self._d.ts(self._now() - timedelta(seconds=v.seconds("older_than_seconds", seconds)))


# --- users and settings ------------------------------------------------------------------


def _settings(row: Row | None) -> UserSettings:
    if row is None:
        return UserSettings()
    return UserSettings(
        bool(row["allow_health_data_upload"]), tuple(v.load_json(row["blocked_metrics"])), row["timezone"]
    )


class Users(_Repo):
    """Users (identified by the JWT ``sub``) and their settings."""

    __slots__ = ()

    def ensure(self, user_id: str) -> Op[bool]:
        """Create the user with default settings if absent; True if created."""
        now = self._d.ts(self._now())
        return self._op(
            fetchval(
                "INSERT INTO users (user_id, allow_health_data_upload, blocked_metrics, timezone,"
                " created_at, updated_at) VALUES ($1, true, '[]', 'UTC', $2, $2)"
                " ON CONFLICT (user_id) DO NOTHING RETURNING 1",
                self._id("user_id", user_id),
                now,
            ),
            post=lambda value: value is not None,
        )

    def get_settings(self, user_id: str) -> Op[UserSettings]:
        """The user's settings, or the defaults for a user who never saved any."""
        return self._op(
            fetchrow(
                "SELECT allow_health_data_upload, blocked_metrics, timezone FROM users WHERE user_id = $1",
                self._id("user_id", user_id),
            ),
            post=_settings,
        )

    def put_settings(self, user_id: str, settings: UserSettings) -> Op[UserSettings]:
        """Replace the user's settings (creating the user if needed); returns what was stored."""
        if not isinstance(settings, UserSettings):
            raise InvalidData("settings", "expected UserSettings")
        if type(settings.allow_health_data_upload) is not bool:
            raise InvalidData("settings.allow_health_data_upload", "expected a bool")
        if not isinstance(settings.blocked_metrics, tuple | list):
            raise InvalidData("settings.blocked_metrics", "expected a sequence of metric names")
        metrics = tuple(
            dict.fromkeys(
                self._name(f"settings.blocked_metrics[{i}]", m)
                for i, m in enumerate(settings.blocked_metrics)
            )
        )
        zone = v.timezone("settings.timezone", settings.timezone)
        now = self._d.ts(self._now())
        return self._op(
            fetchrow(
                "INSERT INTO users (user_id, allow_health_data_upload, blocked_metrics, timezone,"
                " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)"
                " ON CONFLICT (user_id) DO UPDATE SET"
                " allow_health_data_upload = excluded.allow_health_data_upload,"
                " blocked_metrics = excluded.blocked_metrics, timezone = excluded.timezone,"
                " updated_at = excluded.updated_at"
                " RETURNING allow_health_data_upload, blocked_metrics, timezone",
                self._id("user_id", user_id),
                settings.allow_health_data_upload,
                self._json("settings.blocked_metrics", list(metrics)),
                zone,
                now,
            ),
            post=_settings,
        )


# --- health samples ----------------------------------------------------------------------

_SAMPLE_COLS = (
    "id, user_id, source_id, source_record_id, metric, value, unit, start_at, end_at, metadata,"
    " revision, created_at, updated_at, deleted_at"
)
_SAMPLE_INSERT = (
    "INSERT INTO health_samples (user_id, source_id, source_record_id, start_at, end_at, metric,"
    " value, unit, metadata, created_at, updated_at)"
)
# revision is 1 exactly when the row was inserted by this statement: that is how
# PostgreSQL splits an upsert's count into inserted and updated.
_SAMPLE_ON_CONFLICT = (
    " ON CONFLICT (user_id, source_id, source_record_id, start_at) DO UPDATE SET"
    " end_at = excluded.end_at, metric = excluded.metric, value = excluded.value,"
    " unit = excluded.unit, metadata = excluded.metadata, updated_at = excluded.updated_at,"
    " deleted_at = NULL, revision = health_samples.revision + 1"
)
_PG_SAMPLE_UPSERT = (
    "WITH up AS (" + _SAMPLE_INSERT + " SELECT $1, k.s, k.r, k.st, k.en, k.m, k.v, k.u, k.md::jsonb, $10, $10"
    " FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[],"
    " $7::float8[], $8::text[], $9::text[]) AS k(s, r, st, en, m, v, u, md)"
    + _SAMPLE_ON_CONFLICT
    + " RETURNING revision)"
    " SELECT count(*) FILTER (WHERE revision = 1) AS inserted, count(*) AS total FROM up"
)
_SQLITE_CHUNK = 500  # rows per multi-row VALUES statement (8 bound values each)


def _sqlite_sample_upsert(rows: int) -> str:
    # ?1 is the user and ?2 the timestamp, shared by every row; each row binds 8 values.
    values = ",".join(
        f"(?1,?{b + 1},?{b + 2},?{b + 3},?{b + 4},?{b + 5},?{b + 6},?{b + 7},?{b + 8},?2,?2)"
        for b in range(2, 2 + 8 * rows, 8)
    )
    return _SAMPLE_INSERT + " VALUES " + values + _SAMPLE_ON_CONFLICT


_SQLITE_UPSERT_FULL = _sqlite_sample_upsert(_SQLITE_CHUNK)


class Samples(_Repo):
    """Health samples keyed by (user, source_id, source_record_id, start_at)."""

    __slots__ = ()

    def _sample(self, row: Row) -> HealthSample:
        ts = self._d.ts_out
        deleted = row["deleted_at"]
        return HealthSample(
            row["id"],
            row["user_id"],
            row["source_id"],
            row["source_record_id"],
            row["metric"],
            row["value"],
            row["unit"],
            ts(row["start_at"]),
            ts(row["end_at"]),
            v.load_json(row["metadata"]),
            row["revision"],
            ts(row["created_at"]),
            ts(row["updated_at"]),
            None if deleted is None else ts(deleted),
        )

    def upsert_many(self, user_id: str, rows: Sequence[SampleIn] | PreparedSamples) -> Op[UpsertCounts]:
        """Insert or update samples in one statement per batch; a re-upserted deleted sample
        is live again. Repeats of a natural key within ``rows`` count once (the last wins).
        ``rows`` may come from ``store.prepare_samples`` (checked already)."""
        user = self._id("user_id", user_id)
        d = self._d
        norm: Sequence[tuple[Any, ...]]
        if isinstance(rows, PreparedSamples):
            if rows.backend != d.name or rows.limits != self._limits:
                raise InvalidData("rows", f"prepared by a {rows.backend} store with other limits than this "
                                  f"{d.name} one: prepare them with the store that writes them")
            norm = rows.rows
        else:
            norm = v.samples(rows, self._limits, micros=d.name == "sqlite")
        if not norm:
            return self._op(Const(UpsertCounts(0, 0)))
        now = d.ts(self._now())
        if d.name == "postgresql":
            # One lock order for every writer, so overlapping batches cannot deadlock.
            norm = sorted(norm, key=lambda r: (r[0], r[1], r[2]))
            cols = [list(c) for c in zip(*norm, strict=True)]
            return self._op(
                fetchrow(_PG_SAMPLE_UPSERT, user, *cols, now),
                post=lambda r: UpsertCounts(r["inserted"], r["total"] - r["inserted"]),
            )

        def steps() -> Steps[UpsertCounts]:
            # SQLite gives a new row rowid max(rowid) + 1 and the writer is alone in its
            # transaction, so rows above the old maximum are exactly the inserted ones:
            # cheaper than RETURNING a row per sample.
            before = yield fetchval("SELECT coalesce(max(id), 0) FROM health_samples")
            for start in range(0, len(norm), _SQLITE_CHUNK):
                chunk = norm[start : start + _SQLITE_CHUNK]
                sql = (
                    _SQLITE_UPSERT_FULL if len(chunk) == _SQLITE_CHUNK else _sqlite_sample_upsert(len(chunk))
                )
                yield execute(sql, user, now, *itertools.chain.from_iterable(chunk))
            inserted = yield fetchval("SELECT count(*) FROM health_samples WHERE id > $1", before)
            return UpsertCounts(inserted, len(norm) - inserted)

        return self._op(steps)

    def soft_delete_many(self, user_id: str, keys: Sequence[SampleKey]) -> Op[DeletedSamples]:
        """Mark live samples deleted (``deleted_at``); unknown or already deleted keys are skipped."""
        user = self._id("user_id", user_id)
        d = self._d
        norm = v.sample_keys(keys, self._limits, d.ts)
        if not norm:
            return self._op(Const(DeletedSamples(0, ())))
        now = d.ts(self._now())
        if d.name == "postgresql":
            norm.sort()
            s, r, st = (list(c) for c in zip(*norm, strict=True))
            cmd = fetch(
                "UPDATE health_samples h SET deleted_at = $5, updated_at = $5, revision = h.revision + 1"
                " FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS k(s, r, st)"
                " WHERE h.user_id = $1 AND h.source_id = k.s AND h.source_record_id = k.r"
                " AND h.start_at = k.st AND h.deleted_at IS NULL RETURNING h.metric, h.start_at",
                user,
                s,
                r,
                st,
                now,
            )
        else:
            # CROSS JOIN makes SQLite loop over the keys and probe the natural-key index,
            # instead of scanning the user's samples once per key.
            cmd = fetch(
                "UPDATE health_samples SET deleted_at = $3, updated_at = $3, revision = revision + 1"
                " WHERE id IN (SELECT h.id FROM json_each($2) AS k CROSS JOIN health_samples AS h"
                " WHERE h.user_id = $1 AND h.source_id = json_extract(k.value, '$[0]')"
                " AND h.source_record_id = json_extract(k.value, '$[1]')"
                " AND h.start_at = json_extract(k.value, '$[2]') AND h.deleted_at IS NULL)"
                " RETURNING metric, start_at",
                user,
                v.dump_json("keys", norm, 2**62),
                now,
            )
        ts = d.ts_out
        return self._op(
            cmd,
            post=lambda rows: DeletedSamples(
                len(rows), tuple((r["metric"], ts(r["start_at"])) for r in rows)
            ),
        )

    def get(self, user_id: str, key: SampleKey) -> Op[HealthSample | None]:
        """One sample by natural key, deleted or not."""
        ((source, record, start),) = v.sample_keys([key], self._limits, self._d.ts)
        return self._op(
            fetchrow(
                f"SELECT {_SAMPLE_COLS} FROM health_samples WHERE user_id = $1 AND source_id = $2"
                " AND source_record_id = $3 AND start_at = $4",
                self._id("user_id", user_id),
                source,
                record,
                start,
            ),
            post=lambda row: None if row is None else self._sample(row),
        )

    def query(
        self,
        user_id: str,
        *,
        metric: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        after: SampleCursor | None = None,
        limit: int = 100,
        include_deleted: bool = False,
    ) -> Op[Page[HealthSample]]:
        """A page of samples with ``start <= start_at < end``, ordered by (start_at, id).

        Pass the page's ``next_cursor`` as ``after`` for the next page (keyset pagination:
        stable under concurrent inserts, no OFFSET scans).
        """
        d = self._d
        args: list[Any] = [self._id("user_id", user_id)]
        where = ["user_id = $1"]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if metric is not None:
            where.append(f"metric = {arg(self._name('metric', metric))}")
        if start is not None:
            where.append(f"start_at >= {arg(d.ts(v.aware('start', start)))}")
        if end is not None:
            where.append(f"start_at < {arg(d.ts(v.aware('end', end)))}")
        if not include_deleted:
            where.append("deleted_at IS NULL")
        if after is not None:
            if not isinstance(after, SampleCursor):
                raise InvalidData("after", "expected a SampleCursor")
            at = arg(d.ts(v.aware("after.start_at", after.start_at)))
            where.append(f"(start_at, id) > ({at}, {arg(v.integer('after.id', after.id))})")
        size = self._limit(limit)
        sql = (
            f"SELECT {_SAMPLE_COLS} FROM health_samples WHERE {' AND '.join(where)}"
            f" ORDER BY start_at, id LIMIT {arg(size + 1)}"
        )

        def page(rows: list[Row]) -> Page[HealthSample]:
            items = [self._sample(r) for r in rows[:size]]
            more = len(rows) > size
            return Page(items, SampleCursor(items[-1].start_at, items[-1].id) if more else None)

        return self._op(fetch(sql, *args), post=page)

    def purge_deleted(self, older_than_seconds: float, *, limit: int = 10_000) -> Op[int]:
        """Hard-delete samples soft-deleted longer ago than this; returns how many."""
        return self._op(
            execute(
                "DELETE FROM health_samples WHERE id IN (SELECT id FROM health_samples"
                " WHERE deleted_at IS NOT NULL AND deleted_at < $1 ORDER BY deleted_at LIMIT $2)",
                self._older_than(older_than_seconds),
                self._limit(limit),
            )
        )


# --- ingest requests ---------------------------------------------------------------------

_INGEST_COLS = "user_id, request_id, payload_hash, lane, status, result, error, created_at, updated_at"


class Ingest(_Repo):
    """Request-level idempotency of ingestion, keyed by (user, requestId)."""

    __slots__ = ()

    def _request(self, row: Row) -> IngestRequest:
        result = row["result"]
        return IngestRequest(
            row["user_id"],
            row["request_id"],
            row["payload_hash"],
            row["lane"],
            row["status"],
            None if result is None else v.load_json(result),
            row["error"],
            self._d.ts_out(row["created_at"]),
            self._d.ts_out(row["updated_at"]),
        )

    def begin(
        self, user_id: str, request_id: str, payload_hash: str, *, lane: str | None = None
    ) -> Op[IngestBegin]:
        """Atomically claim a request: insert it as 'processing', or take over a 'failed' one
        with the same hash; otherwise return the existing row with ``acquired=False``.

        In the unit of work that writes the request's changes, a concurrent repeat waits for it and
        then finds it completed; committed on its own first, repeats would see 'processing'."""
        args = (
            self._id("user_id", user_id),
            self._id("request_id", request_id),
            self._id("payload_hash", payload_hash),
            v.opt_text("lane", lane, self._limits.max_name_chars),
            self._d.ts(self._now()),
        )

        def steps() -> Steps[IngestBegin]:
            row = yield fetchrow(
                f"INSERT INTO ingest_requests ({_INGEST_COLS})"
                " VALUES ($1, $2, $3, $4, 'processing', NULL, NULL, $5, $5)"
                " ON CONFLICT (user_id, request_id) DO UPDATE SET status = 'processing',"
                " lane = excluded.lane, result = NULL, error = NULL, updated_at = excluded.updated_at"
                " WHERE ingest_requests.status = 'failed'"
                " AND ingest_requests.payload_hash = excluded.payload_hash"
                f" RETURNING {_INGEST_COLS}",
                *args,
            )
            if row is not None:
                return IngestBegin(self._request(row), True)
            row = yield fetchrow(
                f"SELECT {_INGEST_COLS} FROM ingest_requests WHERE user_id = $1 AND request_id = $2",
                *args[:2],
            )
            return IngestBegin(self._request(row), False)

        return self._op(steps)

    def _finish(
        self, user_id: str, request_id: str, status: str, result: str | None, error: str | None
    ) -> Op[None]:
        args = (self._id("user_id", user_id), self._id("request_id", request_id))
        now = self._d.ts(self._now())

        def steps() -> Steps[None]:
            done = yield fetchval(
                "UPDATE ingest_requests SET status = $3, result = $4, error = $5, updated_at = $6"
                " WHERE user_id = $1 AND request_id = $2 AND status = 'processing' RETURNING 1",
                *args,
                status,
                result,
                error,
                now,
            )
            if done is None:
                current = yield fetchval(
                    "SELECT status FROM ingest_requests WHERE user_id = $1 AND request_id = $2", *args
                )
                if current is None:
                    raise NotFound(f"no ingest request {args[1]!r} for user {args[0]!r}")
                raise ConflictError(f"ingest request {args[1]!r} is {current}, not processing")
            return None

        return self._op(steps)

    def complete(self, user_id: str, request_id: str, result: Json) -> Op[None]:
        """processing → completed with the stored result (put this in the unit of work that
        writes the samples). NotFound / ConflictError if it is not processing."""
        return self._finish(user_id, request_id, "completed", self._json("result", result), None)

    def fail(self, user_id: str, request_id: str, error: str) -> Op[None]:
        """processing → failed; a repeat with the same hash may ``begin`` it again."""
        return self._finish(user_id, request_id, "failed", None, self._error(error))

    def get(self, user_id: str, request_id: str) -> Op[IngestRequest | None]:
        return self._op(
            fetchrow(
                f"SELECT {_INGEST_COLS} FROM ingest_requests WHERE user_id = $1 AND request_id = $2",
                self._id("user_id", user_id),
                self._id("request_id", request_id),
            ),
            post=lambda row: None if row is None else self._request(row),
        )

    def reap_stale(self, older_than_seconds: float) -> Op[int]:
        """Fail 'processing' requests untouched for longer than this (their worker died)."""
        return self._op(
            execute(
                "UPDATE ingest_requests SET status = 'failed', error = $2, updated_at = $3"
                " WHERE status = 'processing' AND updated_at < $1",
                self._older_than(older_than_seconds),
                "reaped: processing for too long",
                self._d.ts(self._now()),
            )
        )


# --- outbox ------------------------------------------------------------------------------

_OUTBOX_COLS = (
    "id, user_id, type, payload, event_hash, dedupe_key, status, attempts, next_attempt_at,"
    " lease_owner, lease_expires_at, last_error, created_at, updated_at"
)
_OUTBOX_INSERT = (
    "INSERT INTO outbox_events (user_id, type, payload, event_hash, dedupe_key, status, attempts,"
    " next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $7)"
    " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
)
_OUTBOX_STATUSES = ("pending", "processing", "done", "dead")


class Outbox(_Repo):
    """The transactional outbox: enqueue in the same unit of work as the change it announces."""

    __slots__ = ()

    def _event(self, row: Row) -> OutboxEvent:
        ts, opt = self._d.ts_out, self._d.opt_ts_out
        return OutboxEvent(
            row["id"],
            row["user_id"],
            row["type"],
            v.load_json(row["payload"]),
            row["event_hash"],
            row["dedupe_key"],
            row["status"],
            row["attempts"],
            ts(row["next_attempt_at"]),
            row["lease_owner"],
            opt(row["lease_expires_at"]),
            row["last_error"],
            ts(row["created_at"]),
            ts(row["updated_at"]),
        )

    def enqueue(
        self,
        user_id: str,
        type: str,
        payload: Json,
        *,
        dedupe_key: str | None = None,
        available_at: datetime | None = None,
    ) -> Op[Enqueued]:
        """Add an event (status 'pending'). With a ``dedupe_key`` already present nothing is
        added and the existing id comes back with ``created=False``. Subscribers of
        ``store.outbox_notifications()`` hear about it once the transaction commits."""
        user = self._id("user_id", user_id)
        kind = self._name("type", type)
        body = self._json("payload", payload)
        now_dt = self._now()
        args = (
            user,
            kind,
            body,
            v.event_hash(user, kind, payload),
            v.opt_text("dedupe_key", dedupe_key, self._limits.max_id_chars),
            self._d.ts(v.aware("available_at", available_at) if available_at is not None else now_dt),
            self._d.ts(now_dt),
        )
        channel = self._tx.notify_channel

        def steps() -> Steps[Enqueued]:
            if channel is not None:
                # NOTIFY inside the transaction: PostgreSQL delivers it on COMMIT, never before.
                new_id = yield fetchval(
                    f"WITH ins AS ({_OUTBOX_INSERT}) SELECT id, pg_notify($8, id::text) FROM ins",
                    *args,
                    channel,
                )
            else:
                new_id = yield fetchval(_OUTBOX_INSERT, *args)
            if new_id is not None:
                return Enqueued(new_id, True)
            existing = yield fetchval("SELECT id FROM outbox_events WHERE dedupe_key = $1", args[4])
            return Enqueued(existing, False)

        def notify(result: Enqueued) -> None:
            if result.created:
                self._tx._notify_outbox(result.id)

        return self._op(steps, on_commit=notify)

    def claim(
        self, owner: str, *, limit: int = 100, lease_seconds: float | None = None
    ) -> Op[list[OutboxEvent]]:
        """Lease up to ``limit`` due events to ``owner``, oldest due first. Each claim counts
        as an attempt. Events whose lease expired are due again (or 'dead' when that was
        their last attempt).

        PostgreSQL skips rows other claimers hold (SKIP LOCKED); SQLite has one writer."""
        policy = self._tx.config.outbox
        lease = policy.lease_seconds if lease_seconds is None else v.seconds("lease_seconds", lease_seconds)
        now_dt = self._now()
        now = self._d.ts(now_dt)
        expires = self._d.ts(now_dt + timedelta(seconds=lease))
        who = self._id("owner", owner)
        size = self._limit(limit)
        skip_locked = self._d.skip_locked

        def steps() -> Steps[list[OutboxEvent]]:
            # Expired leases first: their holder crashed or stalled. Back to pending (due at
            # once), or dead if that was the last attempt. SKIP LOCKED: a lease another
            # claimer is recovering right now is its business.
            yield execute(
                f"WITH expired AS (SELECT id FROM outbox_events WHERE status = 'processing'"
                f" AND lease_expires_at <= $1{skip_locked})"
                " UPDATE outbox_events SET"
                " status = CASE WHEN attempts >= $2 THEN 'dead' ELSE 'pending' END,"
                " last_error = CASE WHEN attempts >= $2 THEN $3 ELSE last_error END,"
                " lease_owner = NULL, lease_expires_at = NULL, updated_at = $1"
                " WHERE id IN (SELECT id FROM expired)",
                now,
                policy.max_attempts,
                "lease expired on the last attempt",
            )
            # Oldest due first, straight off the partial index on (next_attempt_at, id).
            rows = yield fetch(
                "WITH due AS (SELECT id FROM outbox_events WHERE status = 'pending' AND next_attempt_at <= $1"
                f" ORDER BY next_attempt_at, id LIMIT $4{skip_locked})"
                " UPDATE outbox_events SET status = 'processing', lease_owner = $2,"
                " lease_expires_at = $3, attempts = attempts + 1, updated_at = $1"
                f" WHERE id IN (SELECT id FROM due) RETURNING {_OUTBOX_COLS}",
                now,
                who,
                expires,
                size,
            )
            return sorted((self._event(r) for r in rows), key=lambda e: (e.next_attempt_at, e.id))

        return self._op(steps)

    def complete(self, event_id: int, owner: str) -> Op[bool]:
        """processing → done; False if ``owner`` no longer holds the event."""
        return self._op(
            execute(
                "UPDATE outbox_events SET status = 'done', lease_owner = NULL, lease_expires_at = NULL,"
                " last_error = NULL, updated_at = $3 WHERE id = $1 AND status = 'processing' AND lease_owner = $2",
                v.integer("event_id", event_id, 1),
                self._id("owner", owner),
                self._d.ts(self._now()),
            ),
            post=bool,
        )

    def fail(self, event_id: int, owner: str, error: str, *, retryable: bool = True) -> Op[str | None]:
        """processing → pending again after a jittered exponential backoff, or → dead once
        the attempts are used up (or at once if not ``retryable``). Returns the new status,
        None if ``owner`` no longer holds the event."""
        ident = v.integer("event_id", event_id, 1)
        who = self._id("owner", owner)
        message = self._error(error)
        policy = self._tx.config.outbox
        now_dt = self._now()
        draw = self._tx._rng.random()  # drawn here so the schedule follows the store's seed
        for_update = " FOR UPDATE" if self._d.name == "postgresql" else ""

        def steps() -> Steps[str | None]:
            attempts = yield fetchval(
                "SELECT attempts FROM outbox_events WHERE id = $1 AND status = 'processing'"
                f" AND lease_owner = $2{for_update}",
                ident,
                who,
            )
            if attempts is None:
                return None
            status = "dead" if not retryable or attempts >= policy.max_attempts else "pending"
            delay = policy.delay(attempts, draw)
            yield execute(
                "UPDATE outbox_events SET status = $2, next_attempt_at = $3, last_error = $4,"
                " lease_owner = NULL, lease_expires_at = NULL, updated_at = $5 WHERE id = $1",
                ident,
                status,
                self._d.ts(now_dt + timedelta(seconds=delay)),
                message,
                self._d.ts(now_dt),
            )
            return status

        return self._op(steps)

    def release(self, owner: str) -> Op[int]:
        """Hand back every event ``owner`` holds (graceful shutdown); the attempt is not counted."""
        return self._op(
            execute(
                "UPDATE outbox_events SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL,"
                " attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated_at = $2"
                " WHERE status = 'processing' AND lease_owner = $1",
                self._id("owner", owner),
                self._d.ts(self._now()),
            )
        )

    def get(self, event_id: int) -> Op[OutboxEvent | None]:
        return self._op(
            fetchrow(
                f"SELECT {_OUTBOX_COLS} FROM outbox_events WHERE id = $1", v.integer("event_id", event_id)
            ),
            post=lambda row: None if row is None else self._event(row),
        )

    def list_dead(self, *, after_id: int = 0, limit: int = 100) -> Op[list[OutboxEvent]]:
        """Dead-lettered events by id (keyset: pass the last id as ``after_id``)."""
        return self._op(
            fetch(
                f"SELECT {_OUTBOX_COLS} FROM outbox_events WHERE status = 'dead' AND id > $1 ORDER BY id LIMIT $2",
                v.integer("after_id", after_id),
                self._limit(limit),
            ),
            post=lambda rows: [self._event(r) for r in rows],
        )

    def replay(self, event_id: int) -> Op[bool]:
        """dead → pending with a fresh attempt budget; False if the event is not dead."""
        now = self._d.ts(self._now())
        return self._op(
            execute(
                "UPDATE outbox_events SET status = 'pending', attempts = 0, next_attempt_at = $2,"
                " lease_owner = NULL, lease_expires_at = NULL, updated_at = $2 WHERE id = $1 AND status = 'dead'",
                v.integer("event_id", event_id, 1),
                now,
            ),
            post=bool,
        )

    def counts(self) -> Op[dict[str, int]]:
        """Events per status (all four statuses present) for metrics and health."""

        def tally(rows: list[Row]) -> dict[str, int]:
            out = dict.fromkeys(_OUTBOX_STATUSES, 0)
            out.update({r["status"]: r["n"] for r in rows})
            return out

        return self._op(fetch("SELECT status, count(*) AS n FROM outbox_events GROUP BY status"), post=tally)

    def purge_done(self, older_than_seconds: float, *, limit: int = 10_000) -> Op[int]:
        """Delete 'done' events finished longer ago than this; returns how many."""
        return self._op(
            execute(
                "DELETE FROM outbox_events WHERE id IN (SELECT id FROM outbox_events"
                " WHERE status = 'done' AND updated_at < $1 ORDER BY id LIMIT $2)",
                self._older_than(older_than_seconds),
                self._limit(limit),
            )
        )


# --- projection checkpoints --------------------------------------------------------------

_CHECKPOINT_COLS = (
    "event_id, handler, status, attempts, lease_owner, lease_expires_at, last_error, updated_at"
)


class Checkpoints(_Repo):
    """Per (outbox event, projection handler) progress, with a lease so one worker runs it."""

    __slots__ = ()

    def _checkpoint(self, row: Row) -> Checkpoint:
        return Checkpoint(
            row["event_id"],
            row["handler"],
            row["status"],
            row["attempts"],
            row["lease_owner"],
            self._d.opt_ts_out(row["lease_expires_at"]),
            row["last_error"],
            self._d.ts_out(row["updated_at"]),
        )

    def try_acquire(
        self, event_id: int, handler: str, owner: str, *, lease_seconds: float | None = None
    ) -> Op[Checkpoint | None]:
        """Take the lease if the checkpoint is new, pending, failed, expired, or already
        ``owner``'s; None if another live lease holds it or it is completed."""
        lease = (
            self._tx.config.checkpoint_lease_seconds
            if lease_seconds is None
            else v.seconds("lease_seconds", lease_seconds)
        )
        now_dt = self._now()
        return self._op(
            fetchrow(
                f"INSERT INTO projection_checkpoints ({_CHECKPOINT_COLS}, created_at)"
                " VALUES ($1, $2, 'processing', 1, $3, $4, NULL, $5, $5)"
                " ON CONFLICT (event_id, handler) DO UPDATE SET status = 'processing',"
                " attempts = projection_checkpoints.attempts + 1, lease_owner = excluded.lease_owner,"
                " lease_expires_at = excluded.lease_expires_at, last_error = NULL,"
                " updated_at = excluded.updated_at"
                " WHERE projection_checkpoints.status IN ('pending', 'failed')"
                " OR (projection_checkpoints.status = 'processing'"
                " AND (projection_checkpoints.lease_expires_at <= excluded.updated_at"
                " OR projection_checkpoints.lease_owner = excluded.lease_owner))"
                f" RETURNING {_CHECKPOINT_COLS}",
                v.integer("event_id", event_id, 1),
                self._id("handler", handler),
                self._id("owner", owner),
                self._d.ts(now_dt + timedelta(seconds=lease)),
                self._d.ts(now_dt),
            ),
            post=lambda row: None if row is None else self._checkpoint(row),
        )

    def _finish(self, event_id: int, handler: str, owner: str, status: str, error: str | None) -> Op[bool]:
        return self._op(
            execute(
                "UPDATE projection_checkpoints SET status = $4, last_error = $5, lease_owner = NULL,"
                " lease_expires_at = NULL, updated_at = $6"
                " WHERE event_id = $1 AND handler = $2 AND status = 'processing' AND lease_owner = $3",
                v.integer("event_id", event_id, 1),
                self._id("handler", handler),
                self._id("owner", owner),
                status,
                error,
                self._d.ts(self._now()),
            ),
            post=bool,
        )

    def complete(self, event_id: int, handler: str, owner: str) -> Op[bool]:
        """processing → completed; False if ``owner`` lost the lease."""
        return self._finish(event_id, handler, owner, "completed", None)

    def fail(self, event_id: int, handler: str, owner: str, error: str) -> Op[bool]:
        """processing → failed (may be acquired again); False if ``owner`` lost the lease."""
        return self._finish(event_id, handler, owner, "failed", self._error(error))

    def get(self, event_id: int, handler: str) -> Op[Checkpoint | None]:
        return self._op(
            fetchrow(
                f"SELECT {_CHECKPOINT_COLS} FROM projection_checkpoints WHERE event_id = $1 AND handler = $2",
                v.integer("event_id", event_id, 1),
                self._id("handler", handler),
            ),
            post=lambda row: None if row is None else self._checkpoint(row),
        )

    def list_for_event(self, event_id: int) -> Op[list[Checkpoint]]:
        return self._op(
            fetch(
                f"SELECT {_CHECKPOINT_COLS} FROM projection_checkpoints WHERE event_id = $1 ORDER BY handler",
                v.integer("event_id", event_id, 1),
            ),
            post=lambda rows: [self._checkpoint(r) for r in rows],
        )


# --- projections: daily rollups and sleep nights -----------------------------------------

_ROLLUP_UPSERT = (
    "INSERT INTO daily_rollups (user_id, metric, local_date, unit, sample_count, value_sum,"
    " value_min, value_max, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    " ON CONFLICT (user_id, metric, local_date) DO UPDATE SET unit = excluded.unit,"
    " sample_count = excluded.sample_count, value_sum = excluded.value_sum,"
    " value_min = excluded.value_min, value_max = excluded.value_max, updated_at = excluded.updated_at"
)


class Rollups(_Repo):
    """Daily aggregates per (user, metric, local date)."""

    __slots__ = ()

    def _rows(self, rows: Sequence[DailyRollup]) -> list[tuple[Any, ...]]:
        v.batch("rows", rows, self._limits)
        now = self._d.ts(self._now())
        out = []
        for i, r in enumerate(rows):
            if not isinstance(r, DailyRollup):
                raise InvalidData(f"rows[{i}]", "expected a DailyRollup")
            out.append(
                (
                    self._id(f"rows[{i}].user_id", r.user_id),
                    self._name(f"rows[{i}].metric", r.metric),
                    self._d.day(v.day(f"rows[{i}].local_date", r.local_date)),
                    self._name(f"rows[{i}].unit", r.unit),
                    v.integer(f"rows[{i}].count", r.count),
                    v.finite(f"rows[{i}].sum", r.sum),
                    v.finite(f"rows[{i}].min", r.min),
                    v.finite(f"rows[{i}].max", r.max),
                    now,
                )
            )
        return out

    def _rollup(self, row: Row) -> DailyRollup:
        return DailyRollup(
            row["user_id"],
            row["metric"],
            self._d.day_out(row["local_date"]),
            row["unit"],
            row["sample_count"],
            row["value_sum"],
            row["value_min"],
            row["value_max"],
        )

    def upsert_many(self, rows: Sequence[DailyRollup]) -> Op[int]:
        """Insert or overwrite the given days; returns how many rows were written."""
        norm = self._rows(rows)
        return self._op(many(_ROLLUP_UPSERT, norm) if norm else Const(None), post=lambda _: len(norm))

    def replace_range(
        self, user_id: str, metric: str, start: date, end: date, rows: Sequence[DailyRollup]
    ) -> Op[int]:
        """Make ``rows`` the whole content of [start, end] for this user and metric (days that
        lost all their samples disappear). Returns how many rows were written."""
        user, name = self._id("user_id", user_id), self._name("metric", metric)
        first, last = self._d.day(v.day("start", start)), self._d.day(v.day("end", end))
        norm = self._rows(rows)
        for i, r in enumerate(norm):
            if r[0] != user or r[1] != name or not first <= r[2] <= last:
                raise InvalidData(f"rows[{i}]", "outside the replaced user, metric or date range")

        def steps() -> Steps[int]:
            yield execute(
                "DELETE FROM daily_rollups WHERE user_id = $1 AND metric = $2 AND local_date >= $3"
                " AND local_date <= $4",
                user,
                name,
                first,
                last,
            )
            if norm:
                yield many(_ROLLUP_UPSERT, norm)
            return len(norm)

        return self._op(steps)

    def read(self, user_id: str, metric: str, start: date, end: date) -> Op[list[DailyRollup]]:
        """Days in [start, end] (inclusive), in date order."""
        return self._op(
            fetch(
                "SELECT user_id, metric, local_date, unit, sample_count, value_sum, value_min, value_max"
                " FROM daily_rollups WHERE user_id = $1 AND metric = $2 AND local_date >= $3"
                " AND local_date <= $4 ORDER BY local_date",
                self._id("user_id", user_id),
                self._name("metric", metric),
                self._d.day(v.day("start", start)),
                self._d.day(v.day("end", end)),
            ),
            post=lambda rows: [self._rollup(r) for r in rows],
        )


_SLEEP_UPSERT = (
    "INSERT INTO sleep_nights (user_id, night_date, start_at, end_at, asleep_minutes, awake_minutes,"
    " stages, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    " ON CONFLICT (user_id, night_date) DO UPDATE SET start_at = excluded.start_at,"
    " end_at = excluded.end_at, asleep_minutes = excluded.asleep_minutes,"
    " awake_minutes = excluded.awake_minutes, stages = excluded.stages, updated_at = excluded.updated_at"
)


class Sleep(_Repo):
    """Sleep summaries per (user, night date)."""

    __slots__ = ()

    def _rows(self, nights: Sequence[SleepNight]) -> list[tuple[Any, ...]]:
        v.batch("nights", nights, self._limits)
        d = self._d
        now = d.ts(self._now())
        out = []
        for i, n in enumerate(nights):
            if not isinstance(n, SleepNight):
                raise InvalidData(f"nights[{i}]", "expected a SleepNight")
            start = v.aware(f"nights[{i}].start_at", n.start_at)
            end = v.aware(f"nights[{i}].end_at", n.end_at)
            if end < start:
                raise InvalidData(f"nights[{i}].end_at", "ends before start_at")
            if not isinstance(n.stages, Mapping):
                raise InvalidData(f"nights[{i}].stages", "expected a JSON object")
            out.append(
                (
                    self._id(f"nights[{i}].user_id", n.user_id),
                    d.day(v.day(f"nights[{i}].night_date", n.night_date)),
                    d.ts(start),
                    d.ts(end),
                    v.finite(f"nights[{i}].asleep_minutes", n.asleep_minutes),
                    v.finite(f"nights[{i}].awake_minutes", n.awake_minutes),
                    self._json(f"nights[{i}].stages", dict(n.stages)),
                    now,
                )
            )
        return out

    def _night(self, row: Row) -> SleepNight:
        return SleepNight(
            row["user_id"],
            self._d.day_out(row["night_date"]),
            self._d.ts_out(row["start_at"]),
            self._d.ts_out(row["end_at"]),
            row["asleep_minutes"],
            row["awake_minutes"],
            v.load_json(row["stages"]),
        )

    def upsert_many(self, nights: Sequence[SleepNight]) -> Op[int]:
        """Insert or overwrite the given nights; returns how many rows were written."""
        norm = self._rows(nights)
        return self._op(many(_SLEEP_UPSERT, norm) if norm else Const(None), post=lambda _: len(norm))

    def replace_range(self, user_id: str, start: date, end: date, nights: Sequence[SleepNight]) -> Op[int]:
        """Make ``nights`` the whole content of [start, end] for this user."""
        user = self._id("user_id", user_id)
        first, last = self._d.day(v.day("start", start)), self._d.day(v.day("end", end))
        norm = self._rows(nights)
        for i, r in enumerate(norm):
            if r[0] != user or not first <= r[1] <= last:
                raise InvalidData(f"nights[{i}]", "outside the replaced user or date range")

        def steps() -> Steps[int]:
            yield execute(
                "DELETE FROM sleep_nights WHERE user_id = $1 AND night_date >= $2 AND night_date <= $3",
                user,
                first,
                last,
            )
            if norm:
                yield many(_SLEEP_UPSERT, norm)
            return len(norm)

        return self._op(steps)

    def read(self, user_id: str, start: date, end: date) -> Op[list[SleepNight]]:
        """Nights in [start, end] (inclusive), in date order."""
        return self._op(
            fetch(
                "SELECT user_id, night_date, start_at, end_at, asleep_minutes, awake_minutes, stages"
                " FROM sleep_nights WHERE user_id = $1 AND night_date >= $2 AND night_date <= $3"
                " ORDER BY night_date",
                self._id("user_id", user_id),
                self._d.day(v.day("start", start)),
                self._d.day(v.day("end", end)),
            ),
            post=lambda rows: [self._night(r) for r in rows],
        )


# --- watermarks --------------------------------------------------------------------------


class Watermarks(_Repo):
    """Freshness: the user's committed-change counter and each projection's caught-up mark."""

    __slots__ = ()

    def bump(self, user_id: str, by: int = 1) -> Op[int]:
        """Add ``by`` (>= 1) to the user's watermark; returns the new value. Put it in the
        unit of work that changes the samples."""
        return self._op(
            fetchval(
                "INSERT INTO user_watermarks (user_id, watermark, updated_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (user_id) DO UPDATE SET"
                " watermark = user_watermarks.watermark + excluded.watermark, updated_at = excluded.updated_at"
                " RETURNING watermark",
                self._id("user_id", user_id),
                v.integer("by", by, 1),
                self._d.ts(self._now()),
            )
        )

    def get(self, user_id: str) -> Op[WatermarkState]:
        """The user's watermark (0 if never bumped) and every handler's projected watermark."""
        user = self._id("user_id", user_id)

        def steps() -> Steps[WatermarkState]:
            mark = yield fetchval("SELECT watermark FROM user_watermarks WHERE user_id = $1", user)
            rows = yield fetch(
                "SELECT handler, projected_watermark FROM projection_watermarks WHERE user_id = $1", user
            )
            return WatermarkState(user, mark or 0, {r["handler"]: r["projected_watermark"] for r in rows})

        return self._op(steps)

    def set_projected(self, user_id: str, handler: str, value: int) -> Op[int]:
        """Raise ``handler``'s projected watermark to ``value`` (never lowers it); returns it."""
        return self._op(
            fetchval(
                "INSERT INTO projection_watermarks (user_id, handler, projected_watermark, updated_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, handler) DO UPDATE SET"
                " projected_watermark = CASE WHEN excluded.projected_watermark"
                " > projection_watermarks.projected_watermark THEN excluded.projected_watermark"
                " ELSE projection_watermarks.projected_watermark END, updated_at = excluded.updated_at"
                " RETURNING projected_watermark",
                self._id("user_id", user_id),
                self._id("handler", handler),
                v.integer("value", value),
                self._d.ts(self._now()),
            )
        )


# --- sync --------------------------------------------------------------------------------

_ENTITY_COLS = "user_id, entity_type, entity_id, version, data, deleted, updated_at"
_ENTITY_UPSERT = (
    "INSERT INTO sync_entities (user_id, entity_type, entity_id, version, data, deleted, created_at,"
    " updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (user_id, entity_type, entity_id)"
    " DO UPDATE SET version = excluded.version, data = excluded.data, deleted = excluded.deleted,"
    " updated_at = excluded.updated_at"
)


class Entities(_Repo):
    """The server's copy of every synced entity, keyed by (user, entity_type, entity_id)."""

    __slots__ = ()

    def _entity(self, row: Row) -> SyncEntity:
        return SyncEntity(
            row["user_id"],
            row["entity_type"],
            row["entity_id"],
            row["version"],
            v.load_json(row["data"]),
            bool(row["deleted"]),
            self._d.ts_out(row["updated_at"]),
        )

    def _row(self, field: str, e: SyncEntity, now: Any) -> tuple[Any, ...]:
        if not isinstance(e, SyncEntity):
            raise InvalidData(field, "expected a SyncEntity")
        if type(e.deleted) is not bool:
            raise InvalidData(f"{field}.deleted", "expected a bool")
        return (
            self._id(f"{field}.user_id", e.user_id),
            self._name(f"{field}.entity_type", e.entity_type),
            self._id(f"{field}.entity_id", e.entity_id),
            v.integer(f"{field}.version", e.version),
            self._json(f"{field}.data", e.data),
            e.deleted,
            now,
        )

    def get(self, user_id: str, entity_type: str, entity_id: str) -> Op[SyncEntity | None]:
        return self._op(
            fetchrow(
                f"SELECT {_ENTITY_COLS} FROM sync_entities WHERE user_id = $1 AND entity_type = $2"
                " AND entity_id = $3",
                self._id("user_id", user_id),
                self._name("entity_type", entity_type),
                self._id("entity_id", entity_id),
            ),
            post=lambda row: None if row is None else self._entity(row),
        )

    def get_many(
        self, user_id: str, keys: Sequence[tuple[str, str]]
    ) -> Op[dict[tuple[str, str], SyncEntity]]:
        """The existing ones among (entity_type, entity_id) keys, in one statement."""
        user = self._id("user_id", user_id)
        v.batch("keys", keys, self._limits)
        pairs = list(
            dict.fromkeys(
                (self._name(f"keys[{i}][0]", k[0]), self._id(f"keys[{i}][1]", k[1]))
                for i, k in enumerate(keys)
            )
        )
        if not pairs:
            return self._op(Const({}))
        if self._d.name == "postgresql":
            types, ids = (list(c) for c in zip(*pairs, strict=True))
            cmd = fetch(
                f"SELECT {_ENTITY_COLS} FROM sync_entities WHERE user_id = $1"
                " AND (entity_type, entity_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))",
                user,
                types,
                ids,
            )
        else:
            cmd = fetch(
                f"SELECT {_ENTITY_COLS} FROM sync_entities WHERE user_id = $1 AND (entity_type, entity_id)"
                " IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each($2))",
                user,
                v.dump_json("keys", pairs, 2**62),
            )
        return self._op(
            cmd, post=lambda rows: {(r["entity_type"], r["entity_id"]): self._entity(r) for r in rows}
        )

    def put(self, entity: SyncEntity, *, expected_version: int | None = None) -> Op[SyncEntity]:
        """Store ``entity`` as given (its version included) and return the stored row.

        ``expected_version``: None writes unconditionally; 0 requires that the entity does
        not exist yet; n requires the stored version to be n. Otherwise ConflictError
        (NotFound if n > 0 and there is no such entity)."""
        row = self._row("entity", entity, self._d.ts(self._now()))
        if expected_version is None:
            return self._op(
                fetchrow(_ENTITY_UPSERT + f" RETURNING {_ENTITY_COLS}", *row), post=lambda r: self._entity(r)
            )
        expected = v.integer("expected_version", expected_version)

        def steps() -> Steps[SyncEntity]:
            if expected == 0:
                stored = yield fetchrow(
                    "INSERT INTO sync_entities (user_id, entity_type, entity_id, version, data, deleted,"
                    " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)"
                    f" ON CONFLICT (user_id, entity_type, entity_id) DO NOTHING RETURNING {_ENTITY_COLS}",
                    *row,
                )
            else:
                stored = yield fetchrow(
                    "UPDATE sync_entities SET version = $4, data = $5, deleted = $6, updated_at = $7"
                    " WHERE user_id = $1 AND entity_type = $2 AND entity_id = $3 AND version = $8"
                    f" RETURNING {_ENTITY_COLS}",
                    *row,
                    expected,
                )
            if stored is not None:
                return self._entity(stored)
            current = yield fetchval(
                "SELECT version FROM sync_entities WHERE user_id = $1 AND entity_type = $2 AND entity_id = $3",
                *row[:3],
            )
            if current is None:
                raise NotFound(f"no {row[1]} {row[2]!r}")
            raise ConflictError(f"{row[1]} {row[2]!r} is at version {current}, expected {expected}")

        return self._op(steps)

    def put_many(self, entities: Sequence[SyncEntity]) -> Op[int]:
        """Store every entity unconditionally (one batched statement); returns the count."""
        v.batch("entities", entities, self._limits)
        now = self._d.ts(self._now())
        rows = [self._row(f"entities[{i}]", e, now) for i, e in enumerate(entities)]
        return self._op(many(_ENTITY_UPSERT, rows) if rows else Const(None), post=lambda _: len(rows))

    def list(
        self,
        user_id: str,
        *,
        entity_type: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 500,
    ) -> Op[list[SyncEntity]]:
        """Entities ordered by (entity_type, entity_id); pass the last key as ``after``."""
        args: list[Any] = [self._id("user_id", user_id)]
        where = "user_id = $1"
        if entity_type is not None:
            args.append(self._name("entity_type", entity_type))
            where += f" AND entity_type = ${len(args)}"
        if after is not None:
            args += [self._name("after[0]", after[0]), self._id("after[1]", after[1])]
            where += f" AND (entity_type, entity_id) > (${len(args) - 1}, ${len(args)})"
        args.append(self._limit(limit))
        return self._op(
            fetch(
                f"SELECT {_ENTITY_COLS} FROM sync_entities WHERE {where}"
                f" ORDER BY entity_type, entity_id LIMIT ${len(args)}",
                *args,
            ),
            post=lambda rows: [self._entity(r) for r in rows],
        )


class SyncOps(_Repo):
    """Stored results of applied client operations, for exactly-once pushes."""

    __slots__ = ()

    def get_many(self, user_id: str, device_id: str, op_ids: Sequence[str]) -> Op[dict[str, Json]]:
        """The stored result of each already-applied op id (absent ids are missing)."""
        user, device = self._id("user_id", user_id), self._id("device_id", device_id)
        v.batch("op_ids", op_ids, self._limits)
        ids = list(dict.fromkeys(self._id(f"op_ids[{i}]", o) for i, o in enumerate(op_ids)))
        if not ids:
            return self._op(Const({}))
        if self._d.name == "postgresql":
            cmd = fetch(
                "SELECT client_op_id, result FROM sync_operations WHERE user_id = $1 AND device_id = $2"
                " AND client_op_id = ANY($3::text[])",
                user,
                device,
                ids,
            )
        else:
            cmd = fetch(
                "SELECT client_op_id, result FROM sync_operations WHERE user_id = $1 AND device_id = $2"
                " AND client_op_id IN (SELECT value FROM json_each($3))",
                user,
                device,
                v.dump_json("op_ids", ids, 2**62),
            )
        return self._op(cmd, post=lambda rows: {r["client_op_id"]: v.load_json(r["result"]) for r in rows})

    def record_many(self, user_id: str, device_id: str, results: Mapping[str, Json]) -> Op[int]:
        """Store op id → result; an id already stored keeps its first result. Returns the count given."""
        user, device = self._id("user_id", user_id), self._id("device_id", device_id)
        if not isinstance(results, Mapping):
            raise InvalidData("results", "expected a mapping of op id to result")
        now = self._d.ts(self._now())
        rows = [
            (user, device, self._id("op_id", op_id), self._json(f"results[{op_id!r}]", result), now)
            for op_id, result in results.items()
        ]
        v.batch("results", rows, self._limits)
        return self._op(
            many(
                "INSERT INTO sync_operations (user_id, device_id, client_op_id, result, created_at)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, device_id, client_op_id) DO NOTHING",
                rows,
            )
            if rows
            else Const(None),
            post=lambda _: len(rows),
        )


_CHANGE_COLS = "user_id, seq, entity_type, entity_id, op, version, data, deleted, device_id, changed_at"


class Changes(_Repo):
    """The per-user change log that pulls read; ``seq`` is gap-free and strictly increasing."""

    __slots__ = ()

    def append_many(self, user_id: str, changes: Sequence[ChangeIn]) -> Op[list[int]]:
        """Append in order; returns the assigned sequence numbers.

        The per-user counter row is updated first, so concurrent appenders for one user
        serialize on it and sequence order is commit order: a reader never sees seq n+1
        committed while n is still in flight."""
        user = self._id("user_id", user_id)
        v.batch("changes", changes, self._limits)
        now = self._d.ts(self._now())
        body = []
        for i, c in enumerate(changes):
            if not isinstance(c, ChangeIn):
                raise InvalidData(f"changes[{i}]", "expected a ChangeIn")
            if c.op not in ("create", "update", "delete"):
                raise InvalidData(f"changes[{i}].op", "expected create, update or delete")
            if type(c.deleted) is not bool:
                raise InvalidData(f"changes[{i}].deleted", "expected a bool")
            body.append(
                (
                    self._name(f"changes[{i}].entity_type", c.entity_type),
                    self._id(f"changes[{i}].entity_id", c.entity_id),
                    c.op,
                    v.integer(f"changes[{i}].version", c.version),
                    self._json(f"changes[{i}].data", c.data),
                    c.deleted,
                    v.opt_text(f"changes[{i}].device_id", c.device_id, self._limits.max_id_chars),
                )
            )
        if not body:
            return self._op(Const([]))

        def steps() -> Steps[list[int]]:
            last = yield fetchval(
                "INSERT INTO sync_sequences (user_id, last_seq) VALUES ($1, $2) ON CONFLICT (user_id)"
                " DO UPDATE SET last_seq = sync_sequences.last_seq + excluded.last_seq RETURNING last_seq",
                user,
                len(body),
            )
            first = last - len(body) + 1
            yield many(
                f"INSERT INTO sync_changes ({_CHANGE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                [(user, first + i, *row, now) for i, row in enumerate(body)],
            )
            return list(range(first, last + 1))

        return self._op(steps)

    def read(self, user_id: str, *, after_seq: int = 0, limit: int = 500) -> Op[list[Change]]:
        """Changes with seq > ``after_seq``, in seq order."""
        ts = self._d.ts_out
        return self._op(
            fetch(
                f"SELECT {_CHANGE_COLS} FROM sync_changes WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                self._id("user_id", user_id),
                v.integer("after_seq", after_seq),
                self._limit(limit),
            ),
            post=lambda rows: [
                Change(
                    r["seq"],
                    r["user_id"],
                    r["entity_type"],
                    r["entity_id"],
                    r["op"],
                    r["version"],
                    v.load_json(r["data"]),
                    bool(r["deleted"]),
                    r["device_id"],
                    ts(r["changed_at"]),
                )
                for r in rows
            ],
        )

    def latest_seq(self, user_id: str) -> Op[int]:
        """The highest seq appended for the user (0 if none)."""
        return self._op(
            fetchval("SELECT last_seq FROM sync_sequences WHERE user_id = $1", self._id("user_id", user_id)),
            post=lambda value: value or 0,
        )


class Devices(_Repo):
    """Per-device sync state: the change-log cursor the device has acknowledged."""

    __slots__ = ()

    def _state(self, row: Row) -> DeviceState:
        return DeviceState(
            row["user_id"], row["device_id"], row["acked_seq"], self._d.ts_out(row["updated_at"])
        )

    def get(self, user_id: str, device_id: str) -> Op[DeviceState | None]:
        return self._op(
            fetchrow(
                "SELECT user_id, device_id, acked_seq, updated_at FROM sync_devices"
                " WHERE user_id = $1 AND device_id = $2",
                self._id("user_id", user_id),
                self._id("device_id", device_id),
            ),
            post=lambda row: None if row is None else self._state(row),
        )

    def acknowledge(self, user_id: str, device_id: str, seq: int) -> Op[DeviceState]:
        """Record that the device has everything up to ``seq``; the cursor never moves back."""
        now = self._d.ts(self._now())
        return self._op(
            fetchrow(
                "INSERT INTO sync_devices (user_id, device_id, acked_seq, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $4) ON CONFLICT (user_id, device_id) DO UPDATE SET"
                " acked_seq = CASE WHEN excluded.acked_seq > sync_devices.acked_seq"
                " THEN excluded.acked_seq ELSE sync_devices.acked_seq END, updated_at = excluded.updated_at"
                " RETURNING user_id, device_id, acked_seq, updated_at",
                self._id("user_id", user_id),
                self._id("device_id", device_id),
                v.integer("seq", seq),
                now,
            ),
            post=self._state,
        )


_CONFLICT_COLS = (
    "id, user_id, device_id, entity_type, entity_id, server_version, base_version, server_data,"
    " client_data, status, resolution, resolved_data, created_at, resolved_at"
)


class Conflicts(_Repo):
    """Sync conflicts kept for a person to resolve (MANUAL policy)."""

    __slots__ = ()

    def _conflict(self, row: Row) -> Conflict:
        resolved = row["resolved_data"]
        return Conflict(
            row["id"],
            row["user_id"],
            row["device_id"],
            row["entity_type"],
            row["entity_id"],
            row["server_version"],
            row["base_version"],
            v.load_json(row["server_data"]),
            v.load_json(row["client_data"]),
            row["status"],
            row["resolution"],
            None if resolved is None else v.load_json(resolved),
            self._d.ts_out(row["created_at"]),
            self._d.opt_ts_out(row["resolved_at"]),
        )

    def open(
        self,
        user_id: str,
        *,
        entity_type: str,
        entity_id: str,
        server_version: int,
        server_data: Json,
        client_data: Json,
        base_version: int | None = None,
        device_id: str | None = None,
    ) -> Op[Conflict]:
        """Record an open conflict (a fresh id is generated)."""
        return self._op(
            fetchrow(
                f"INSERT INTO sync_conflicts ({_CONFLICT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
                f" 'open', NULL, NULL, $10, NULL) RETURNING {_CONFLICT_COLS}",
                uuid.uuid4().hex,
                self._id("user_id", user_id),
                v.opt_text("device_id", device_id, self._limits.max_id_chars),
                self._name("entity_type", entity_type),
                self._id("entity_id", entity_id),
                v.integer("server_version", server_version),
                None if base_version is None else v.integer("base_version", base_version),
                self._json("server_data", server_data),
                self._json("client_data", client_data),
                self._d.ts(self._now()),
            ),
            post=self._conflict,
        )

    def get(self, user_id: str, conflict_id: str) -> Op[Conflict | None]:
        return self._op(
            fetchrow(
                f"SELECT {_CONFLICT_COLS} FROM sync_conflicts WHERE user_id = $1 AND id = $2",
                self._id("user_id", user_id),
                self._id("conflict_id", conflict_id),
            ),
            post=lambda row: None if row is None else self._conflict(row),
        )

    def list(self, user_id: str, *, status: str | None = "open", limit: int = 100) -> Op[list[Conflict]]:
        """The user's conflicts (only ``status`` ones unless None), oldest first."""
        args: list[Any] = [self._id("user_id", user_id), self._limit(limit)]
        where = "user_id = $1"
        if status is not None:
            if status not in ("open", "resolved"):
                raise InvalidData("status", "expected open, resolved or None")
            args.append(status)
            where += " AND status = $3"
        return self._op(
            fetch(
                f"SELECT {_CONFLICT_COLS} FROM sync_conflicts WHERE {where} ORDER BY created_at, id LIMIT $2",
                *args,
            ),
            post=lambda rows: [self._conflict(r) for r in rows],
        )

    def resolve(self, user_id: str, conflict_id: str, *, resolution: str, data: Json = None) -> Op[Conflict]:
        """open → resolved with the chosen resolution and resulting data. NotFound if there is
        no such conflict for the user; ConflictError if it was already resolved."""
        args = (self._id("user_id", user_id), self._id("conflict_id", conflict_id))
        choice = self._name("resolution", resolution)
        body = None if data is None else self._json("data", data)
        now = self._d.ts(self._now())

        def steps() -> Steps[Conflict]:
            row = yield fetchrow(
                "UPDATE sync_conflicts SET status = 'resolved', resolution = $3, resolved_data = $4,"
                f" resolved_at = $5 WHERE user_id = $1 AND id = $2 AND status = 'open' RETURNING {_CONFLICT_COLS}",
                *args,
                choice,
                body,
                now,
            )
            if row is not None:
                return self._conflict(row)
            status = yield fetchval("SELECT status FROM sync_conflicts WHERE user_id = $1 AND id = $2", *args)
            if status is None:
                raise NotFound(f"no conflict {args[1]!r}")
            raise ConflictError(f"conflict {args[1]!r} is already {status}")

        return self._op(steps)


# --- dead letters ------------------------------------------------------------------------


class DeadLetters(_Repo):
    """Generic failed-work records (anything that gave up: a message, a job, a projection)."""

    __slots__ = ()

    def record(
        self, source: str, payload: Json, error: str, *, user_id: str | None = None, key: str | None = None
    ) -> Op[int]:
        """Store one record; returns its id."""
        return self._op(
            fetchval(
                "INSERT INTO dead_letters (source, user_id, key, payload, error, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                self._name("source", source),
                v.opt_text("user_id", user_id, self._limits.max_id_chars),
                v.opt_text("key", key, self._limits.max_id_chars),
                self._json("payload", payload),
                self._error(error),
                self._d.ts(self._now()),
            )
        )

    def list(self, *, source: str | None = None, after_id: int = 0, limit: int = 100) -> Op[list[DeadLetter]]:
        """Records by id (keyset: pass the last id as ``after_id``), optionally of one source."""
        args: list[Any] = [v.integer("after_id", after_id), self._limit(limit)]
        where = "id > $1"
        if source is not None:
            args.append(self._name("source", source))
            where += " AND source = $3"
        ts = self._d.ts_out
        return self._op(
            fetch(
                "SELECT id, source, user_id, key, payload, error, created_at FROM dead_letters"
                f" WHERE {where} ORDER BY id LIMIT $2",
                *args,
            ),
            post=lambda rows: [
                DeadLetter(
                    r["id"],
                    r["source"],
                    r["user_id"],
                    r["key"],
                    v.load_json(r["payload"]),
                    r["error"],
                    ts(r["created_at"]),
                )
                for r in rows
            ],
        )

    def delete(self, record_id: int) -> Op[bool]:
        return self._op(
            execute("DELETE FROM dead_letters WHERE id = $1", v.integer("record_id", record_id, 1)), post=bool
        )


# --- the transaction ---------------------------------------------------------------------


class Transaction(TransactionBase, abc.ABC):
    """A unit of work with its repositories (each created on first use)."""

    dialect: Dialect

    @cached_property
    def users(self) -> Users:
        return Users(self)

    @cached_property
    def samples(self) -> Samples:
        return Samples(self)

    @cached_property
    def ingest(self) -> Ingest:
        return Ingest(self)

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self)

    @cached_property
    def checkpoints(self) -> Checkpoints:
        return Checkpoints(self)

    @cached_property
    def rollups(self) -> Rollups:
        return Rollups(self)

    @cached_property
    def sleep(self) -> Sleep:
        return Sleep(self)

    @cached_property
    def watermarks(self) -> Watermarks:
        return Watermarks(self)

    @cached_property
    def entities(self) -> Entities:
        return Entities(self)

    @cached_property
    def sync_ops(self) -> SyncOps:
        return SyncOps(self)

    @cached_property
    def changes(self) -> Changes:
        return Changes(self)

    @cached_property
    def devices(self) -> Devices:
        return Devices(self)

    @cached_property
    def conflicts(self) -> Conflicts:
        return Conflicts(self)

    @cached_property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self)
