"""Health samples, keyed by (user, source_id, source_record_id, start_at), and their preparation.

The sample upsert is the ingestion hot path: PostgreSQL takes a batch as one ``unnest``
statement, SQLite as multi-row VALUES statements of up to ``_SQLITE_CHUNK`` rows.

Deletion is final. Platform identities are never reused and deletions may arrive before their
sample (lanes are not ordered with each other), so a deleted identity keeps its row for good:

- deleting a key with no row inserts a *tombstone*: a deleted row whose metric is ``''``
  (``_TOMBSTONE_METRIC``; a real sample's metric is never empty), value 0, unit ``''``, metadata
  ``{}`` and end_at = start_at. Every read leaves tombstones out, deleted rows included;
- an upsert of a deleted identity (tombstone or deleted sample) changes nothing and is reported
  in ``UpsertCounts.refused`` — the rest of its batch goes on;
- ``purge_deleted`` turns long-deleted samples into tombstones (payload cleared, identity kept)
  instead of removing their rows, or the late sample would come back.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from .. import _validate as v
from .._config import Limits
from .._errors import InvalidData
from .._model import (
    DeletedSamples,
    HealthSample,
    Page,
    PreparedSamples,
    SampleCursor,
    SampleIn,
    SampleKey,
    SampleRecord,
    UpsertCounts,
)
from .._sql import Steps, execute, fetch, fetchrow, fetchval
from .._time import aware, from_micros
from .._tx import Const, Op
from .base import Repo, Row

__all__ = ["SamplePreparer", "Samples"]

_TOMBSTONE_METRIC = ""  # the marker; in SQL text it is written as the literal ''
# The placeholder payload of a tombstone (after the key columns), as SQL literals.
_TOMBSTONE_PAYLOAD = "metric = '', value = 0, unit = '', metadata = '{}', end_at = start_at"

_SAMPLE_COLS = (
    "id, user_id, source_id, source_record_id, metric, value, unit, start_at, end_at, metadata,"
    " revision, created_at, updated_at, deleted_at"
)
_SAMPLE_INSERT = (
    "INSERT INTO health_samples (user_id, source_id, source_record_id, start_at, end_at, metric,"
    " value, unit, metadata, created_at, updated_at)"
)
# revision is 1 exactly when the row was inserted by this statement: that is how
# PostgreSQL splits an upsert's count into inserted and updated. A deleted identity is left
# as it is (the WHERE): no row comes back for it, which is how its refusal is seen.
_SAMPLE_ON_CONFLICT = (
    " ON CONFLICT (user_id, source_id, source_record_id, start_at) DO UPDATE SET"
    " end_at = excluded.end_at, metric = excluded.metric, value = excluded.value,"
    " unit = excluded.unit, metadata = excluded.metadata, updated_at = excluded.updated_at,"
    " revision = health_samples.revision + 1 WHERE health_samples.deleted_at IS NULL"
)
# ``refused`` (1-based positions in the arrays) is worked out only when fewer rows came back
# than went in: the uncorrelated sub-select is an InitPlan, run only if the CASE reaches it.
_PG_UPSERT = (
    "WITH up AS (" + _SAMPLE_INSERT + " SELECT $1, k.s, k.r, k.st, k.en, k.m, k.v, k.u, k.md::jsonb, $10, $10"
    " FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[],"
    " $7::float8[], $8::text[], $9::text[]) AS k(s, r, st, en, m, v, u, md)"
    + _SAMPLE_ON_CONFLICT
    + " RETURNING source_id, source_record_id, start_at, revision)"
    " SELECT count(*) FILTER (WHERE revision = 1) AS inserted, count(*) AS total,"
    " CASE WHEN count(*) < cardinality($2::text[]) THEN ARRAY(SELECT k.i"
    " FROM unnest($2::text[], $3::text[], $4::timestamptz[]) WITH ORDINALITY AS k(s, r, st, i)"
    " WHERE NOT EXISTS (SELECT FROM up WHERE up.source_id = k.s AND up.source_record_id = k.r"
    " AND up.start_at = k.st) ORDER BY k.i) END AS refused FROM up"
)
_SQLITE_CHUNK = 500  # rows per multi-row VALUES statement (8 bound values each)


def _sqlite_upsert(rows: int) -> str:
    # ?1 is the user and ?2 the timestamp, shared by every row; each row binds 8 values.
    values = ",".join(
        f"(?1,?{b + 1},?{b + 2},?{b + 3},?{b + 4},?{b + 5},?{b + 6},?{b + 7},?{b + 8},?2,?2)"
        for b in range(2, 2 + 8 * rows, 8)
    )
    return _SAMPLE_INSERT + " VALUES " + values + _SAMPLE_ON_CONFLICT


_SQLITE_UPSERT_FULL = _sqlite_upsert(_SQLITE_CHUNK)
_SQLITE_MAX_ID = "SELECT coalesce(max(id), 0) FROM health_samples"
_SQLITE_COUNT_ABOVE = "SELECT count(*) FROM health_samples WHERE id > $1"
# The batch's keys that are deleted: after the upsert, exactly the refused ones (nothing
# brings a deleted identity back). CROSS JOIN: probe the natural-key index once per key.
_SQLITE_DELETED_KEYS = (
    "SELECT h.source_id, h.source_record_id, h.start_at FROM json_each($2) AS k CROSS JOIN health_samples AS h"
    " WHERE h.user_id = $1 AND h.source_id = json_extract(k.value, '$[0]')"
    " AND h.source_record_id = json_extract(k.value, '$[1]')"
    " AND h.start_at = json_extract(k.value, '$[2]') AND h.deleted_at IS NOT NULL"
)
# A deletion is an upsert too: a live row is marked deleted, a key with no row becomes a
# tombstone, a deleted one is left alone. One statement, so a sample inserted concurrently
# (PostgreSQL) is found by the conflict check rather than missed by a snapshot. RETURNING
# gives the deleted samples' metrics, and _TOMBSTONE_METRIC for each tombstone.
_DELETE_INSERT = (
    "INSERT INTO health_samples (user_id, source_id, source_record_id, start_at, end_at, metric,"
    " value, unit, metadata, created_at, updated_at, deleted_at)"
)
_DELETE_ON_CONFLICT = (
    " ON CONFLICT (user_id, source_id, source_record_id, start_at) DO UPDATE SET"
    " deleted_at = excluded.deleted_at, updated_at = excluded.updated_at,"
    " revision = health_samples.revision + 1 WHERE health_samples.deleted_at IS NULL"
    " RETURNING metric, start_at"
)
_PG_SOFT_DELETE = (
    _DELETE_INSERT + " SELECT $1, k.s, k.r, k.st, k.st, '', 0, '', '{}', $5, $5, $5"
    " FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS k(s, r, st)" + _DELETE_ON_CONFLICT
)
# "WHERE true": SQLite's parser needs it before ON CONFLICT after INSERT ... SELECT.
_SQLITE_SOFT_DELETE = (
    _DELETE_INSERT + " SELECT $1, json_extract(k.value, '$[0]'), json_extract(k.value, '$[1]'),"
    " json_extract(k.value, '$[2]'), json_extract(k.value, '$[2]'), '', 0.0, '', '{}', $3, $3, $3"
    " FROM json_each($2) AS k WHERE true" + _DELETE_ON_CONFLICT
)
_GET = (
    f"SELECT {_SAMPLE_COLS} FROM health_samples WHERE user_id = $1 AND source_id = $2"
    " AND source_record_id = $3 AND start_at = $4 AND metric <> ''"
)
# query() appends its conditions (joined by AND) and "ORDER BY start_at, id LIMIT $n".
_QUERY_WHERE = f"SELECT {_SAMPLE_COLS} FROM health_samples WHERE "
# The read side's queries (for_projection, sources); $3 is the scan floor, start - lookback.
_FOR_PROJECTION = (
    "SELECT source_id, start_at, end_at, value FROM health_samples WHERE user_id = $1 AND metric = $2"
    " AND deleted_at IS NULL AND start_at >= $3 AND start_at < $5 AND (end_at > $4 OR start_at >= $4)"
    " ORDER BY start_at, id"
)
_SOURCES = (
    "SELECT source_id FROM health_samples WHERE user_id = $1 GROUP BY source_id"
    " ORDER BY min(created_at), min(id), source_id"
)
_SOURCES_MANY = {
    d: "SELECT user_id, source_id FROM health_samples WHERE " + users +
       " GROUP BY user_id, source_id ORDER BY user_id, min(created_at), min(id), source_id"
    for d, users in (("postgresql", "user_id = ANY($1::text[])"),
                     ("sqlite", "user_id IN (SELECT value FROM json_each($1))"))
}
# for_projection_many on PostgreSQL: every wanted (user, metric, window) in one statement; $6 numbers them.
_FOR_PROJECTION_MANY_PG = (
    "SELECT k.i, s.source_id, s.start_at, s.end_at, s.value"
    " FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[], $6::int[])"
    " AS k(u, m, fl, st, en, i) CROSS JOIN LATERAL (SELECT source_id, start_at, end_at, value, id FROM health_samples"
    " WHERE user_id = k.u AND metric = k.m AND deleted_at IS NULL AND start_at >= k.fl AND start_at < k.en"
    " AND (end_at > k.st OR start_at >= k.st)) AS s ORDER BY k.i, s.start_at, s.id"
)
# A sample longer than this that starts before a projection's window is not seen (see for_projection).
LOOKBACK = timedelta(days=2)
_MIN_TS = datetime(1, 1, 2, tzinfo=UTC)
# dump(): a user's live samples as plain values, keyset-paged by (start_at, id); times as µs since the epoch on
# both backends and metadata as its JSON text, so a consumer (an export) encodes them without building objects.
_DUMP_COLS = "id, source_id, source_record_id, metric, value, unit, {start}, {end}, metadata, revision, {updated}"
_DUMP_WHERE = (
    " FROM health_samples WHERE user_id = $1 AND deleted_at IS NULL AND (start_at, id) > ($2, $3)"
    " ORDER BY start_at, id LIMIT $4"
)
_PG_MICROS = "(extract(epoch FROM {0}) * 1000000)::bigint"
_DUMP = {
    "sqlite": "SELECT " + _DUMP_COLS.format(start="start_at", end="end_at", updated="updated_at") + _DUMP_WHERE,
    "postgresql": "SELECT " + _DUMP_COLS.format(start=_PG_MICROS.format("start_at"), end=_PG_MICROS.format("end_at"),
                                                updated=_PG_MICROS.format("updated_at")) + _DUMP_WHERE,
}
# Clears the payload and keeps the row (see the module docstring); health_samples_purgeable
# (a migration of its own) indexes exactly the rows still to clear, so tombstones are never scanned again.
_PURGE_DELETED = (
    f"UPDATE health_samples SET {_TOMBSTONE_PAYLOAD} WHERE id IN (SELECT id FROM health_samples"
    " WHERE deleted_at IS NOT NULL AND metric <> '' AND deleted_at < $1 ORDER BY deleted_at LIMIT $2)"
)


@dataclass(frozen=True, slots=True)
class SamplePreparer:
    """What ``prepare_samples`` needs of a store — its backend and limits — as plain, picklable data,
    so another process (e.g. one that decodes uploads) can prepare rows that store will take."""

    backend: Literal["sqlite", "postgresql"]
    limits: Limits

    def prepare_samples(self, rows: Sequence[SampleIn]) -> PreparedSamples:
        """Check and convert ``rows`` for that store's ``tx.samples.upsert_many`` (no I/O).
        Raises InvalidData exactly as ``upsert_many`` would."""
        norm = v.samples(rows, self.limits, micros=self.backend == "sqlite")
        return PreparedSamples(tuple(norm), self.backend, self.limits)


class Samples(Repo):
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
        """Insert or update samples in one statement per batch. A row whose identity is deleted is
        refused (it stays deleted; its index is in ``refused``), the others go on. Repeats of a
        natural key within ``rows`` count once (the last wins; indices are then those of the
        rows that remain). ``rows`` may come from ``store.prepare_samples`` (checked already)."""
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
            given = norm
            norm = sorted(norm, key=lambda r: (r[0], r[1], r[2]))
            cols = [list(c) for c in zip(*norm, strict=True)]

            def counts(r: Row) -> UpsertCounts:
                positions = r["refused"]
                if not positions:
                    return UpsertCounts(r["inserted"], r["total"] - r["inserted"])
                return UpsertCounts(r["inserted"], r["total"] - r["inserted"],
                                    _indices(given, (norm[p - 1][:3] for p in positions)))

            return self._op(fetchrow(_PG_UPSERT, user, *cols, now), post=counts)

        def steps() -> Steps[UpsertCounts]:
            # SQLite gives a new row rowid max(rowid) + 1 and the writer is alone in its
            # transaction, so rows above the old maximum are exactly the inserted ones:
            # cheaper than RETURNING a row per sample. A refused row is not a change.
            before = yield fetchval(_SQLITE_MAX_ID)
            changed = 0
            for start in range(0, len(norm), _SQLITE_CHUNK):
                chunk = norm[start : start + _SQLITE_CHUNK]
                sql = _SQLITE_UPSERT_FULL if len(chunk) == _SQLITE_CHUNK else _sqlite_upsert(len(chunk))
                changed += yield execute(sql, user, now, *itertools.chain.from_iterable(chunk))
            inserted = yield fetchval(_SQLITE_COUNT_ABOVE, before)
            if changed == len(norm):
                return UpsertCounts(inserted, len(norm) - inserted)
            keys = v.dump_json("keys", [r[:3] for r in norm], 2**62)
            deleted = yield fetch(_SQLITE_DELETED_KEYS, user, keys)
            refused = _indices(norm, (tuple(k) for k in deleted))
            return UpsertCounts(inserted, len(norm) - inserted - len(refused), refused)

        return self._op(steps)

    def soft_delete_many(self, user_id: str, keys: Sequence[SampleKey]) -> Op[DeletedSamples]:
        """Mark live samples deleted (``deleted_at``) and hold each key with no row yet as a
        tombstone (see the module docstring); already deleted keys are skipped."""
        user = self._id("user_id", user_id)
        d = self._d
        norm = v.sample_keys(keys, self._limits, d.ts)
        if not norm:
            return self._op(Const(DeletedSamples(0, ())))
        now = d.ts(self._now())
        if d.name == "postgresql":
            norm.sort()
            s, r, st = (list(c) for c in zip(*norm, strict=True))
            cmd = fetch(_PG_SOFT_DELETE, user, s, r, st, now)
        else:
            cmd = fetch(_SQLITE_SOFT_DELETE, user, v.dump_json("keys", norm, 2**62), now)
        ts = d.ts_out

        def deleted(rows: list[Row]) -> DeletedSamples:
            touched = tuple((r["metric"], ts(r["start_at"])) for r in rows if r["metric"] != _TOMBSTONE_METRIC)
            return DeletedSamples(len(touched), touched, len(rows) - len(touched))

        return self._op(cmd, post=deleted)

    def get(self, user_id: str, key: SampleKey) -> Op[HealthSample | None]:
        """One sample by natural key, deleted or not (a tombstone is none)."""
        ((source, record, start),) = v.sample_keys([key], self._limits, self._d.ts)
        return self._op(
            fetchrow(_GET, self._id("user_id", user_id), source, record, start),
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
            where.append(f"start_at >= {arg(d.ts(aware('start', start)))}")
        if end is not None:
            where.append(f"start_at < {arg(d.ts(aware('end', end)))}")
        if not include_deleted:
            where.append("deleted_at IS NULL")
        elif metric is None:
            where.append("metric <> ''")  # a tombstone is no sample
        if after is not None:
            if not isinstance(after, SampleCursor):
                raise InvalidData("after", "expected a SampleCursor")
            at = arg(d.ts(aware("after.start_at", after.start_at)))
            where.append(f"(start_at, id) > ({at}, {arg(v.integer('after.id', after.id))})")
        size = self._limit(limit)
        sql = _QUERY_WHERE + " AND ".join(where) + f" ORDER BY start_at, id LIMIT {arg(size + 1)}"

        def page(rows: list[Row]) -> Page[HealthSample]:
            items = [self._sample(r) for r in rows[:size]]
            more = len(rows) > size
            return Page(items, SampleCursor(items[-1].start_at, items[-1].id) if more else None)

        return self._op(fetch(sql, *args), post=page)

    def dump(self, user_id: str, *, after: SampleCursor | None = None,
             limit: int = 5_000) -> Op[tuple[list[SampleRecord], SampleCursor | None]]:
        """A page of ``user_id``'s live samples as ``SampleRecord`` values (ordered by (start_at, id)) and the
        cursor of the next page (None at the end): what an export streams."""
        d = self._d
        if after is not None and not isinstance(after, SampleCursor):
            raise InvalidData("after", "expected a SampleCursor")
        start = d.ts(aware("after.start_at", after.start_at)) if after is not None else d.ts(_MIN_TS)
        ident = v.integer("after.id", after.id) if after is not None else 0
        size = self._limit(limit)

        def page(rows: list[Row]) -> tuple[list[SampleRecord], SampleCursor | None]:
            records = [SampleRecord._make(cast(Sequence[Any], r)) for r in rows]
            more = len(records) == size
            last = records[-1] if more else None
            return records, (SampleCursor(from_micros(last.start_us), last.id) if last is not None else None)

        return self._op(fetch(_DUMP[d.name], self._id("user_id", user_id), start, ident, size), post=page)

    def purge_deleted(self, older_than_seconds: float, *, limit: int = 10_000) -> Op[int]:
        """Clear the payload of samples soft-deleted longer ago than this, keeping their rows as
        tombstones (a deleted identity must stay deleted); returns how many."""
        return self._op(
            execute(_PURGE_DELETED, self._older_than(older_than_seconds), self._limit(limit))
        )

    # --- read side: what projections recompute from (kept apart from the upsert path above) -------------

    def for_projection(
        self, user_id: str, metric: str, start: datetime, end: datetime, *, lookback: timedelta = LOOKBACK
    ) -> Op[list[tuple[str, datetime, datetime, float]]]:
        """Live samples of ``metric`` overlapping [start, end) (an instant sample: ``start <= start_at <
        end``), as (source_id, start_at, end_at, value) ordered by (start_at, id).

        The scan reads only samples starting at most ``lookback`` before ``start`` (so it stays on the
        (user, metric, start_at) index): a longer sample that began earlier is not seen.
        """
        d = self._d
        first, last = aware("start", start), aware("end", end)
        floor = first - lookback if first - _MIN_TS > lookback else _MIN_TS
        ts = d.ts_out
        return self._op(
            fetch(_FOR_PROJECTION, self._id("user_id", user_id), self._name("metric", metric), d.ts(floor),
                  d.ts(first), d.ts(last)),
            post=lambda rows: [(r["source_id"], ts(r["start_at"]), ts(r["end_at"]), r["value"]) for r in rows],
        )

    def for_projection_many(
        self, wanted: Sequence[tuple[str, str, datetime, datetime]], *, lookback: timedelta = LOOKBACK
    ) -> Op[list[list[tuple[str, datetime, datetime, float]]]]:
        """``for_projection`` for each (user_id, metric, start, end) of ``wanted``, answered in order: one
        statement on PostgreSQL, one per window on SQLite (in-process: no round trip to save)."""
        d = self._d
        checked = []
        for i, (user_id, metric, start, end) in enumerate(wanted):
            first, last = aware(f"wanted[{i}].start", start), aware(f"wanted[{i}].end", end)
            floor = first - lookback if first - _MIN_TS > lookback else _MIN_TS
            checked.append((self._id(f"wanted[{i}].user_id", user_id), self._name(f"wanted[{i}].metric", metric),
                            floor, first, last))
        ts = d.ts_out

        def steps() -> Steps[list[list[tuple[str, datetime, datetime, float]]]]:
            out: list[list[tuple[str, datetime, datetime, float]]] = [[] for _ in checked]
            if not checked:
                return out
            if d.name == "postgresql":
                cols = list(zip(*checked, strict=True))
                rows = yield fetch(_FOR_PROJECTION_MANY_PG, list(cols[0]), list(cols[1]), list(cols[2]),
                                   list(cols[3]), list(cols[4]), list(range(len(checked))))
                for r in rows:
                    out[r["i"]].append((r["source_id"], ts(r["start_at"]), ts(r["end_at"]), r["value"]))
                return out
            for i, (user, metric, floor, first, last) in enumerate(checked):
                rows = yield fetch(_FOR_PROJECTION, user, metric, d.ts(floor), d.ts(first), d.ts(last))
                out[i] = [(r["source_id"], ts(r["start_at"]), ts(r["end_at"]), r["value"]) for r in rows]
            return out

        return self._op(steps)

    def sources_many(self, user_ids: Sequence[str]) -> Op[dict[str, list[str]]]:
        """``sources`` of each user, in one statement."""
        users = sorted({self._id(f"user_ids[{i}]", u) for i, u in enumerate(user_ids)})
        arg: Any = users if self._d.name == "postgresql" else json.dumps(users)

        return self._op(fetch(_SOURCES_MANY[self._d.name], arg), post=lambda rows: sources_by_user(rows, users))

    def sources(self, user_id: str) -> Op[list[str]]:
        """The user's source ids in the order they were first seen (deleted samples count: seen is seen)."""
        return self._op(fetch(_SOURCES, self._id("user_id", user_id)), post=lambda rows: [r["source_id"] for r in rows])

def sources_by_user(rows: Sequence[Row], users: Sequence[str]) -> dict[str, list[str]]:
    """``_SOURCES_MANY``'s rows as each user's source ids, in first-seen order (none for a user without rows)."""
    out: dict[str, list[str]] = {u: [] for u in users}
    for r in rows:
        out[r["user_id"]].append(r["source_id"])
    return out


def _indices(rows: Sequence[tuple[Any, ...]], keys: Iterable[tuple[Any, ...]]) -> tuple[int, ...]:
    """The indices in ``rows`` of these natural keys, ascending (only on the refusal path)."""
    where = {r[:3]: i for i, r in enumerate(rows)}
    return tuple(sorted(where[k] for k in keys))
