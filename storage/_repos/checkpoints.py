"""Projection checkpoints: one per (outbox event, handler), leased to the worker that runs it.

    pending ──claim──▶ processing ──complete_many──▶ completed
       ▲                 │  │ fail (retryable, attempts left)
       │  release        │  └──────────────▶ failed ──(next_attempt_at passes)──▶ claimed again
       └─────────────────┤  fail (last attempt / not retryable), lease expired on the last attempt
                         └──────────────▶ dead ──replay──▶ pending;  discard: deleted

A checkpoint with ``depends_on`` is claimable only once the same event's checkpoint of that handler
completed. An expired lease (a crashed or stalled holder) makes a processing checkpoint due again.
Dead checkpoints and dead outbox events together are the read side's dead letters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from .. import _validate as v
from .._errors import InvalidData
from .._model import Checkpoint, CheckpointIn, CheckpointKey, DeadLetterItem, HandlerLag, ProjectionState
from .._sql import Steps, execute, fetch, fetchrow, fetchval
from .._time import aware
from .._tx import Const, Op
from .base import Repo, Row

__all__ = ["Checkpoints"]

_COLS = (
    "event_id, handler, user_id, event_type, depends_on, wm_from, wm_to, correlation_id, status, attempts,"
    " next_attempt_at, lease_owner, lease_expires_at, last_error, created_at, updated_at"
)
_LEASE_EXPIRED = "lease expired on the last attempt"

# A set of keys is two parameters, event ids and handlers side by side: arrays on PostgreSQL,
# JSON arrays on SQLite. Statements take it as {keys}, with the parameters' numbers filled in:
# the event ids alone first, so the primary key's leading column finds the rows whatever the
# planner guesses about the pairs (PostgreSQL without fresh statistics scanned the table per key).
_KEYS = {
    "postgresql": "event_id = ANY(${a}::bigint[])"
    " AND (event_id, handler) IN (SELECT * FROM unnest(${a}::bigint[], ${b}::text[]))",
    "sqlite": "event_id IN (SELECT value FROM json_each(${a})) AND (event_id, handler) IN"
    " (SELECT e.value, h.value FROM json_each(${a}) AS e JOIN json_each(${b}) AS h ON h.key = e.key)",
}


# An UPDATE of a key set on PostgreSQL joins the pairs (UPDATE ... FROM unnest): the planner walks the primary key
# once per pair, where "(event_id, handler) IN (SELECT ...)" became a nested semi join, quadratic in the batch
# (500 keys: 25-33 ms against 12 ms); "event_id = ANY" keeps it on the primary key when the table has no
# statistics yet (a fresh table's planner guesses a seq scan for the join).
_PG_KEYED_UPDATE = (
    " FROM unnest(${a}::bigint[], ${b}::text[]) AS k(e, h)"
    " WHERE projection_checkpoints.event_id = ANY(${a}::bigint[])"
    " AND projection_checkpoints.event_id = k.e AND projection_checkpoints.handler = k.h AND "
)


# A held key set on PostgreSQL, when every key names one handler (a worker's batch: the usual case): the
# primary key serves "event_id = ANY(...) AND handler = ..." as one index scan. No status test: a
# lease_owner is set only while a checkpoint is processing (every other transition clears it), and
# "status = 'processing'" would let the planner's generic plan walk the partial lease index per key instead
# (a queue table's statistics are always stale): 45 ms for 500 keys against 12 ms.
_PG_ONE_HANDLER = " WHERE event_id = ANY(${a}::bigint[]) AND handler = ${b} AND lease_owner = $1"


def _per_dialect(template: str, a: int, b: int) -> dict[str, str]:
    out = {d: template.replace("{keys}", keys.format(a=a, b=b)) for d, keys in _KEYS.items()}
    if template.startswith("UPDATE ") and template.endswith("WHERE " + _HELD):
        head = template[: -len("WHERE " + _HELD)].rstrip()
        held = _HELD.replace(" AND {keys}", "")
        out["postgresql"] = head + _PG_KEYED_UPDATE.format(a=a, b=b) + held
        out["postgresql_one"] = head + _PG_ONE_HANDLER.format(a=a, b=b)
    return out


_INSERT_HEAD = (
    "INSERT INTO projection_checkpoints (event_id, handler, user_id, event_type, depends_on, wm_from, wm_to,"
    " correlation_id, status, attempts, next_attempt_at, lease_owner, lease_expires_at, created_at, updated_at)"
)
# PostgreSQL: the whole batch is eight array parameters (one statement, no per-row parameters).
# A redelivered event must not reset progress: existing checkpoints are left as they are.
_INSERT_PG = (
    f"{_INSERT_HEAD} SELECT r.*, $9::text, $10::integer, $11::timestamptz, $12::text, $13::timestamptz,"
    " $11::timestamptz, $11::timestamptz"
    " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[],"
    f" $8::text[]) AS r ON CONFLICT DO NOTHING RETURNING {_COLS}"
)
_SQLITE_CHUNK = 1000  # rows per multi-row INSERT: 8 parameters each, far below SQLite's 32,766


@lru_cache(maxsize=64)
def _insert_sqlite(rows: int) -> str:
    """A multi-row INSERT of ``rows`` rows: $1-$5 are shared (status, attempts, due, owner, expiry)."""
    values = ", ".join(
        "(" + ", ".join(f"${6 + 8 * i + j}" for j in range(8)) + ", $1, $2, $3, $4, $5, $3, $3)"
        for i in range(rows)
    )
    return f"{_INSERT_HEAD} VALUES {values} ON CONFLICT DO NOTHING RETURNING {_COLS}"


# The claim's statements take the dialect's row-lock clause as {skip_locked}.
# An expired lease on the last attempt: dead, not retried (the handler may be what kills its holder).
_EXPIRE_LAST = (
    "UPDATE projection_checkpoints SET status = 'dead', last_error = $4, lease_owner = NULL,"
    " lease_expires_at = NULL, updated_at = $2 WHERE (event_id, handler) IN (SELECT event_id, handler"
    " FROM projection_checkpoints WHERE handler = $1 AND status = 'processing' AND lease_expires_at <= $2"
    " AND attempts >= $3{skip_locked})"
)
# Due: waiting and due, or a lease that expired; and its dependency (same event) completed.
_CLAIM = (
    "WITH due AS (SELECT c.event_id, c.handler FROM projection_checkpoints AS c WHERE c.handler = $1"
    " AND ((c.status IN ('pending', 'failed') AND c.next_attempt_at <= $2)"
    " OR (c.status = 'processing' AND c.lease_expires_at <= $2 AND c.attempts < $6))"
    " AND (c.depends_on IS NULL OR EXISTS (SELECT 1 FROM projection_checkpoints AS d"
    " WHERE d.event_id = c.event_id AND d.handler = c.depends_on AND d.status = 'completed'))"
    " ORDER BY c.next_attempt_at, c.event_id LIMIT $5{skip_locked})"
    " UPDATE projection_checkpoints SET status = 'processing', attempts = attempts + 1, lease_owner = $3,"
    " lease_expires_at = $4, updated_at = $2"
    f" WHERE (event_id, handler) IN (SELECT event_id, handler FROM due) RETURNING {_COLS}"
)
_HELD = "status = 'processing' AND lease_owner = $1 AND {keys}"
_RENEW = _per_dialect(f"UPDATE projection_checkpoints SET lease_expires_at = $2, updated_at = $3 WHERE {_HELD}", 4, 5)
_COMPLETE_MANY = _per_dialect(
    "UPDATE projection_checkpoints SET status = 'completed', lease_owner = NULL, lease_expires_at = NULL,"
    f" last_error = NULL, updated_at = $2 WHERE {_HELD}",
    3,
    4,
)
# The attempt handed back is not counted.
_RELEASE = _per_dialect(
    "UPDATE projection_checkpoints SET status = 'pending', next_attempt_at = $2, lease_owner = NULL,"
    " lease_expires_at = NULL, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,"
    f" updated_at = $3 WHERE {_HELD}",
    4,
    5,
)
_HELD_ATTEMPTS = (
    "SELECT attempts FROM projection_checkpoints WHERE event_id = $1 AND handler = $2"
    " AND status = 'processing' AND lease_owner = $3"
)
_RESCHEDULE = (
    "UPDATE projection_checkpoints SET status = $3, next_attempt_at = $4, last_error = $5, lease_owner = NULL,"
    " lease_expires_at = NULL, updated_at = $6 WHERE event_id = $1 AND handler = $2"
)
# Two int4 keys: (user, handler) pairs spread over the whole key space, no collision with the
# single-bigint device locks.
_LOCK_USER = "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))"
# Many users at once, in sorted order (the one lock order everywhere, so two batches cannot deadlock).
_LOCK_USERS = (
    "SELECT count(pg_advisory_xact_lock(hashtext(u), hashtext($2)))"
    " FROM (SELECT u FROM unnest($1::text[]) AS u ORDER BY u) AS ordered"
)
# Dead checkpoints and dead outbox events (handler '' sorts first; shown as None), keyset-paged.
_LIST_DEAD = (
    "SELECT event_id, type, user_id, handler, attempts, last_error, created_at, correlation_id FROM ("
    " SELECT event_id, event_type AS type, user_id, handler, attempts, last_error, created_at, correlation_id"
    " FROM projection_checkpoints WHERE status = 'dead' AND (event_id, handler) > ($1, $2)"
    " UNION ALL"
    " SELECT id, type, user_id, '', attempts, last_error, created_at, correlation_id"
    " FROM outbox_events WHERE status = 'dead' AND (id, '') > ($1, $2)"
    ") AS dead ORDER BY event_id, handler LIMIT $3"
)
_REPLAY_CHECKPOINTS = (
    "UPDATE projection_checkpoints SET status = 'pending', attempts = 0, next_attempt_at = $2, lease_owner = NULL,"
    " lease_expires_at = NULL, updated_at = $2 WHERE event_id = $1 AND status = 'dead'"
)
_REPLAY_EVENT = (
    "UPDATE outbox_events SET status = 'pending', attempts = 0, next_attempt_at = $2, lease_owner = NULL,"
    " lease_expires_at = NULL, updated_at = $2 WHERE id = $1 AND status = 'dead'"
    " AND NOT EXISTS (SELECT 1 FROM outbox_events AS o WHERE o.event_hash = outbox_events.event_hash"
    " AND o.status IN ('pending', 'processing'))"
)
_DISCARD_CHECKPOINTS = (
    f"DELETE FROM projection_checkpoints WHERE event_id = $1 AND status = 'dead' RETURNING {_COLS}"
)
_DISCARD_EVENT = "DELETE FROM outbox_events WHERE id = $1 AND status = 'dead'"
_LAG = (
    "SELECT handler,"
    " sum(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS pending,"
    " sum(CASE WHEN status = 'processing' THEN 1 ELSE 0 END) AS processing,"
    " sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed,"
    " sum(CASE WHEN status = 'dead' THEN 1 ELSE 0 END) AS dead,"
    " min(CASE WHEN status <> 'dead' THEN created_at END) AS oldest"
    " FROM projection_checkpoints WHERE status <> 'completed' GROUP BY handler ORDER BY handler"
)
# Off the partial index of a user's unfinished checkpoints: cheap enough for every read.
_STATE = (
    "SELECT count(*) AS unfinished,"
    " coalesce(max(CASE WHEN status = 'dead' THEN 1 ELSE 0 END), 0) AS has_dead,"
    " coalesce(max(CASE WHEN status = 'failed' AND next_attempt_at > $3 THEN 1 ELSE 0 END), 0) AS waiting"
    " FROM projection_checkpoints WHERE user_id = $1 AND handler = $2 AND status <> 'completed'"
)


class Checkpoints(Repo):
    """Per (outbox event, projection handler) progress, leased so that one worker runs it."""

    __slots__ = ()

    def _checkpoint(self, row: Row) -> Checkpoint:
        ts, opt = self._d.ts_out, self._d.opt_ts_out
        return Checkpoint(
            row["event_id"],
            row["handler"],
            row["user_id"],
            row["event_type"],
            row["depends_on"],
            row["wm_from"],
            row["wm_to"],
            row["correlation_id"],
            row["status"],
            row["attempts"],
            ts(row["next_attempt_at"]),
            row["lease_owner"],
            opt(row["lease_expires_at"]),
            row["last_error"],
            ts(row["created_at"]),
            ts(row["updated_at"]),
        )

    def _sorted(self, rows: list[Row]) -> list[Checkpoint]:
        return sorted((self._checkpoint(r) for r in rows), key=lambda c: (c.next_attempt_at, c.event_id, c.handler))

    def _lease(self, lease_seconds: float | None) -> float:
        if lease_seconds is None:
            return self._tx.config.checkpoint_lease_seconds
        return v.seconds("lease_seconds", lease_seconds)

    def _keys(self, keys: Sequence[CheckpointKey]) -> tuple[Any, Any]:
        """Checked keys as the two parameters of ``_KEYS``."""
        v.batch("keys", keys, self._limits)
        ids: list[int] = []
        handlers: list[str] = []
        for i, key in enumerate(keys):
            try:
                event_id, handler = key
            except (TypeError, ValueError):
                raise InvalidData(f"keys[{i}]", "expected a CheckpointKey") from None
            ids.append(v.integer(f"keys[{i}].event_id", event_id, 1))
            handlers.append(self._id(f"keys[{i}].handler", handler))
        if self._d.name == "postgresql":
            return ids, handlers
        return json.dumps(ids), json.dumps(handlers)

    def _held(self, statements: dict[str, str], *lead: Any, keys: Sequence[CheckpointKey]) -> Op[int]:
        """Run a keyed UPDATE of held checkpoints (``lead`` are its $1.. parameters before the keys)."""
        ids, handlers = self._keys(keys)
        if self._d.name == "postgresql" and len(set(handlers)) == 1:
            return self._op(execute(statements["postgresql_one"], *lead, ids, handlers[0]))
        return self._op(execute(statements[self._d.name], *lead, ids, handlers))

    def _row(self, i: int, row: CheckpointIn) -> tuple[Any, ...]:
        if not isinstance(row, CheckpointIn):
            raise InvalidData(f"rows[{i}]", "expected a CheckpointIn")
        wm_from = None if row.wm_from is None else v.integer(f"rows[{i}].wm_from", row.wm_from)
        wm_to = None if row.wm_to is None else v.integer(f"rows[{i}].wm_to", row.wm_to)
        if (wm_from is None) != (wm_to is None) or (wm_from is not None and wm_to is not None and wm_to <= wm_from):
            raise InvalidData(f"rows[{i}]", "wm_from and wm_to: both or neither, with wm_from < wm_to")
        limit = self._limits.max_id_chars
        return (
            v.integer(f"rows[{i}].event_id", row.event_id, 1),
            self._id(f"rows[{i}].handler", row.handler),
            self._id(f"rows[{i}].user_id", row.user_id),
            self._name(f"rows[{i}].event_type", row.event_type),
            v.opt_text(f"rows[{i}].depends_on", row.depends_on, limit),
            wm_from,
            wm_to,
            v.opt_text(f"rows[{i}].correlation_id", row.correlation_id, limit),
        )

    def create_many(
        self, rows: Sequence[CheckpointIn], *, owner: str | None = None, lease_seconds: float | None = None
    ) -> Op[list[Checkpoint]]:
        """Create checkpoints; those that already exist are left as they are (a redelivered event
        must not reset progress). Returns the ones actually created. With ``owner`` they are
        created leased to it ('processing', attempt 1); without, 'pending' and due now."""
        v.batch("rows", rows, self._limits)
        norm = [self._row(i, r) for i, r in enumerate(rows)]
        now_dt = self._now()
        now = self._d.ts(now_dt)
        if owner is None:
            if lease_seconds is not None:
                raise InvalidData("lease_seconds", "only with an owner")
            shared: tuple[Any, ...] = ("pending", 0, now, None, None)
        else:
            expires = self._d.ts(now_dt + timedelta(seconds=self._lease(lease_seconds)))
            shared = ("processing", 1, now, self._id("owner", owner), expires)
        if not norm:
            return self._op(Const([]))
        if self._d.name == "postgresql":
            columns = [list(column) for column in zip(*norm, strict=True)]
            return self._op(fetch(_INSERT_PG, *columns, *shared), post=self._sorted)

        def steps() -> Steps[list[Checkpoint]]:
            created: list[Row] = []
            for start in range(0, len(norm), _SQLITE_CHUNK):
                chunk = norm[start : start + _SQLITE_CHUNK]
                created += yield fetch(_insert_sqlite(len(chunk)), *shared, *(x for r in chunk for x in r))
            return self._sorted(created)

        return self._op(steps)

    def claim(
        self, handler: str, owner: str, *, limit: int = 100, lease_seconds: float | None = None
    ) -> Op[list[Checkpoint]]:
        """Lease up to ``limit`` of ``handler``'s due checkpoints to ``owner`` (oldest due first);
        each claim counts as an attempt. Due: pending, or failed with its backoff over, or
        processing with an expired lease (dead instead, if that was its last attempt) — and its
        dependency, if any, completed for the same event. PostgreSQL skips rows that concurrent
        claimers hold (SKIP LOCKED): no checkpoint is ever leased twice."""
        name = self._id("handler", handler)
        who = self._id("owner", owner)
        size = self._limit(limit)
        now_dt = self._now()
        now = self._d.ts(now_dt)
        expires = self._d.ts(now_dt + timedelta(seconds=self._lease(lease_seconds)))
        max_attempts = self._tx.config.outbox.max_attempts
        skip_locked = self._d.skip_locked

        def steps() -> Steps[list[Checkpoint]]:
            yield execute(_EXPIRE_LAST.format(skip_locked=skip_locked), name, now, max_attempts, _LEASE_EXPIRED)
            rows = yield fetch(_CLAIM.format(skip_locked=skip_locked), name, now, who, expires, size, max_attempts)
            return self._sorted(rows)

        return self._op(steps)

    def renew(self, owner: str, keys: Sequence[CheckpointKey], *, lease_seconds: float | None = None) -> Op[int]:
        """Extend ``owner``'s leases on ``keys`` (the heartbeat); returns how many it still holds."""
        if not keys:
            return self._op(Const(0))
        now_dt = self._now()
        expires = self._d.ts(now_dt + timedelta(seconds=self._lease(lease_seconds)))
        return self._held(_RENEW, self._id("owner", owner), expires, self._d.ts(now_dt), keys=keys)

    def complete_many(self, owner: str, keys: Sequence[CheckpointKey]) -> Op[int]:
        """processing → completed for those of ``keys`` that ``owner`` holds; returns how many."""
        if not keys:
            return self._op(Const(0))
        now = self._d.ts(self._now())
        return self._held(_COMPLETE_MANY, self._id("owner", owner), now, keys=keys)

    def fail(self, key: CheckpointKey, owner: str, error: str, *, retryable: bool = True) -> Op[str | None]:
        """processing → 'failed', due again after the outbox policy's jittered backoff; or → 'dead'
        once the attempts are used up or at once if not ``retryable``. Returns the new status, None
        if ``owner`` does not hold it."""
        try:
            raw_id, raw_handler = key
        except (TypeError, ValueError):
            raise InvalidData("key", "expected a CheckpointKey") from None
        event_id, handler = v.integer("key.event_id", raw_id, 1), self._id("key.handler", raw_handler)
        who = self._id("owner", owner)
        message = self._error(error)
        plan = self._retry_plan(retryable)
        # PostgreSQL: hold the row until the reschedule, so a concurrent fail cannot interleave.
        held = _HELD_ATTEMPTS + " FOR UPDATE" if self._d.name == "postgresql" else _HELD_ATTEMPTS

        def steps() -> Steps[str | None]:
            attempts = yield fetchval(held, event_id, handler, who)
            if attempts is None:
                return None
            dead, due, now = plan(attempts)
            status = "dead" if dead else "failed"
            yield execute(_RESCHEDULE, event_id, handler, status, due, message, now)
            return status

        return self._op(steps)

    def release(self, owner: str, keys: Sequence[CheckpointKey], *, due_at: datetime | None = None) -> Op[int]:
        """Hand back ``owner``'s leases on ``keys`` (processing → pending, due at ``due_at`` or now);
        the attempt is not counted. Returns how many it held."""
        if not keys:
            return self._op(Const(0))
        now_dt = self._now()
        due = self._d.ts(aware("due_at", due_at) if due_at is not None else now_dt)
        return self._held(_RELEASE, self._id("owner", owner), due, self._d.ts(now_dt), keys=keys)

    def lock_user(self, user_id: str, handler: str) -> Op[None]:
        """Serialize units of work on one (user, handler) until this transaction ends: PostgreSQL
        takes a transaction-scoped advisory lock; SQLite's single writer already serializes them."""
        user, name = self._id("user_id", user_id), self._id("handler", handler)
        if self._d.name != "postgresql":
            return self._op(Const(None))
        return self._op(execute(_LOCK_USER, user, name), post=lambda _: None)

    def lock_users(self, user_ids: Sequence[str], handler: str) -> Op[None]:
        """``lock_user`` for many users in one statement, taken in sorted order."""
        users = sorted({self._id(f"user_ids[{i}]", u) for i, u in enumerate(user_ids)})
        name = self._id("handler", handler)
        if self._d.name != "postgresql" or not users:
            return self._op(Const(None))
        return self._op(fetchval(_LOCK_USERS, users, name), post=lambda _: None)

    def list_dead(self, *, after: tuple[int, str] | None = None, limit: int = 100) -> Op[list[DeadLetterItem]]:
        """Dead checkpoints and dead outbox events (``handler`` None), by (event_id, handler);
        keyset: pass the last item's (event_id, handler or '') as ``after``."""
        if after is None:
            start, handler = 0, ""
        else:
            try:
                start, handler = after
            except (TypeError, ValueError):
                raise InvalidData("after", "expected (event_id, handler)") from None
            start = v.integer("after.event_id", start)
            handler = "" if handler == "" else self._id("after.handler", handler)
        ts = self._d.ts_out
        return self._op(
            fetch(_LIST_DEAD, start, handler, self._limit(limit)),
            post=lambda rows: [
                DeadLetterItem(
                    r["event_id"],
                    r["type"],
                    r["user_id"],
                    r["handler"] or None,
                    r["attempts"],
                    r["last_error"],
                    ts(r["created_at"]),
                    r["correlation_id"],
                )
                for r in rows
            ],
        )

    def replay(self, event_id: int) -> Op[int]:
        """Every dead checkpoint of the event, and the event itself if it is dead in the outbox,
        back to pending with a fresh attempt budget, due now. Returns how many rows changed
        (0: nothing of that id is dead)."""
        ident = v.integer("event_id", event_id, 1)
        now = self._d.ts(self._now())

        def steps() -> Steps[int]:
            checkpoints = yield execute(_REPLAY_CHECKPOINTS, ident, now)
            event = yield execute(_REPLAY_EVENT, ident, now)
            return int(checkpoints) + int(event)

        return self._op(steps)

    def discard(self, event_id: int) -> Op[list[Checkpoint]]:
        """Delete the event's dead checkpoints (and the outbox event if it is dead); returns the
        discarded checkpoints, so the caller can advance the watermarks past their ranges."""
        ident = v.integer("event_id", event_id, 1)

        def steps() -> Steps[list[Checkpoint]]:
            rows = yield fetch(_DISCARD_CHECKPOINTS, ident)
            yield execute(_DISCARD_EVENT, ident)
            return sorted((self._checkpoint(r) for r in rows), key=lambda c: c.handler)

        return self._op(steps)

    def lag(self) -> Op[list[HandlerLag]]:
        """Per handler with unfinished checkpoints: counts per status and the age of the oldest
        one not completed nor dead (None when there is none)."""
        now_dt = self._now()

        def tally(rows: list[Row]) -> list[HandlerLag]:
            out = []
            for r in rows:
                oldest = self._d.opt_ts_out(r["oldest"])
                age = None if oldest is None else max(0.0, (now_dt - oldest).total_seconds())
                out.append(
                    HandlerLag(r["handler"], int(r["pending"]), int(r["processing"]), int(r["failed"]),
                               int(r["dead"]), age)
                )
            return out

        return self._op(fetch(_LAG), post=tally)

    def state(self, user_id: str, handler: str) -> Op[ProjectionState]:
        """What a read of ``user_id``'s ``handler`` read model needs for its freshness:
        ``unfinished`` counts the checkpoints not completed (dead ones included)."""
        return self._op(
            fetchrow(_STATE, self._id("user_id", user_id), self._id("handler", handler), self._d.ts(self._now())),
            post=lambda r: ProjectionState(bool(r["has_dead"]), bool(r["waiting"]), int(r["unfinished"])),
        )
