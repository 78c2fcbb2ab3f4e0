"""The session read models (issue 12): heart rate around each consumption session, per product averages,
and the consumption sessions still ``active`` that the stale-session reaper looks at.

Sessions themselves live in ``sync_entities`` (see ``sync``); these tables are projections of them and of the
heart-rate samples, recomputed whole, so every write here replaces rather than patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .. import _validate as v
from .._errors import InvalidData
from .._model import ProductImpact, SessionImpact, SyncEntity
from .._sql import Steps, execute, fetch, fetchrow, fetchval, many
from .._time import aware
from .._tx import Op
from .base import Repo, Row

__all__ = ["ProductImpacts", "SessionImpacts", "Sessions"]

SESSION_TYPE = "consumption_session"

_SESSION_COLS = (
    "user_id, session_id, product_id, status, start_at, end_at, window_from, window_to, stats, delta_during,"
    " delta_after"
)
_UPSERT_SESSION = (
    f"INSERT INTO session_impacts ({_SESSION_COLS}, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
    " $11, $12) ON CONFLICT (user_id, session_id) DO UPDATE SET product_id = excluded.product_id,"
    " status = excluded.status, start_at = excluded.start_at, end_at = excluded.end_at,"
    " window_from = excluded.window_from, window_to = excluded.window_to, stats = excluded.stats,"
    " delta_during = excluded.delta_during, delta_after = excluded.delta_after, updated_at = excluded.updated_at"
)
_DELETE_SESSION = "DELETE FROM session_impacts WHERE user_id = $1 AND session_id = $2"
_DELETE_SESSIONS_OF = "DELETE FROM session_impacts WHERE user_id = $1"
_GET_SESSION = f"SELECT {_SESSION_COLS} FROM session_impacts WHERE user_id = $1 AND session_id = $2"
_ENDED_WITH_PRODUCT = (
    f"SELECT {_SESSION_COLS} FROM session_impacts WHERE user_id = $1 AND status = 'ended'"
    " AND product_id IS NOT NULL ORDER BY product_id, session_id"
)
# The user's sessions that started in [$2, $3), newest first (the AI weekly report's window; migration 9's index).
_STARTED_WITHIN = (
    f"SELECT {_SESSION_COLS} FROM session_impacts WHERE user_id = $1 AND start_at >= $2 AND start_at < $3"
    " ORDER BY start_at DESC, session_id DESC LIMIT $4"
)
# Sessions whose read window overlaps [$2, $3): a heart-rate change there moves their figures.
_COVERING = (
    "SELECT session_id FROM session_impacts WHERE user_id = $1 AND window_from < $3 AND window_to >= $2"
)

_PRODUCT_COLS = "user_id, product_id, sessions, stats, delta_during, delta_after"
_INSERT_PRODUCT = f"INSERT INTO product_impacts ({_PRODUCT_COLS}, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
_DELETE_PRODUCTS_OF = "DELETE FROM product_impacts WHERE user_id = $1"
_LIST_PRODUCTS = f"SELECT {_PRODUCT_COLS} FROM product_impacts WHERE user_id = $1 ORDER BY product_id"

# The predicate repeats the partial index's (migration 4) word for word, so both backends use it.
_ACTIVE = {
    "postgresql": "entity_type = 'consumption_session' AND NOT deleted AND data->>'status' = 'active'",
    "sqlite": "entity_type = 'consumption_session' AND deleted = 0 AND json_extract(data, '$.status') = 'active'",
}
_ACTIVE_SESSIONS = {
    d: f"SELECT user_id, entity_type, entity_id, version, data, deleted, updated_at FROM sync_entities WHERE {w}"
    " AND (user_id, entity_id) > ($1, $2) ORDER BY user_id, entity_id LIMIT $3"
    for d, w in _ACTIVE.items()
}
# A sync change committed but not yet dispatched to the handlers (it has no checkpoint yet): not fresh.
_UNDISPATCHED = (
    "SELECT EXISTS (SELECT 1 FROM outbox_events WHERE status IN ('pending', 'processing') AND user_id = $1"
    " AND type = $2)"
)


def _opt_finite(field: str, value: object) -> float | None:
    return None if value is None else v.finite(field, value)


class SessionImpacts(Repo):
    """Per (user, session): heart rate before, during and after it, and the deltas."""

    __slots__ = ()

    def _row(self, field: str, r: SessionImpact, user: str, now: Any) -> tuple[Any, ...]:
        if not isinstance(r, SessionImpact):
            raise InvalidData(field, "expected a SessionImpact")
        if self._id(f"{field}.user_id", r.user_id) != user:
            raise InvalidData(f"{field}.user_id", "another user's session")
        d = self._d
        first, last = aware(f"{field}.window_from", r.window_from), aware(f"{field}.window_to", r.window_to)
        if last < first:
            raise InvalidData(f"{field}.window_to", "ends before window_from")
        return (
            user,
            self._id(f"{field}.session_id", r.session_id),
            v.opt_text(f"{field}.product_id", r.product_id, self._limits.max_id_chars),
            self._name(f"{field}.status", r.status),
            d.ts(aware(f"{field}.start_at", r.start_at)),
            None if r.end_at is None else d.ts(aware(f"{field}.end_at", r.end_at)),
            d.ts(first),
            d.ts(last),
            self._json(f"{field}.stats", dict(r.stats)),
            _opt_finite(f"{field}.delta_during", r.delta_during),
            _opt_finite(f"{field}.delta_after", r.delta_after),
            now,
        )

    def _impact(self, row: Row) -> SessionImpact:
        d = self._d
        return SessionImpact(row["user_id"], row["session_id"], row["product_id"], row["status"],
                             d.ts_out(row["start_at"]), d.opt_ts_out(row["end_at"]), d.ts_out(row["window_from"]),
                             d.ts_out(row["window_to"]), v.load_json(row["stats"]), row["delta_during"],
                             row["delta_after"])

    def get(self, user_id: str, session_id: str) -> Op[SessionImpact | None]:
        return self._op(fetchrow(_GET_SESSION, self._id("user_id", user_id), self._id("session_id", session_id)),
                        post=lambda row: None if row is None else self._impact(row))

    def ended_with_product(self, user_id: str) -> Op[list[SessionImpact]]:
        """The user's ended sessions that name a product, by (product, session)."""
        return self._op(fetch(_ENDED_WITH_PRODUCT, self._id("user_id", user_id)),
                        post=lambda rows: [self._impact(r) for r in rows])

    def started_within(self, user_id: str, start: datetime, end: datetime, *, limit: int = 50
                       ) -> Op[list[SessionImpact]]:
        """The user's sessions whose ``start_at`` is in [``start``, ``end``), newest first (then by session id,
        descending), at most ``limit`` of them (default 50; at most ``Limits.max_batch_rows``)."""
        first, last = aware("start", start), aware("end", end)
        if last < first:
            raise InvalidData("end", "before start")
        return self._op(fetch(_STARTED_WITHIN, self._id("user_id", user_id), self._d.ts(first), self._d.ts(last),
                              self._limit(limit)),
                        post=lambda rows: [self._impact(r) for r in rows])

    def covering(self, user_id: str, spans: Sequence[tuple[datetime, datetime]]) -> Op[set[str]]:
        """Ids of the user's sessions whose window overlaps any [from, to) of ``spans``."""
        user = self._id("user_id", user_id)
        v.batch("spans", spans, self._limits)
        checked = [(self._d.ts(aware(f"spans[{i}][0]", a)), self._d.ts(aware(f"spans[{i}][1]", b)))
                   for i, (a, b) in enumerate(spans)]

        def steps() -> Steps[set[str]]:
            found: set[str] = set()
            for first, last in checked:
                found.update(r["session_id"] for r in (yield fetch(_COVERING, user, first, last)))
            return found

        return self._op(steps)

    def write(self, user_id: str, rows: Sequence[SessionImpact], *, drop: Sequence[str] = (),
              replace_all: bool = False) -> Op[int]:
        """Upsert ``rows`` and delete the ``drop`` sessions (gone, deleted, no start); ``replace_all``: the rows
        become the user's whole content. Returns the rows written."""
        user = self._id("user_id", user_id)
        v.batch("rows", rows, self._limits)
        v.batch("drop", drop, self._limits)
        now = self._d.ts(self._now())
        norm = [self._row(f"rows[{i}]", r, user, now) for i, r in enumerate(rows)]
        gone = [(user, self._id(f"drop[{i}]", s)) for i, s in enumerate(drop)]

        def steps() -> Steps[int]:
            if replace_all:
                yield execute(_DELETE_SESSIONS_OF, user)
            elif gone:
                yield many(_DELETE_SESSION, gone)
            if norm:
                yield many(_UPSERT_SESSION, norm)
            return len(norm)

        return self._op(steps)


