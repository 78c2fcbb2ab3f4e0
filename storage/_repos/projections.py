"""The read side's products: daily rollups, sleep nights, and the watermarks that say how fresh
they are (checkpoints, the read side's bookkeeping, are in ``checkpoints``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Any

from .. import _validate as v
from .._errors import InvalidData
from .._model import DailyRollup, SleepNight, UserWatermarks
from .._ranges import absorb
from .._sql import Steps, execute, fetch, fetchval, many
from .._time import aware
from .._tx import Const, Op
from .base import Repo, Row

__all__ = ["Rollups", "Sleep", "Watermarks"]

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
# replace_ranges on PostgreSQL: every range deleted, then every row written, one statement each.
_DELETE_ROLLUP_RANGES_PG = (
    "DELETE FROM daily_rollups AS r USING unnest($1::text[], $2::text[], $3::date[], $4::date[]) AS k(u, m, f, l)"
    " WHERE r.user_id = k.u AND r.metric = k.m AND r.local_date >= k.f AND r.local_date <= k.l"
)
_UPSERT_ROLLUPS_PG = (
    "INSERT INTO daily_rollups (user_id, metric, local_date, unit, sample_count, value_sum, value_min, value_max,"
    " updated_at) SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::text[], $5::bigint[],"
    " $6::float8[], $7::float8[], $8::float8[], $9::timestamptz[])"
    " ON CONFLICT (user_id, metric, local_date) DO UPDATE SET unit = excluded.unit,"
    " sample_count = excluded.sample_count, value_sum = excluded.value_sum,"
    " value_min = excluded.value_min, value_max = excluded.value_max, updated_at = excluded.updated_at"
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
_PROJECTED = "SELECT projected_watermark FROM projection_watermarks WHERE user_id = $1 AND handler = $2"
_ADD_RANGE = (
    "INSERT INTO projection_watermark_ranges (user_id, handler, wm_from, wm_to) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT DO NOTHING"
)
# advance_many: a set of users is one parameter (text[] on PostgreSQL, a JSON array on SQLite).
_USERS = {"postgresql": "user_id = ANY($2::text[])", "sqlite": "user_id IN (SELECT value FROM json_each($2))"}
_PROJECTED_OF = {
    d: f"SELECT user_id, projected_watermark FROM projection_watermarks WHERE handler = $1 AND {users}"
    for d, users in _USERS.items()
}
_RANGES_OF = {
    d: f"SELECT user_id, wm_from, wm_to FROM projection_watermark_ranges WHERE handler = $1 AND {users}"
    for d, users in _USERS.items()
}
_DROP_RANGES_OF = {d: f"DELETE FROM projection_watermark_ranges WHERE handler = $1 AND {users}"
                   for d, users in _USERS.items()}
_ADD_RANGES_PG = (
    "INSERT INTO projection_watermark_ranges (user_id, handler, wm_from, wm_to)"
    " SELECT u, $2, f, t FROM unnest($1::text[], $3::bigint[], $4::bigint[]) AS k(u, f, t) ON CONFLICT DO NOTHING"
)
_RAISE_PROJECTED_PG = (
    "INSERT INTO projection_watermarks (user_id, handler, projected_watermark, updated_at)"
    " SELECT u, $2, m, $4 FROM unnest($1::text[], $3::bigint[]) AS k(u, m)"
    " ON CONFLICT (user_id, handler) DO UPDATE SET"
    " projected_watermark = GREATEST(projection_watermarks.projected_watermark, excluded.projected_watermark),"
    " updated_at = excluded.updated_at"
)
_RAISE_PROJECTED_NO_RETURN = (
    "INSERT INTO projection_watermarks (user_id, handler, projected_watermark, updated_at)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, handler) DO UPDATE SET"
    " projected_watermark = CASE WHEN excluded.projected_watermark"
    " > projection_watermarks.projected_watermark THEN excluded.projected_watermark"
    " ELSE projection_watermarks.projected_watermark END, updated_at = excluded.updated_at"
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

    def replace_ranges(self, items: Sequence[tuple[str, str, date, date, Sequence[DailyRollup]]]) -> Op[int]:
        """``replace_range`` for many (user_id, metric, start, end, rows) at once (a projection batch): two
        statements on PostgreSQL whatever their number. The ranges must not overlap. Returns rows written."""
        ranges: list[tuple[Any, ...]] = []
        norm: list[tuple[Any, ...]] = []
        for i, (user_id, metric, start, end, rows) in enumerate(items):
            user, name = self._id(f"items[{i}].user_id", user_id), self._name(f"items[{i}].metric", metric)
            first, last = self._d.day(v.day("start", start)), self._d.day(v.day("end", end))
            mine = self._rows(rows)
            for j, r in enumerate(mine):
                if r[0] != user or r[1] != name or not first <= r[2] <= last:
                    raise InvalidData(f"items[{i}].rows[{j}]", "outside the replaced user, metric or date range")
            ranges.append((user, name, first, last))
            norm.extend(mine)
        postgres = self._d.name == "postgresql"

        def steps() -> Steps[int]:
            if postgres and ranges:
                cols = list(zip(*ranges, strict=True))
                yield execute(_DELETE_ROLLUP_RANGES_PG, *(list(c) for c in cols))
                if norm:
                    rows = list(zip(*norm, strict=True))
                    yield execute(_UPSERT_ROLLUPS_PG, *(list(c) for c in rows))
                return len(norm)
            for user, name, first, last in ranges:
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

    def projected(self, user_id: str, handler: str) -> Op[int]:
        """``handler``'s projected watermark for the user (0 if it never advanced)."""
        return self._op(
            fetchval(_PROJECTED, self._id("user_id", user_id), self._id("handler", handler)),
            post=lambda mark: int(mark or 0),
        )

    def advance(self, user_id: str, handler: str, ranges: Sequence[tuple[int, int]]) -> Op[int]:
        """Record the completed watermark ranges (from, to], absorb into the projected mark every
        stored range that starts at or below it (repeatedly), and return the new mark. A range
        above the mark waits for those below it; one entirely at or below the mark changes nothing.

        Read-then-write: on PostgreSQL the caller must hold ``checkpoints.lock_user(user_id,
        handler)`` in the same transaction, or two concurrent advances could each miss the other's
        range (SQLite's single writer needs nothing)."""
        user = self._id("user_id", user_id)
        return self._op(self._advancing(handler, {user: ranges}), post=lambda marks: marks[user])

    def advance_many(self, handler: str, ranges: Mapping[str, Sequence[tuple[int, int]]]) -> Op[dict[str, int]]:
        """``advance`` for many users of one handler in a fixed number of statements (a worker's batch
        touches hundreds of users): returns each user's new mark. Same locking rule: the caller holds
        ``checkpoints.lock_users`` for these users on PostgreSQL."""
        return self._op(self._advancing(handler, ranges))

    def _advancing(self, handler: str, ranges: Mapping[str, Sequence[tuple[int, int]]]) -> Callable[[], Steps[dict[str, int]]]:
        name = self._id("handler", handler)
        v.batch("ranges", list(ranges), self._limits)
        checked: dict[str, list[tuple[int, int]]] = {}
        for user_id, pairs in ranges.items():
            user = self._id("user_id", user_id)
            checked[user] = self._ranges(user, pairs)
        users = sorted(checked)
        users_arg: Any = users if self._d.name == "postgresql" else json.dumps(users)
        dialect = self._d.name
        now = self._d.ts(self._now())

        def steps() -> Steps[dict[str, int]]:
            if not users:
                return {}
            marks = {r["user_id"]: int(r["projected_watermark"]) for r in (yield fetch(_PROJECTED_OF[dialect], name,
                                                                                       users_arg))}
            stored: dict[str, list[tuple[int, int]]] = {}
            for r in (yield fetch(_RANGES_OF[dialect], name, users_arg)):
                stored.setdefault(r["user_id"], []).append((r["wm_from"], r["wm_to"]))
            out: dict[str, int] = {}
            raised: list[tuple[Any, ...]] = []
            waiting: list[tuple[Any, ...]] = []
            for user in users:
                mark = marks.get(user, 0)
                new_mark, left = absorb(mark, [*stored.get(user, ()), *(r for r in checked[user] if r[1] > mark)])
                out[user] = new_mark
                if new_mark > mark:
                    raised.append((user, name, new_mark, now))
                waiting.extend((user, name, start, end) for start, end in left)
            if stored or waiting:  # the waiting ranges, rewritten whole (usually none: events come in order)
                yield execute(_DROP_RANGES_OF[dialect], name, users_arg)
                if waiting and dialect == "postgresql":
                    yield execute(_ADD_RANGES_PG, [w[0] for w in waiting], name, [w[2] for w in waiting],
                                  [w[3] for w in waiting])
                elif waiting:
                    yield many(_ADD_RANGE, waiting)
            if raised and dialect == "postgresql":  # one statement for the whole batch
                yield execute(_RAISE_PROJECTED_PG, [r[0] for r in raised], name, [r[2] for r in raised], now)
            elif raised:
                yield many(_RAISE_PROJECTED_NO_RETURN, raised)
            return out

        return steps

    def _ranges(self, user: str, ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        v.batch("ranges", ranges, self._limits)
        checked: list[tuple[int, int]] = []
        for i, pair in enumerate(ranges):
            try:
                start, end = pair
            except (TypeError, ValueError):
                raise InvalidData(f"ranges[{i}]", "expected (from, to)") from None
            start, end = v.integer(f"ranges[{i}][0]", start), v.integer(f"ranges[{i}][1]", end)
            if end <= start:
                raise InvalidData(f"ranges[{i}]", "to must be above from")
            checked.append((start, end))
        return checked
