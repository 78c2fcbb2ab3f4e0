"""Export jobs: one per ``POST /v1/exports``, leased to the export worker that runs it.

    pending ──claim──▶ running ──complete──▶ completed
                         │  └──fail──▶ failed (with the reason)
                         └──lease expired──▶ claimed again (a crashed worker), or failed once
                                             ``max_attempts`` claims were spent

A job is only ever read by its owner (``get`` takes the user): another user's id reads as absent.
"""

from __future__ import annotations

from datetime import timedelta

from .. import _validate as v
from .._model import ExportJob
from .._sql import Steps, execute, fetch, fetchrow
from .._tx import Op
from .base import Repo, Row

__all__ = ["Exports"]

_COLS = (
    "id, user_id, status, attempts, lease_owner, lease_expires_at, object_key, rows_exported, bytes_exported,"
    " error, created_at, updated_at"
)
_CREATE = (
    "INSERT INTO export_jobs (id, user_id, status, attempts, created_at, updated_at)"
    f" VALUES ($1, $2, 'pending', 0, $3, $3) RETURNING {_COLS}"
)
_GET = f"SELECT {_COLS} FROM export_jobs WHERE id = $1 AND user_id = $2"
_WORKER_LOST = "the export worker stopped (lease expired) on the last attempt"
# A running job whose lease expired on its last attempt fails: whatever kills its worker would kill the next.
_EXPIRE_LAST = (
    "UPDATE export_jobs SET status = 'failed', error = $3, lease_owner = NULL, lease_expires_at = NULL,"
    " updated_at = $1 WHERE id IN (SELECT id FROM export_jobs WHERE status = 'running'"
    " AND lease_expires_at <= $1 AND attempts >= $2{skip_locked})"
)
_CLAIM = (
    "WITH due AS (SELECT id FROM export_jobs WHERE status IN ('pending', 'running')"
    " AND (status = 'pending' OR lease_expires_at <= $1) ORDER BY created_at, id LIMIT $4{skip_locked})"
    " UPDATE export_jobs SET status = 'running', attempts = attempts + 1, lease_owner = $2,"
    f" lease_expires_at = $3, error = NULL, updated_at = $1 WHERE id IN (SELECT id FROM due) RETURNING {_COLS}"
)
_HELD = "WHERE id = $1 AND status = 'running' AND lease_owner = $2"
_RENEW = f"UPDATE export_jobs SET lease_expires_at = $3, updated_at = $4 {_HELD}"
_COMPLETE = (
    "UPDATE export_jobs SET status = 'completed', object_key = $3, rows_exported = $4, bytes_exported = $5,"
    f" lease_owner = NULL, lease_expires_at = NULL, updated_at = $6 {_HELD}"
)
_FAIL = (
    "UPDATE export_jobs SET status = 'failed', error = $3, lease_owner = NULL, lease_expires_at = NULL,"
    f" updated_at = $4 {_HELD}"
)


class Exports(Repo):
    """Durable export jobs, leased so that one worker runs each."""

    __slots__ = ()

    def _job(self, row: Row) -> ExportJob:
        return ExportJob(
            row["id"],
            row["user_id"],
            row["status"],
            row["attempts"],
            row["lease_owner"],
            self._d.opt_ts_out(row["lease_expires_at"]),
            row["object_key"],
            row["rows_exported"],
            row["bytes_exported"],
            row["error"],
            self._d.ts_out(row["created_at"]),
            self._d.ts_out(row["updated_at"]),
        )

    def create(self, user_id: str, export_id: str) -> Op[ExportJob]:
        """A new pending job ``export_id`` of ``user_id`` (the id is the caller's: unique, unguessable)."""
        now = self._d.ts(self._now())
        return self._op(fetchrow(_CREATE, self._id("export_id", export_id), self._id("user_id", user_id), now),
                        post=self._job)

    def get(self, user_id: str, export_id: str) -> Op[ExportJob | None]:
        """The job if it exists and belongs to ``user_id``; None otherwise (no hint which)."""
        return self._op(fetchrow(_GET, self._id("export_id", export_id), self._id("user_id", user_id)),
                        post=lambda row: None if row is None else self._job(row))

    def claim(self, owner: str, *, lease_seconds: float, max_attempts: int, limit: int = 1) -> Op[list[ExportJob]]:
        """Lease up to ``limit`` due jobs (oldest first) to ``owner``; each claim counts as an attempt. Due:
        pending, or running with an expired lease (failed instead, if that was its last attempt). PostgreSQL
        skips rows a concurrent claimer holds: no job is ever leased twice."""
        who = self._id("owner", owner)
        attempts = v.integer("max_attempts", max_attempts, 1)
        size = self._limit(limit)
        now_dt = self._now()
        now = self._d.ts(now_dt)
        expires = self._d.ts(now_dt + timedelta(seconds=v.seconds("lease_seconds", lease_seconds)))
        skip_locked = self._d.skip_locked

        def steps() -> Steps[list[ExportJob]]:
            yield execute(_EXPIRE_LAST.format(skip_locked=skip_locked), now, attempts, _WORKER_LOST)
            rows = yield fetch(_CLAIM.format(skip_locked=skip_locked), now, who, expires, size)
            return sorted((self._job(r) for r in rows), key=lambda j: (j.created_at, j.id))

        return self._op(steps)

    def renew(self, owner: str, export_id: str, *, lease_seconds: float) -> Op[bool]:
        """Extend ``owner``'s lease (the heartbeat); False when it no longer holds the job."""
        now_dt = self._now()
        expires = self._d.ts(now_dt + timedelta(seconds=v.seconds("lease_seconds", lease_seconds)))
        return self._op(execute(_RENEW, self._id("export_id", export_id), self._id("owner", owner), expires,
                                self._d.ts(now_dt)), post=lambda n: int(n) == 1)

    def complete(self, owner: str, export_id: str, *, object_key: str, rows: int, size: int) -> Op[bool]:
        """running → completed with where the export is and how big; False when ``owner`` lost the lease."""
        return self._op(execute(_COMPLETE, self._id("export_id", export_id), self._id("owner", owner),
                                v.text("object_key", object_key, 1024), v.integer("rows", rows),
                                v.integer("size", size), self._d.ts(self._now())), post=lambda n: int(n) == 1)

    def fail(self, owner: str, export_id: str, reason: str) -> Op[bool]:
        """running → failed with ``reason``; False when ``owner`` lost the lease."""
        return self._op(execute(_FAIL, self._id("export_id", export_id), self._id("owner", owner),
                                self._error(reason), self._d.ts(self._now())), post=lambda n: int(n) == 1)
