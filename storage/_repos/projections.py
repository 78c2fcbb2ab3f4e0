"""The read side's products: daily rollups, sleep nights, and the watermarks that say how fresh
they are (checkpoints, the read side's bookkeeping, are in ``checkpoints``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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

_Pair = tuple[str, str]  # (handler, user)


def _one_run(ranges: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """The ranges as one run (from, to] when they join up (the usual: a user's events in order), else None."""
    if not ranges:
        return None
    start = min(f for f, _ in ranges)
    end, left = absorb(start, ranges)
    return None if left else (start, end)


def _absorbed(pairs: Sequence[_Pair], marks: Mapping[_Pair, int], stored: Mapping[_Pair, Sequence[tuple[int, int]]],
              new: Mapping[_Pair, Sequence[tuple[int, int]]]
              ) -> tuple[dict[_Pair, int], list[tuple[_Pair, int]], list[tuple[_Pair, int, int]]]:
    """Each pair's new mark (its stored and new ranges absorbed), the marks that rose, and the ranges left
    waiting. Pure."""
    out: dict[_Pair, int] = {}
    raised: list[tuple[_Pair, int]] = []
    waiting: list[tuple[_Pair, int, int]] = []
    for pair in pairs:
        mark = marks.get(pair, 0)
        new_mark, left = absorb(mark, [*stored.get(pair, ()), *(r for r in new[pair] if r[1] > mark)])
        out[pair] = new_mark
        if new_mark > mark:
            raised.append((pair, new_mark))
        waiting.extend((pair, start, end) for start, end in left)
    return out, raised, waiting

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
# replace_ranges on PostgreSQL, one statement whatever the number of ranges: the ranges emptied (nothing to write),
_DELETE_ROLLUP_RANGES_PG = (
    "DELETE FROM daily_rollups AS r USING unnest($1::text[], $2::text[], $3::date[], $4::date[]) AS k(u, m, f, l)"
    " WHERE r.user_id = k.u AND r.metric = k.m AND r.local_date >= k.f AND r.local_date <= k.l"
)
# or the ranges' rows that are not written again deleted and the new rows upserted (two sets of rows: none is
# touched twice in the statement).
_REPLACE_ROLLUP_RANGES_PG = (
    "WITH gone AS (DELETE FROM daily_rollups AS r"
    " USING unnest($1::text[], $2::text[], $3::date[], $4::date[]) AS k(u, m, f, l)"
    " WHERE r.user_id = k.u AND r.metric = k.m AND r.local_date >= k.f AND r.local_date <= k.l"
    " AND NOT EXISTS (SELECT FROM unnest($5::text[], $6::text[], $7::date[]) AS w(u, m, d)"
    " WHERE w.u = r.user_id AND w.m = r.metric AND w.d = r.local_date))"
    " INSERT INTO daily_rollups (user_id, metric, local_date, unit, sample_count, value_sum, value_min, value_max,"
    " updated_at) SELECT * FROM unnest($5::text[], $6::text[], $7::date[], $8::text[], $9::bigint[],"
    " $10::float8[], $11::float8[], $12::float8[], $13::timestamptz[])"
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
# advance on SQLite: a handler's users are one parameter (a JSON array), one handler at a time.
_USERS_SQLITE = "user_id IN (SELECT value FROM json_each($2))"
_PROJECTED_OF_SQLITE = (
    f"SELECT user_id, projected_watermark FROM projection_watermarks WHERE handler = $1 AND {_USERS_SQLITE}"
)
_RANGES_OF_SQLITE = (
    f"SELECT user_id, wm_from, wm_to FROM projection_watermark_ranges WHERE handler = $1 AND {_USERS_SQLITE}"
)
_DROP_RANGES_OF_SQLITE = f"DELETE FROM projection_watermark_ranges WHERE handler = $1 AND {_USERS_SQLITE}"
# advance on PostgreSQL: any number of (handler, user) pairs as two arrays; the marks and the waiting ranges read
# in one statement, each write one statement.
_PAIRS_PG = "unnest($1::text[], $2::text[]) AS k(handler, user_id)"
_READ_PAIRS_PG = (
    "SELECT k.handler, k.user_id, w.projected_watermark, r.froms, r.tos FROM " + _PAIRS_PG +
    " LEFT JOIN projection_watermarks AS w ON w.user_id = k.user_id AND w.handler = k.handler"
    " LEFT JOIN LATERAL (SELECT array_agg(x.wm_from) AS froms, array_agg(x.wm_to) AS tos"
    " FROM projection_watermark_ranges AS x WHERE x.user_id = k.user_id AND x.handler = k.handler) AS r ON true"
)
_DROP_RANGES_PAIRS_PG = (
    "DELETE FROM projection_watermark_ranges AS x USING " + _PAIRS_PG +
    " WHERE x.user_id = k.user_id AND x.handler = k.handler"
)
_ADD_RANGES_PAIRS_PG = (
    "INSERT INTO projection_watermark_ranges (user_id, handler, wm_from, wm_to)"
    " SELECT u, h, f, t FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS k(h, u, f, t)"
    " ON CONFLICT DO NOTHING"
)
_RAISE_PAIRS_PG = (
    "INSERT INTO projection_watermarks (user_id, handler, projected_watermark, updated_at)"
    " SELECT u, h, m, $4 FROM unnest($1::text[], $2::text[], $3::bigint[]) AS k(h, u, m)"
    " ON CONFLICT (user_id, handler) DO UPDATE SET"
    " projected_watermark = GREATEST(projection_watermarks.projected_watermark, excluded.projected_watermark),"
    " updated_at = excluded.updated_at"
)
# The usual advance in one statement: the pair's new ranges form one run (from, to] that starts at or below its
# mark, with no range of the pair waiting. Pairs it leaves out (no row yet, a gap, ranges waiting, nothing to
# raise) take the general path.
_RAISE_RUNS_PG = (
    "UPDATE projection_watermarks AS w SET projected_watermark = k.t, updated_at = $5"
    " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS k(handler, user_id, f, t)"
    " WHERE w.user_id = k.user_id AND w.handler = k.handler"
    " AND w.projected_watermark >= k.f AND w.projected_watermark < k.t"
    " AND NOT EXISTS (SELECT FROM projection_watermark_ranges AS x"
    " WHERE x.user_id = k.user_id AND x.handler = k.handler)"
    " RETURNING w.handler, w.user_id, w.projected_watermark"
)
# advance_where_free: the (user, handler) locks of checkpoints.lock_user, taken only where free (never waits). A
# statement of its own, before the reads: a read in the same statement would see a snapshot older than the lock.
_TRY_LOCK_PAIRS_PG = (
    "SELECT handler, user_id FROM " + _PAIRS_PG +
    " WHERE pg_try_advisory_xact_lock(hashtext(user_id), hashtext(handler))"
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
                cols = [list(c) for c in zip(*ranges, strict=True)]
                if norm:
                    yield execute(_REPLACE_ROLLUP_RANGES_PG, *cols, *(list(c) for c in zip(*norm, strict=True)))
                else:
                    yield execute(_DELETE_ROLLUP_RANGES_PG, *cols)
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
        checked = self._checked({handler: {user_id: ranges}})

        def steps() -> Steps[int]:
            marks = yield from self._advance_steps(checked, try_lock=False)
            return next(iter(marks.values()))

        return self._op(steps)

    def advance_many(self, handler: str, ranges: Mapping[str, Sequence[tuple[int, int]]]) -> Op[dict[str, int]]:
        """``advance`` for many users of one handler in a fixed number of statements (a worker's batch
        touches hundreds of users): returns each user's new mark. Same locking rule: the caller holds
        ``checkpoints.lock_users`` for these users on PostgreSQL."""
        checked = self._checked({handler: ranges})

        def steps() -> Steps[dict[str, int]]:
            marks = yield from self._advance_steps(checked, try_lock=False)
            return {user: mark for (_, user), mark in marks.items()}

        return self._op(steps)

    def advance_where_free(self, ranges: Mapping[str, Mapping[str, Sequence[tuple[int, int]]]]
                           ) -> Op[dict[str, dict[str, int]]]:
        """``advance_many`` for several handlers (``ranges``: handler -> user -> ranges), each (user, handler)
        only where this transaction takes its ``checkpoints.lock_user`` lock without waiting (PostgreSQL's
        ``pg_try_advisory_xact_lock``; SQLite's single writer takes every one). Returns handler -> user -> new
        mark for the pairs advanced; a pair whose lock another transaction holds is left out, for the caller to
        hand to that handler's usual path. For work a handler has nothing to do for (the outbox dispatcher):
        it never waits on a unit of work that holds a user."""
        checked = self._checked(ranges)

        def steps() -> Steps[dict[str, dict[str, int]]]:
            marks = yield from self._advance_steps(checked, try_lock=True)
            out: dict[str, dict[str, int]] = {}
            for (handler, user), mark in marks.items():
                out.setdefault(handler, {})[user] = mark
            return out

        return self._op(steps)

    def _checked(self, ranges: Mapping[str, Mapping[str, Sequence[tuple[int, int]]]]
                 ) -> dict[tuple[str, str], list[tuple[int, int]]]:
        """(handler, user) -> validated ranges, in one sorted order (the order rows are written in)."""
        v.batch("ranges", [(h, u) for h, users in ranges.items() for u in users], self._limits)
        checked: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for handler, users in ranges.items():
            name = self._id("handler", handler)
            for user, pairs in users.items():
                checked[(name, self._id("user_id", user))] = self._ranges(user, pairs)
        return {key: checked[key] for key in sorted(checked)}

    def _advance_steps(self, checked: Mapping[tuple[str, str], Sequence[tuple[int, int]]], *, try_lock: bool
                       ) -> Steps[dict[tuple[str, str], int]]:
        """The advance of every (handler, user) in ``checked`` (only where its lock is free when ``try_lock``):
        each pair's new mark."""
        if not checked:
            return {}
        now = self._d.ts(self._now())
        pairs = list(checked)
        if self._d.name != "postgresql":
            return (yield from self._advance_sqlite(checked, now))
        if try_lock:
            free = {(r["handler"], r["user_id"]) for r in (yield fetch(_TRY_LOCK_PAIRS_PG, [h for h, _ in pairs],
                                                                           [u for _, u in pairs]))}
            pairs = [pair for pair in pairs if pair in free]
            if not pairs:
                return {}
        runs = {pair: run for pair in pairs if (run := _one_run(checked[pair])) is not None}
        done: dict[tuple[str, str], int] = {}
        if runs:
            done = {(r["handler"], r["user_id"]): int(r["projected_watermark"]) for r in (yield fetch(
                _RAISE_RUNS_PG, [h for h, _ in runs], [u for _, u in runs], [f for f, _ in runs.values()],
                [t for _, t in runs.values()], now))}
            pairs = [pair for pair in pairs if pair not in done]
            if not pairs:
                return done
        handlers, users = [h for h, _ in pairs], [u for _, u in pairs]
        marks: dict[tuple[str, str], int] = {}
        stored: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for r in (yield fetch(_READ_PAIRS_PG, handlers, users)):
            key = (r["handler"], r["user_id"])
            marks[key] = int(r["projected_watermark"] or 0)
            if r["froms"]:
                stored[key] = list(zip(r["froms"], r["tos"], strict=True))
        out, raised, waiting = _absorbed(pairs, marks, stored, checked)
        if stored:  # the waiting ranges, rewritten whole (usually none: events come in order)
            yield execute(_DROP_RANGES_PAIRS_PG, [h for h, _ in stored], [u for _, u in stored])
        if waiting:
            yield execute(_ADD_RANGES_PAIRS_PG, [w[0][0] for w in waiting], [w[0][1] for w in waiting],
                          [w[1] for w in waiting], [w[2] for w in waiting])
        if raised:  # one statement for the whole batch
            yield execute(_RAISE_PAIRS_PG, [h for (h, _), _ in raised], [u for (_, u), _ in raised],
                          [m for _, m in raised], now)
        return done | out

    def _advance_sqlite(self, checked: Mapping[tuple[str, str], Sequence[tuple[int, int]]], now: Any
                        ) -> Steps[dict[tuple[str, str], int]]:
        out: dict[tuple[str, str], int] = {}
        for handler in sorted({h for h, _ in checked}):
            pairs = [(h, u) for h, u in checked if h == handler]
            users = json.dumps([u for _, u in pairs])
            marks = {(handler, r["user_id"]): int(r["projected_watermark"])
                     for r in (yield fetch(_PROJECTED_OF_SQLITE, handler, users))}
            stored: dict[tuple[str, str], list[tuple[int, int]]] = {}
            for r in (yield fetch(_RANGES_OF_SQLITE, handler, users)):
                stored.setdefault((handler, r["user_id"]), []).append((r["wm_from"], r["wm_to"]))
            mine, raised, waiting = _absorbed(pairs, marks, stored, checked)
            out.update(mine)
            if stored:
                yield execute(_DROP_RANGES_OF_SQLITE, handler, users)
            if waiting:
                yield many(_ADD_RANGE, [(u, h, start, end) for (h, u), start, end in waiting])
            if raised:
                yield many(_RAISE_PROJECTED_NO_RETURN, [(u, h, mark, now) for (h, u), mark in raised])
        return out

    def _ranges(self, user: str, ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        v.batch("ranges", ranges, self._limits)
        checked: list[tuple[int, int]] = []
        for i, pair in enumerate(ranges):
            if type(pair) is tuple and len(pair) == 2 and type(pair[0]) is int and type(pair[1]) is int \
                    and 0 <= pair[0] < pair[1] < 2**63:
                checked.append(pair)  # the usual: a well-formed range, checked in one go
                continue
            try:
                start, end = pair
            except (TypeError, ValueError):
                raise InvalidData(f"ranges[{i}]", "expected (from, to)") from None
            start, end = v.integer(f"ranges[{i}][0]", start), v.integer(f"ranges[{i}][1]", end)
            if end <= start:
                raise InvalidData(f"ranges[{i}]", "to must be above from")
            checked.append((start, end))
        return checked