class ProductImpacts(Repo):
    """Per (user, product): its ended sessions' impacts averaged."""

    __slots__ = ()

    def replace_all(self, user_id: str, rows: Sequence[ProductImpact]) -> Op[int]:
        """Make ``rows`` the user's whole content (products that lost their sessions disappear)."""
        user = self._id("user_id", user_id)
        v.batch("rows", rows, self._limits)
        now = self._d.ts(self._now())
        norm = []
        for i, r in enumerate(rows):
            if not isinstance(r, ProductImpact):
                raise InvalidData(f"rows[{i}]", "expected a ProductImpact")
            if self._id(f"rows[{i}].user_id", r.user_id) != user:
                raise InvalidData(f"rows[{i}].user_id", "another user's product")
            norm.append((user, self._id(f"rows[{i}].product_id", r.product_id),
                         v.integer(f"rows[{i}].sessions", r.sessions), self._json(f"rows[{i}].stats", dict(r.stats)),
                         _opt_finite(f"rows[{i}].delta_during", r.delta_during),
                         _opt_finite(f"rows[{i}].delta_after", r.delta_after), now))

        def steps() -> Steps[int]:
            yield execute(_DELETE_PRODUCTS_OF, user)
            if norm:
                yield many(_INSERT_PRODUCT, norm)
            return len(norm)

        return self._op(steps)

    def list(self, user_id: str) -> Op[list[ProductImpact]]:
        return self._op(fetch(_LIST_PRODUCTS, self._id("user_id", user_id)),
                        post=lambda rows: [ProductImpact(r["user_id"], r["product_id"], r["sessions"],
                                                         v.load_json(r["stats"]), r["delta_during"],
                                                         r["delta_after"]) for r in rows])


