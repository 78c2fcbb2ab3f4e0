"""The session read models the worker runs: session impact, then product impact (issue 12).

``SessionImpacts`` recomputes, from the session entity (``sync_entities``) and the raw heart-rate samples, every
session the work touches: those a ``sync.entity.changed`` names, and those whose window overlaps a local day
whose heart rate changed (``health.samples.changed`` keys, in the user's timezone). A session gone, deleted or
without a start loses its row. Full work (settings changed, an event we cannot read) recomputes all of the
user's sessions. ``ProductImpacts`` runs after it for the same event (``depends_on``) and recomputes the user's
products from the session impacts just committed.

Both subscribe to ``user.settings.changed`` too: it counts in the user's watermark, and a read model that
skipped it could never report ``fresh``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from storage import SessionImpact, SyncEntity, Transaction

from ._impact import SESSION, SessionFacts, product_impacts, session_facts, session_impact
from ._rollups import RollupSample
from ._spans import day_runs
from ._work import SAMPLES_CHANGED, SETTINGS_CHANGED, SYNC_ENTITY_CHANGED, UserWork

SESSION_IMPACT = "session_impact"
PRODUCT_IMPACT = "product_impact"
HEART_RATE = "heart_rate"
_PAGE = 500
_EPSILON = timedelta(microseconds=1)  # sample reads are [from, to): reach a sample starting exactly at "to"
_SUBSCRIBED = frozenset({SAMPLES_CHANGED, SETTINGS_CHANGED, SYNC_ENTITY_CHANGED})


def _touches_sessions(work: UserWork) -> bool:
    return work.full or any(kind == SESSION for kind, _ in work.entities) or bool(work.dates_of(HEART_RATE))


def _named_sessions(work: UserWork) -> set[str]:
    return {ident for kind, ident in work.entities if kind == SESSION}


async def _covered(tx: Transaction, works: Sequence[UserWork]) -> dict[str, set[str]]:
    """Per user of keyed work, the sessions whose window overlaps a local day whose heart rate changed."""
    by_hr = [w for w in works if not w.full and w.dates_of(HEART_RATE)]
    if not by_hr:
        return {}
    (settings,) = await tx.run(tx.users.get_settings_many([w.user_id for w in by_hr]))
    covered = await tx.run(*(tx.session_impacts.covering(
        w.user_id, _day_spans(w.dates_of(HEART_RATE), ZoneInfo(settings[w.user_id].timezone))) for w in by_hr))
    return {w.user_id: ids for w, ids in zip(by_hr, covered, strict=True)}


async def _all_sessions(tx: Transaction, user_id: str) -> list[SyncEntity]:
    found: list[SyncEntity] = []
    after: tuple[str, str] | None = None
    while True:
        (page,) = await tx.run(tx.entities.list(user_id, entity_type=SESSION, after=after, limit=_PAGE))
        found.extend(page)
        if len(page) < _PAGE:
            return found
        after = (SESSION, page[-1].entity_id)


def _day_spans(days: Sequence[date], zone: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """The UTC instants of each run of local days, [first 00:00, last + 1 00:00)."""
    return [(datetime.combine(first, time(0), zone), datetime.combine(last + timedelta(days=1), time(0), zone))
            for first, last in day_runs(days)]


class SessionImpacts:
    """Heart rate before, during and after each session: ``tx.session_impacts``."""

    __slots__ = ()

    @property
    def name(self) -> str:
        return SESSION_IMPACT

    def concerns(self, work: UserWork) -> bool:
        return _touches_sessions(work)

    @property
    def depends_on(self) -> str | None:
        return None

    def subscribes(self, event_type: str) -> bool:
        return event_type in _SUBSCRIBED

    async def project(self, tx: Transaction, work: UserWork) -> None:
        await self.project_many(tx, [work])

    async def project_many(self, tx: Transaction, works: Sequence[UserWork]) -> None:
        todo = [w for w in works if _touches_sessions(w)]
        if not todo:
            return
        covering = await _covered(tx, todo)
        # Each user's sessions to recompute, read from the entities (their current state, whatever the event said).
        entities: dict[str, list[SyncEntity]] = {}
        wanted: dict[str, set[str]] = {}
        partial = [w for w in todo if not w.full]
        for w in todo:
            if w.full:
                entities[w.user_id] = await _all_sessions(tx, w.user_id)
            else:
                wanted[w.user_id] = _named_sessions(w) | covering.get(w.user_id, set())
        found = await tx.run(*(tx.entities.get_many(w.user_id, [(SESSION, i) for i in sorted(wanted[w.user_id])])
                               for w in partial)) if partial else []
        for w, rows in zip(partial, found, strict=True):
            entities[w.user_id] = list(rows.values())
        await self._recompute(tx, todo, entities, wanted)

    async def _recompute(self, tx: Transaction, todo: Sequence[UserWork], entities: dict[str, list[SyncEntity]],
                         wanted: dict[str, set[str]]) -> None:
        facts: list[tuple[str, SessionFacts]] = []
        for w in todo:
            facts.extend((w.user_id, session_facts(e.entity_id, e.data)) for e in entities[w.user_id] if not e.deleted)
        spans = [(user, f, f.span) for user, f in facts]
        readable = [(user, f, span) for user, f, span in spans if span is not None]
        (samples,) = await tx.run(tx.samples.for_projection_many(
            [(user, HEART_RATE, span[0], span[1] + _EPSILON) for user, _, span in readable]))
        impacts: dict[str, list[SessionImpact]] = {w.user_id: [] for w in todo}
        for (user, f, _), rows in zip(readable, samples, strict=True):
            impact = session_impact(user, f, [RollupSample._make(r) for r in rows])
            if impact is not None:
                impacts[user].append(impact)
        for w in todo:
            mine = impacts[w.user_id]
            if w.full:
                tx.defer(tx.session_impacts.write(w.user_id, mine, replace_all=True))
            else:  # named but gone, deleted or without a start: no row
                drop = sorted(wanted[w.user_id] - {i.session_id for i in mine})
                tx.defer(tx.session_impacts.write(w.user_id, mine, drop=drop))


class ProductImpacts:
    """Per product, its ended sessions' impacts averaged: ``tx.product_impacts``. Runs after session impact."""

    __slots__ = ()

    @property
    def name(self) -> str:
        return PRODUCT_IMPACT

    def concerns(self, work: UserWork) -> bool:
        return _touches_sessions(work)

    @property
    def depends_on(self) -> str | None:
        return SESSION_IMPACT

    def subscribes(self, event_type: str) -> bool:
        return event_type in _SUBSCRIBED  # exactly session impact's: each checkpoint has its dependency

    async def project(self, tx: Transaction, work: UserWork) -> None:
        await self.project_many(tx, [work])

    async def project_many(self, tx: Transaction, works: Sequence[UserWork]) -> None:
        todo = [w for w in works if _touches_sessions(w)]
        # Keyed heart-rate work changes a product only through a session it covers (those were just recomputed).
        covering = await _covered(tx, [w for w in todo if not w.full and not _named_sessions(w)])
        todo = [w for w in todo if w.full or _named_sessions(w) or covering.get(w.user_id)]
        if not todo:
            return
        sessions = await tx.run(*(tx.session_impacts.ended_with_product(w.user_id) for w in todo))
        for w, mine in zip(todo, sessions, strict=True):
            tx.defer(tx.product_impacts.replace_all(w.user_id, product_impacts(w.user_id, mine)))


__all__ = ["HEART_RATE", "PRODUCT_IMPACT", "SESSION_IMPACT", "ProductImpacts", "SessionImpacts"]
