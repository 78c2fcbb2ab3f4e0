"""The read side's bookkeeping and products: projection checkpoints (per outbox event and
handler, leased), daily rollups, sleep nights, and the watermarks that say how fresh they are."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from .. import _validate as v
from .._errors import InvalidData
from .._model import Checkpoint, DailyRollup, SleepNight, UserWatermarks
from .._sql import Steps, execute, fetch, fetchrow, fetchval, many
from .._time import aware
from .._tx import Const, Op
from .base import Repo, Row

__all__ = ["Checkpoints", "Rollups", "Sleep", "Watermarks"]

_CHECKPOINT_COLS = (
    "event_id, handler, status, attempts, lease_owner, lease_expires_at, last_error, updated_at"
)
_TRY_ACQUIRE = (
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
    f" RETURNING {_CHECKPOINT_COLS}"
)
_FINISH_CHECKPOINT = (
    "UPDATE projection_checkpoints SET status = $4, last_error = $5, lease_owner = NULL,"
    " lease_expires_at = NULL, updated_at = $6"
    " WHERE event_id = $1 AND handler = $2 AND status = 'processing' AND lease_owner = $3"
)
_GET_CHECKPOINT = f"SELECT {_CHECKPOINT_COLS} FROM projection_checkpoints WHERE event_id = $1 AND handler = $2"
_CHECKPOINTS_OF_EVENT = (
    f"SELECT {_CHECKPOINT_COLS} FROM projection_checkpoints WHERE event_id = $1 ORDER BY handler"
)

_UPSERT_ROLLUP = (
    "INSERT INTO daily_rollups (user_id, metric, local_date, unit, sample_count, value_sum,"
    " value_min, value_max, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    " ON CONFLICT (user_id, metric, local_date) DO UPDATE SET unit = excluded.unit,"
    " sample_count = excluded.sample_count, value_sum = excluded.value_sum,"
    " value_min = excluded.value_min, value_max = excluded.value_max, updated_at = excluded.updated_at"
)
_DELETE_ROLLUPS = (
    "DELETE FROM daily_rollups WHERE user_id = $1 AND metric = $2 AND local_date >= $3"
    " AND local_date <= $4"
)
_READ_ROLLUPS = (
    "SELECT user_id, metric, local_date, unit, sample_count, value_sum, value_min, value_max"
    " FROM daily_rollups WHERE user_id = $1 AND metric = $2 AND local_date >= $3"
    " AND local_date <= $4 ORDER BY local_date"
)

_UPSERT_NIGHT = (
    "INSERT INTO sleep_nights (user_id, night_date, start_at, end_at, asleep_minutes, awake_minutes,"
    " stages, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    " ON CONFLICT (user_id, night_date) DO UPDATE SET start_at = excluded.start_at,"
    " end_at = excluded.end_at, asleep_minutes = excluded.asleep_minutes,"
    " awake_minutes = excluded.awake_minutes, stages = excluded.stages, updated_at = excluded.updated_at"
)
_DELETE_NIGHTS = "DELETE FROM sleep_nights WHERE user_id = $1 AND night_date >= $2 AND night_date <= $3"
_READ_NIGHTS = (
    "SELECT user_id, night_date, start_at, end_at, asleep_minutes, awake_minutes, stages"
    " FROM sleep_nights WHERE user_id = $1 AND night_date >= $2 AND night_date <= $3"
    " ORDER BY night_date"
)

_BUMP_WATERMARK = (
    "INSERT INTO user_watermarks (user_id, watermark, updated_at) VALUES ($1, $2, $3)"
    " ON CONFLICT (user_id) DO UPDATE SET"
    " watermark = user_watermarks.watermark + excluded.watermark, updated_at = excluded.updated_at"
    " RETURNING watermark"
)
_GET_WATERMARK = "SELECT watermark FROM user_watermarks WHERE user_id = $1"
_GET_PROJECTED = "SELECT handler, projected_watermark FROM projection_watermarks WHERE user_id = $1"
_RAISE_PROJECTED = (
    "INSERT INTO projection_watermarks (user_id, handler, projected_watermark, updated_at)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, handler) DO UPDATE SET"
    " projected_watermark = CASE WHEN excluded.projected_watermark"
    " > projection_watermarks.projected_watermark THEN excluded.projected_watermark"
    " ELSE projection_watermarks.projected_watermark END, updated_at = excluded.updated_at"
    " RETURNING projected_watermark"
)


class Checkpoints(Repo):
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
                _TRY_ACQUIRE,
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
                _FINISH_CHECKPOINT,
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
            fetchrow(_GET_CHECKPOINT, v.integer("event_id", event_id, 1), self._id("handler", handler)),
            post=lambda row: None if row is None else self._checkpoint(row),
        )

    def list_for_event(self, event_id: int) -> Op[list[Checkpoint]]:
        return self._op(
            fetch(_CHECKPOINTS_OF_EVENT, v.integer("event_id", event_id, 1)),
            post=lambda rows: [self._checkpoint(r) for r in rows],
        )


class Rollups(Repo):
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
        return self._op(many(_UPSERT_ROLLUP, norm) if norm else Const(None), post=lambda _: len(norm))

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
            yield execute(_DELETE_ROLLUPS, user, name, first, last)
            if norm:
                yield many(_UPSERT_ROLLUP, norm)
            return len(norm)

        return self._op(steps)

    def read(self, user_id: str, metric: str, start: date, end: date) -> Op[list[DailyRollup]]:
        """Days in [start, end] (inclusive), in date order."""
        return self._op(
            fetch(
                _READ_ROLLUPS,
                self._id("user_id", user_id),
                self._name("metric", metric),
                self._d.day(v.day("start", start)),
                self._d.day(v.day("end", end)),
            ),
            post=lambda rows: [self._rollup(r) for r in rows],
        )


class Sleep(Repo):
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
            start = aware(f"nights[{i}].start_at", n.start_at)
            end = aware(f"nights[{i}].end_at", n.end_at)
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
        return self._op(many(_UPSERT_NIGHT, norm) if norm else Const(None), post=lambda _: len(norm))

    def replace_range(self, user_id: str, start: date, end: date, nights: Sequence[SleepNight]) -> Op[int]:
        """Make ``nights`` the whole content of [start, end] for this user."""
        user = self._id("user_id", user_id)
        first, last = self._d.day(v.day("start", start)), self._d.day(v.day("end", end))
        norm = self._rows(nights)
        for i, r in enumerate(norm):
            if r[0] != user or not first <= r[1] <= last:
                raise InvalidData(f"nights[{i}]", "outside the replaced user or date range")

        def steps() -> Steps[int]:
            yield execute(_DELETE_NIGHTS, user, first, last)
            if norm:
                yield many(_UPSERT_NIGHT, norm)
            return len(norm)

        return self._op(steps)

    def read(self, user_id: str, start: date, end: date) -> Op[list[SleepNight]]:
        """Nights in [start, end] (inclusive), in date order."""
        return self._op(
            fetch(
                _READ_NIGHTS,
                self._id("user_id", user_id),
                self._d.day(v.day("start", start)),
                self._d.day(v.day("end", end)),
            ),
            post=lambda rows: [self._night(r) for r in rows],
        )


class Watermarks(Repo):
    """Freshness: the user's committed-change counter and each projection's caught-up mark."""

    __slots__ = ()

    def bump(self, user_id: str, by: int = 1) -> Op[int]:
        """Add ``by`` (>= 1) to the user's watermark; returns the new value. Put it in the
        unit of work that changes the samples."""
        return self._op(
            fetchval(
                _BUMP_WATERMARK,
                self._id("user_id", user_id),
                v.integer("by", by, 1),
                self._d.ts(self._now()),
            )
        )

    def get(self, user_id: str) -> Op[UserWatermarks]:
        """The user's watermark (0 if never bumped) and every handler's projected watermark."""
        user = self._id("user_id", user_id)

        def steps() -> Steps[UserWatermarks]:
            mark = yield fetchval(_GET_WATERMARK, user)
            rows = yield fetch(_GET_PROJECTED, user)
            return UserWatermarks(user, mark or 0, {r["handler"]: r["projected_watermark"] for r in rows})

        return self._op(steps)

    def set_projected(self, user_id: str, handler: str, value: int) -> Op[int]:
        """Raise ``handler``'s projected watermark to ``value`` (never lowers it); returns it."""
        return self._op(
            fetchval(
                _RAISE_PROJECTED,
                self._id("user_id", user_id),
                self._id("handler", handler),
                v.integer("value", value),
                self._d.ts(self._now()),
            )
        )