class Sessions(Repo):
    """Consumption sessions (``sync_entities``) as the stale-session reaper sees them, across users."""

    __slots__ = ()

    def active(self, *, after: tuple[str, str] | None = None, limit: int = 500) -> Op[list[SyncEntity]]:
        """Sessions whose status is ``active`` (not deleted), ordered by (user, session id): keyset paging with
        the last one's (user_id, entity_id) as ``after``."""
        user, session = ("", "") if after is None else (self._id("after[0]", after[0]), self._id("after[1]", after[1]))
        ts = self._d.ts_out
        return self._op(
            fetch(_ACTIVE_SESSIONS[self._d.name], user, session, self._limit(limit)),
            post=lambda rows: [SyncEntity(r["user_id"], r["entity_type"], r["entity_id"], r["version"],
                                          v.load_json(r["data"]), bool(r["deleted"]), ts(r["updated_at"]))
                               for r in rows],
        )

    def undispatched(self, user_id: str, event_type: str) -> Op[bool]:
        """Whether the user has an outbox event of ``event_type`` the dispatcher has not taken yet (its read
        models cannot reflect it, and the checkpoints do not show it yet)."""
        return self._op(fetchval(_UNDISPATCHED, self._id("user_id", user_id), self._name("event_type", event_type)),
                        post=bool)
