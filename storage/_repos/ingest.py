"""Ingest requests: request-level idempotency of ingestion, keyed by (user, requestId)."""

from __future__ import annotations

from .. import _validate as v
from .._errors import ConflictError, NotFound
from .._model import IngestBegin, IngestRequest, Json
from .._sql import Steps, execute, fetchrow, fetchval
from .._tx import Op
from .base import Repo, Row

__all__ = ["Ingest"]

_INGEST_COLS = "user_id, request_id, payload_hash, lane, status, result, error, created_at, updated_at"
# Inserts the request as 'processing', or takes over a 'failed' one with the same hash.
_CLAIM = (
    f"INSERT INTO ingest_requests ({_INGEST_COLS})"
    " VALUES ($1, $2, $3, $4, 'processing', NULL, NULL, $5, $5)"
    " ON CONFLICT (user_id, request_id) DO UPDATE SET status = 'processing',"
    " lane = excluded.lane, result = NULL, error = NULL, updated_at = excluded.updated_at"
    " WHERE ingest_requests.status = 'failed'"
    " AND ingest_requests.payload_hash = excluded.payload_hash"
    f" RETURNING {_INGEST_COLS}"
)
_GET = f"SELECT {_INGEST_COLS} FROM ingest_requests WHERE user_id = $1 AND request_id = $2"
_FINISH = (
    "UPDATE ingest_requests SET status = $3, result = $4, error = $5, updated_at = $6"
    " WHERE user_id = $1 AND request_id = $2 AND status = 'processing' RETURNING 1"
)
_STATUS = "SELECT status FROM ingest_requests WHERE user_id = $1 AND request_id = $2"
_REAP_STALE = (
    "UPDATE ingest_requests SET status = 'failed', error = $2, updated_at = $3"
    " WHERE status = 'processing' AND updated_at < $1"
)

# Finished requests (their stored results answer retries) past retention, oldest first, a batch at a time.
_PURGE_FINISHED = (
    "DELETE FROM ingest_requests WHERE (user_id, request_id) IN (SELECT user_id, request_id"
    " FROM ingest_requests WHERE status <> 'processing' AND updated_at < $1 ORDER BY updated_at LIMIT $2)"
)


class Ingest(Repo):
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
            row = yield fetchrow(_CLAIM, *args)
            if row is not None:
                return IngestBegin(self._request(row), True)
            row = yield fetchrow(_GET, *args[:2])
            return IngestBegin(self._request(row), False)

        return self._op(steps)

    def _finish(
        self, user_id: str, request_id: str, status: str, result: str | None, error: str | None
    ) -> Op[None]:
        args = (self._id("user_id", user_id), self._id("request_id", request_id))
        now = self._d.ts(self._now())

        def steps() -> Steps[None]:
            done = yield fetchval(_FINISH, *args, status, result, error, now)
            if done is None:
                current = yield fetchval(_STATUS, *args)
                if current is None:
                    raise NotFound(f"no ingest request {args[1]!r} for user {args[0]!r}")
                raise ConflictError(f"ingest request {args[1]!r} is {current}, not processing")
            return None

        return self._op(steps)

    def complete(self, user_id: str, request_id: str, result: Json) -> Op[None]:
        """processing → completed with the stored result (put this in the unit of work that
        writes the samples). NotFound / ConflictError if it is not processing."""
        return self._finish(user_id, request_id, "completed", self._result_json("result", result), None)

    def fail(self, user_id: str, request_id: str, error: str) -> Op[None]:
        """processing → failed; a repeat with the same hash may ``begin`` it again."""
        return self._finish(user_id, request_id, "failed", None, self._error(error))

    def get(self, user_id: str, request_id: str) -> Op[IngestRequest | None]:
        return self._op(
            fetchrow(_GET, self._id("user_id", user_id), self._id("request_id", request_id)),
            post=lambda row: None if row is None else self._request(row),
        )

    def reap_stale(self, older_than_seconds: float) -> Op[int]:
        """Fail 'processing' requests untouched for longer than this (their worker died)."""
        return self._op(
            execute(
                _REAP_STALE,
                self._older_than(older_than_seconds),
                "reaped: processing for too long",
                self._d.ts(self._now()),
            )
        )

    def purge_finished(self, older_than_seconds: float, *, limit: int = 10_000) -> Op[int]:
        """Delete completed and failed requests untouched for longer than this (their result no longer
        answers a retry), at most ``limit`` of them; returns how many went."""
        return self._op(execute(_PURGE_FINISHED, self._older_than(older_than_seconds), self._limit(limit)))
