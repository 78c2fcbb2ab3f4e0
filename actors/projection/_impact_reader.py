"""Reading the session read models with their freshness (the user's ``ProjectionReader`` runs these).

A session's impact is readable only by its owner and only while the session exists (``sync_entities``, not
deleted): anything else reads as None (the service raises ``NoSession``: 404), another user's session included. A session that exists but has
no impact yet (still computing, or no ``startAt``) reads with null figures.

Freshness covers every handler the view depends on (product impact: session impact too), and counts the sync
changes the watermark does not: their unfinished checkpoints, and events not dispatched yet.

FRESHNESS_FIRST: the freshness is read before the rows. PostgreSQL's read committed gives each statement its own
snapshot, so rows read first could predate work that completes before the freshness is read, which would then
claim what the rows do not show; read the other way round, the rows are at least as new as the freshness says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from storage import ProductImpact, SessionImpact, Store, Transaction

from ._freshness import Freshness, decide_freshness
from ._impact import SESSION, session_facts
from ._sessions import PRODUCT_IMPACT, SESSION_IMPACT
from ._work import SYNC_ENTITY_CHANGED
from ._worker import HandlerGate


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionImpactView:
    session_id: str
    status: str | None  # the session's current status (its entity), whatever the impact reflects yet
    product_id: str | None
    impact: SessionImpact | None  # None: not computed yet, or the session has no start
    freshness: Freshness


@dataclass(frozen=True, slots=True, kw_only=True)
class ProductImpactView:
    items: tuple[ProductImpact, ...]
    freshness: Freshness


async def impact_freshness(tx: Transaction, user_id: str, handlers: Sequence[str],
                           gates: Mapping[str, HandlerGate]) -> Freshness:
    """One freshness over ``handlers`` (the view is as fresh as the least fresh of them). ``gates`` only tell
    ``stale`` (a handler held back) from ``computing``; without them nothing reads ``stale``, and ``fresh`` is
    the same either way (public for the AI weekly report, which caches only what was read fresh)."""
    marks, undispatched, *rest = await tx.run(
        tx.watermarks.get(user_id), tx.sessions.undispatched(user_id, SYNC_ENTITY_CHANGED),
        *(tx.watermarks.projected(user_id, h) for h in handlers), *(tx.checkpoints.state(user_id, h) for h in handlers))
    projected, states = rest[:len(handlers)], rest[len(handlers):]
    held_back = any(h in gates and not gates[h].taking_work for h in handlers)
    return decide_freshness(watermark=marks.watermark, projected=min(projected), held_back=held_back,
                            has_dead=any(s.has_dead for s in states),
                            retry_waiting=any(s.retry_waiting for s in states),
                            unfinished=sum(s.unfinished for s in states) + int(undispatched))


async def read_session_impact(store: Store, user_id: str, session_id: str,
                              gates: Mapping[str, HandlerGate]) -> SessionImpactView | None:
    async with store.transaction(readonly=True) as tx:
        freshness = await impact_freshness(tx, user_id, [SESSION_IMPACT], gates)  # first: see ``FRESHNESS_FIRST``
        entity, impact = await tx.run(tx.entities.get(user_id, SESSION, session_id),
                                      tx.session_impacts.get(user_id, session_id))
        if entity is None or entity.deleted:
            return None
    facts = session_facts(session_id, entity.data)
    return SessionImpactView(session_id=session_id, status=facts.status, product_id=facts.product_id, impact=impact,
                             freshness=freshness)


async def read_product_impact(store: Store, user_id: str, gates: Mapping[str, HandlerGate]) -> ProductImpactView:
    async with store.transaction(readonly=True) as tx:
        freshness = await impact_freshness(tx, user_id, [SESSION_IMPACT, PRODUCT_IMPACT], gates)
        (items,) = await tx.run(tx.product_impacts.list(user_id))
    return ProductImpactView(items=tuple(items), freshness=freshness)


__all__ = ["ProductImpactView", "SessionImpactView", "impact_freshness", "read_product_impact",
           "read_session_impact"]
