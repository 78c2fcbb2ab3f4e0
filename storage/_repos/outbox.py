"""The transactional outbox (events leased to workers, retried with backoff, dead-lettered)
and the generic dead-letter records of anything else that gave up."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from .. import _validate as v
from .._errors import ConflictError
from .._model import OUTBOX_STATUSES, DeadLetter, Enqueued, Json, OutboxEvent, OutboxStats
from .._sql import Steps, execute, fetch, fetchrow, fetchval
from .._time import aware
from .._tx import Const, Op
from .base import Repo, Row

__all__ = ["DeadLetters", "Outbox"]

_OUTBOX_COLS = (
    "id, user_id, type, payload, event_hash, dedupe_key, status, attempts, next_attempt_at,"
    " lease_owner, lease_expires_at, last_error, created_at, updated_at, correlation_id"
)
# A bare ON CONFLICT covers both dedupe keys: the unique dedupe_key, and the partial unique index
# on event_hash over unfinished (pending, processing) events.
_INSERT = (
    "INSERT INTO outbox_events (user_id, type, payload, event_hash, dedupe_key, correlation_id, status,"
    " attempts, next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8, $8)"
    " ON CONFLICT DO NOTHING RETURNING id"
)
# NOTIFY inside the transaction: PostgreSQL delivers it on COMMIT, never before.
_INSERT_NOTIFY = f"WITH ins AS ({_INSERT}) SELECT id, pg_notify($9, id::text) FROM ins"
# Which event the insert collided with: the dedupe key wins over the content hash.
_EXISTING_ID = (
    "SELECT coalesce((SELECT id FROM outbox_events WHERE dedupe_key = $1),"
    " (SELECT id FROM outbox_events WHERE event_hash = $2 AND status IN ('pending', 'processing')))"
)
# The claim's two statements take the dialect's row-lock clause as {skip_locked}.
# Expired leases first: their holder crashed or stalled. Back to pending (due at once), or
# dead if that was the last attempt. SKIP LOCKED: a lease another claimer is recovering right
# now is its business.
_EXPIRE_LEASES = (
    "WITH expired AS (SELECT id FROM outbox_events WHERE status = 'processing'"
    " AND lease_expires_at <= $1{skip_locked})"
    " UPDATE outbox_events SET"
    " status = CASE WHEN attempts >= $2 THEN 'dead' ELSE 'pending' END,"
    " last_error = CASE WHEN attempts >= $2 THEN $3 ELSE last_error END,"
    " lease_owner = NULL, lease_expires_at = NULL, updated_at = $1"
    " WHERE id IN (SELECT id FROM expired)"
)
# Oldest due first, straight off the partial index on (next_attempt_at, id).
_LEASE_DUE = (
    "WITH due AS (SELECT id FROM outbox_events WHERE status = 'pending' AND next_attempt_at <= $1"
    " ORDER BY next_attempt_at, id LIMIT $4{skip_locked})"
    " UPDATE outbox_events SET status = 'processing', lease_owner = $2,"
    " lease_expires_at = $3, attempts = attempts + 1, updated_at = $1"
    f" WHERE id IN (SELECT id FROM due) RETURNING {_OUTBOX_COLS}"
)
_COMPLETED = (
    "status = 'completed', lease_owner = NULL, lease_expires_at = NULL, last_error = NULL"
)
# take(): due events completed by the statement that selects them. The caller fans them out in the same
# transaction, so a rollback leaves them pending: nothing is ever half dispatched, and no lease is needed.
_TAKE_DUE = (
    "WITH due AS (SELECT id FROM outbox_events WHERE status = 'pending' AND next_attempt_at <= $1"
    " ORDER BY next_attempt_at, id LIMIT $2{skip_locked})"
    f" UPDATE outbox_events SET {_COMPLETED}, attempts = attempts + 1, updated_at = $1"
    f" WHERE id IN (SELECT id FROM due) RETURNING {_OUTBOX_COLS}"
)
_COMPLETE = (
    f"UPDATE outbox_events SET {_COMPLETED}, updated_at = $3"
    " WHERE id = $1 AND status = 'processing' AND lease_owner = $2"
)
# A set of ids is one parameter: a bigint[] on PostgreSQL (= ANY: an index scan whatever the
# planner's statistics say), a JSON array on SQLite.
_IDS = {
    "postgresql": "id = ANY($1::bigint[])",
    "sqlite": "id IN (SELECT value FROM json_each($1))",
}
_COMPLETE_MANY = {
    d: f"UPDATE outbox_events SET {_COMPLETED}, updated_at = $3"
    f" WHERE {ids} AND status = 'processing' AND lease_owner = $2"
    for d, ids in _IDS.items()
}
# A heartbeat: the leases ``owner`` still holds on these ids run ``lease`` seconds from now.
_RENEW_MANY = {
    d: f"UPDATE outbox_events SET lease_expires_at = $3 WHERE {ids} AND status = 'processing' AND lease_owner = $2"
    for d, ids in _IDS.items()
}
_GET_MANY = {d: f"SELECT {_OUTBOX_COLS} FROM outbox_events WHERE {ids} ORDER BY id" for d, ids in _IDS.items()}
_HELD_ATTEMPTS = (
    "SELECT attempts FROM outbox_events WHERE id = $1 AND status = 'processing' AND lease_owner = $2"
)
_RESCHEDULE = (
    "UPDATE outbox_events SET status = $2, next_attempt_at = $3, last_error = $4,"
    " lease_owner = NULL, lease_expires_at = NULL, updated_at = $5 WHERE id = $1"
)
_RELEASE = (
    "UPDATE outbox_events SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL,"
    " attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated_at = $2"
    " WHERE status = 'processing' AND lease_owner = $1"
)
_GET = f"SELECT {_OUTBOX_COLS} FROM outbox_events WHERE id = $1"
_LIST_DEAD = f"SELECT {_OUTBOX_COLS} FROM outbox_events WHERE status = 'dead' AND id > $1 ORDER BY id LIMIT $2"
# Back to pending unless the same content is already pending again (the unique hash index would refuse it).
_REPLAY = (
    "UPDATE outbox_events SET status = 'pending', attempts = 0, next_attempt_at = $2,"
    " lease_owner = NULL, lease_expires_at = NULL, updated_at = $2 WHERE id = $1 AND status = 'dead'"
    " AND NOT EXISTS (SELECT 1 FROM outbox_events AS o WHERE o.event_hash = outbox_events.event_hash"
    " AND o.status IN ('pending', 'processing'))"
)
_COUNTS = "SELECT status, count(*) AS n FROM outbox_events GROUP BY status"
_OLDEST_PENDING = "SELECT min(created_at) FROM outbox_events WHERE status = 'pending'"
_PURGE_COMPLETED = (
    "DELETE FROM outbox_events WHERE id IN (SELECT id FROM outbox_events"
    " WHERE status = 'completed' AND updated_at < $1 ORDER BY updated_at LIMIT $2)"
)
_PURGE_COMPLETED_CHECKPOINTS = (
    "DELETE FROM projection_checkpoints WHERE (event_id, handler) IN (SELECT event_id, handler"
    " FROM projection_checkpoints WHERE status = 'completed' AND updated_at < $1 ORDER BY updated_at LIMIT $2)"
)

_RECORD_DEAD_LETTER = (
    "INSERT INTO dead_letters (source, user_id, key, payload, error, created_at)"
    " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id"
)
# list() appends "AND source = $3" when filtering by source, then " ORDER BY id LIMIT $2".
_LIST_DEAD_LETTERS = "SELECT id, source, user_id, key, payload, error, created_at FROM dead_letters WHERE id > $1"
_DELETE_DEAD_LETTER = "DELETE FROM dead_letters WHERE id = $1"


class Outbox(Repo):
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
            row["correlation_id"],
        )

    def _ids(self, ids: Sequence[int]) -> Any:
        """A set of event ids as the one parameter the dialect's ``_IDS`` reads."""
        v.batch("ids", ids, self._limits)
        checked = [v.integer(f"ids[{i}]", x, 1) for i, x in enumerate(ids)]
        return checked if self._d.name == "postgresql" else json.dumps(checked)

    def enqueue(
        self,
        user_id: str,
        type: str,
        payload: Json,
        *,
        dedupe_key: str | None = None,
        available_at: datetime | None = None,
        correlation_id: str | None = None,
    ) -> Op[Enqueued]:
        """Add an event (status 'pending'). Nothing is added when an event with the same
        ``dedupe_key`` exists, or one with the same content (``event_hash``) is still pending or
        processing: that one's id comes back with ``created=False``. Subscribers of
        ``store.outbox_notifications()`` hear about a new event once the transaction commits."""
        user = self._id("user_id", user_id)
        kind = self._name("type", type)
        body = self._json("payload", payload)
        now_dt = self._now()
        digest = v.event_hash(user, kind, payload)
        key = v.opt_text("dedupe_key", dedupe_key, self._limits.max_id_chars)
        args = (
            user,
            kind,
            body,
            digest,
            key,
            v.opt_text("correlation_id", correlation_id, self._limits.max_id_chars),
            self._d.ts(aware("available_at", available_at) if available_at is not None else now_dt),
            self._d.ts(now_dt),
        )
        channel = self._tx.notify_channel

        def steps() -> Steps[Enqueued]:
            # Twice at most: the event we collided with may finish (completed: no longer a
            # duplicate) between our insert and the look-up, and then the insert goes through.
            for _ in range(2):
                if channel is not None:
                    new_id = yield fetchval(_INSERT_NOTIFY, *args, channel)
                else:
                    new_id = yield fetchval(_INSERT, *args)
                if new_id is not None:
                    return Enqueued(new_id, True)
                existing = yield fetchval(_EXISTING_ID, key, digest)
                if existing is not None:
                    return Enqueued(existing, False)
            raise ConflictError("outbox event: the duplicate it collided with kept changing")

        def notify(result: Enqueued) -> None:
            if result.created:
                self._tx._notify_outbox(result.id)

        return self._op(steps, on_commit=notify)

    def claim(
        self, owner: str, *, limit: int = 100, lease_seconds: float | None = None, expire: bool = True
    ) -> Op[list[OutboxEvent]]:
        """Lease up to ``limit`` due events to ``owner``, oldest due first. Each claim counts
        as an attempt. With ``expire``, events whose lease expired are due again first (or 'dead'
        when that was their last attempt); a caller that claims often may expire now and then
        (a statement less a claim), which adds that interval to a crashed holder's recovery.

        PostgreSQL skips rows other claimers hold (SKIP LOCKED); SQLite has one writer."""
        policy = self._tx.config.outbox
        lease = policy.lease_seconds if lease_seconds is None else v.seconds("lease_seconds", lease_seconds)
        now_dt = self._now()
        now = self._d.ts(now_dt)
        expires = self._d.ts(now_dt + timedelta(seconds=lease))
        who = self._id("owner", owner)
        size = self._limit(limit)
        skip_locked = self._d.skip_locked

        lease_due = fetch(_LEASE_DUE.format(skip_locked=skip_locked), now, who, expires, size)

        def events(rows: list[Row]) -> list[OutboxEvent]:
            return sorted((self._event(r) for r in rows), key=lambda e: (e.next_attempt_at, e.id))

        if not expire:  # one statement: a claim alone in its unit of work needs no BEGIN/COMMIT
            return self._op(lease_due, post=events)

        def steps() -> Steps[list[OutboxEvent]]:
            yield execute(
                _EXPIRE_LEASES.format(skip_locked=skip_locked),
                now,
                policy.max_attempts,
                "lease expired on the last attempt",
            )
            return events((yield lease_due))

        return self._op(steps)

    def take(self, *, limit: int = 500) -> Op[list[OutboxEvent]]:
        """Up to ``limit`` due events, oldest due first, marked completed by this one statement: for a
        caller that finishes with them inside the same transaction (the dispatcher creates their
        checkpoints there), so a rollback puts them back, unattempted in effect. Events an old-style
        lease left expired are recovered first, as ``claim`` does. PostgreSQL: SKIP LOCKED."""
        policy = self._tx.config.outbox
        now = self._d.ts(self._now())
        size = self._limit(limit)
        skip_locked = self._d.skip_locked

        def steps() -> Steps[list[OutboxEvent]]:
            yield execute(_EXPIRE_LEASES.format(skip_locked=skip_locked), now, policy.max_attempts,
                          "lease expired on the last attempt")
            rows = yield fetch(_TAKE_DUE.format(skip_locked=skip_locked), now, size)
            return sorted((self._event(r) for r in rows), key=lambda e: (e.next_attempt_at, e.id))

        return self._op(steps)

    def complete(self, event_id: int, owner: str) -> Op[bool]:
        """processing → completed; False if ``owner`` no longer holds the event."""
        return self._op(
            execute(
                _COMPLETE,
                v.integer("event_id", event_id, 1),
                self._id("owner", owner),
                self._d.ts(self._now()),
            ),
            post=bool,
        )

    def complete_many(self, owner: str, ids: Sequence[int]) -> Op[int]:
        """processing → completed for those of ``ids`` that ``owner`` holds; returns how many."""
        if not ids:
            return self._op(Const(0))
        return self._op(
            execute(
                _COMPLETE_MANY[self._d.name], self._ids(ids), self._id("owner", owner), self._d.ts(self._now())
            )
        )

    def renew_many(self, owner: str, ids: Sequence[int], *, lease_seconds: float | None = None) -> Op[int]:
        """Extend ``owner``'s leases on ``ids`` to ``lease_seconds`` from now (a heartbeat); returns how many
        it still held (a lease that expired and was claimed by another is not taken back)."""
        if not ids:
            return self._op(Const(0))
        policy = self._tx.config.outbox
        lease = policy.lease_seconds if lease_seconds is None else v.seconds("lease_seconds", lease_seconds)
        expires = self._d.ts(self._now() + timedelta(seconds=lease))
        return self._op(execute(_RENEW_MANY[self._d.name], self._ids(ids), self._id("owner", owner), expires))

    def fail(self, event_id: int, owner: str, error: str, *, retryable: bool = True) -> Op[str | None]:
        """processing → pending again after a jittered exponential backoff, or → dead once
        the attempts are used up (or at once if not ``retryable``). Returns the new status,
        None if ``owner`` no longer holds the event."""
        ident = v.integer("event_id", event_id, 1)
        who = self._id("owner", owner)
        message = self._error(error)
        plan = self._retry_plan(retryable)
        # PostgreSQL: hold the row until the reschedule, so a concurrent fail cannot interleave.
        held = _HELD_ATTEMPTS + " FOR UPDATE" if self._d.name == "postgresql" else _HELD_ATTEMPTS

        def steps() -> Steps[str | None]:
            attempts = yield fetchval(held, ident, who)
            if attempts is None:
                return None
            dead, due, now = plan(attempts)
            status = "dead" if dead else "pending"
            yield execute(_RESCHEDULE, ident, status, due, message, now)
            return status

        return self._op(steps)

    def release(self, owner: str) -> Op[int]:
        """Hand back every event ``owner`` holds (graceful shutdown); the attempt is not counted."""
        return self._op(execute(_RELEASE, self._id("owner", owner), self._d.ts(self._now())))

    def get(self, event_id: int) -> Op[OutboxEvent | None]:
        return self._op(
            fetchrow(_GET, v.integer("event_id", event_id)),
            post=lambda row: None if row is None else self._event(row),
        )

    def get_many(self, ids: Sequence[int]) -> Op[list[OutboxEvent]]:
        """The events of ``ids`` that exist, in id order."""
        if not ids:
            return self._op(Const([]))
        return self._op(
            fetch(_GET_MANY[self._d.name], self._ids(ids)), post=lambda rows: [self._event(r) for r in rows]
        )

    def list_dead(self, *, after_id: int = 0, limit: int = 100) -> Op[list[OutboxEvent]]:
        """Dead-lettered events by id (keyset: pass the last id as ``after_id``)."""
        return self._op(
            fetch(_LIST_DEAD, v.integer("after_id", after_id), self._limit(limit)),
            post=lambda rows: [self._event(r) for r in rows],
        )

    def replay(self, event_id: int) -> Op[bool]:
        """dead → pending with a fresh attempt budget; False if the event is not dead (or the same
        content is already pending again)."""
        now = self._d.ts(self._now())
        return self._op(execute(_REPLAY, v.integer("event_id", event_id, 1), now), post=bool)

    def stats(self) -> Op[OutboxStats]:
        """Events per status and the age of the oldest pending one, for metrics and health."""
        now_dt = self._now()

        def steps() -> Steps[OutboxStats]:
            rows = yield fetch(_COUNTS)
            oldest = yield fetchval(_OLDEST_PENDING)
            counts = dict.fromkeys(OUTBOX_STATUSES, 0)
            counts.update({r["status"]: int(r["n"]) for r in rows})
            age = None if oldest is None else max(0.0, (now_dt - self._d.ts_out(oldest)).total_seconds())
            return OutboxStats(counts["pending"], counts["processing"], counts["completed"], counts["dead"], age)

        return self._op(steps)

    def purge_completed(self, retention_seconds: float, *, limit: int = 10_000) -> Op[int]:
        """Delete completed events, and completed projection checkpoints, finished longer ago than
        ``retention_seconds``: at most ``limit`` of each. Dead ones are kept for operators.
        Returns how many outbox events went (``limit`` of them: call again)."""
        cutoff = self._d.ts(self._now() - timedelta(seconds=v.seconds("retention_seconds", retention_seconds)))
        size = self._limit(limit)

        def steps() -> Steps[int]:
            deleted = yield execute(_PURGE_COMPLETED, cutoff, size)
            yield execute(_PURGE_COMPLETED_CHECKPOINTS, cutoff, size)
            return int(deleted)

        return self._op(steps)


class DeadLetters(Repo):
    """Generic failed-work records (anything that gave up: a message, a job, a projection)."""

    __slots__ = ()

    def record(
        self, source: str, payload: Json, error: str, *, user_id: str | None = None, key: str | None = None
    ) -> Op[int]:
        """Store one record; returns its id."""
        return self._op(
            fetchval(
                _RECORD_DEAD_LETTER,
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
        sql = _LIST_DEAD_LETTERS
        if source is not None:
            args.append(self._name("source", source))
            sql += " AND source = $3"
        ts = self._d.ts_out
        return self._op(
            fetch(sql + " ORDER BY id LIMIT $2", *args),
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
        return self._op(execute(_DELETE_DEAD_LETTER, v.integer("record_id", record_id, 1)), post=bool)
