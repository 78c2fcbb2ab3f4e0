"""Reading the read models with their freshness (one keyed actor per user), and the outbox's operators' side.

A read returns the rows and, from the same read-only transaction, the user's watermark, the projection's
projected watermark and the state of its unfinished checkpoints. The freshness is read first: on PostgreSQL
(read committed, a snapshot per statement) the rows are then at least as new as the freshness claims.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from kernel import Actor
from storage import (
    Checkpoint,
    DailyRollup,
    DeadLetterItem,
    HandlerLag,
    OutboxStats,
    SleepNight,
    Store,
    StoreError,
    Transaction,
)

from ._freshness import Freshness, decide_freshness
from ._impact_reader import read_product_impact, read_session_impact
from ._messages import ReadNights, ReadProductImpact, ReadRollups, ReadSessionImpact
from ._worker import HandlerGate

log = logging.getLogger("vigil.projection")

ROLLUPS = "daily_rollups"
NIGHTS = "sleep_nights"


@dataclass(frozen=True, slots=True, kw_only=True)
class RollupsView:
    items: tuple[DailyRollup, ...]
    freshness: Freshness


@dataclass(frozen=True, slots=True, kw_only=True)
class NightsView:
    items: tuple[SleepNight, ...]
    freshness: Freshness


async def read_freshness(tx: Transaction, user_id: str, handler: str, gate: HandlerGate | None) -> Freshness:
    marks, projected, state = await tx.run(tx.watermarks.get(user_id), tx.watermarks.projected(user_id, handler),
                                           tx.checkpoints.state(user_id, handler))
    held_back = gate is not None and not gate.taking_work
    return decide_freshness(watermark=marks.watermark, projected=projected, has_dead=state.has_dead,
                            retry_waiting=state.retry_waiting, held_back=held_back)


class ProjectionReader(Actor):
    """One user's reads (keyed by user id; costs nothing while idle)."""

    def __init__(self, user_id: str, *, store: Store, gates: Mapping[str, HandlerGate]) -> None:
        self.user_id = user_id
        self.store = store
        self.gates = gates

    async def receive(self, msg: Any) -> Any:
        match msg:
            case ReadRollups(metric=metric, start=start, end=end):
                async with self.store.transaction(readonly=True) as tx:  # freshness first: see _impact_reader
                    freshness = await read_freshness(tx, self.user_id, ROLLUPS, self.gates.get(ROLLUPS))
                    (rows,) = await tx.run(tx.rollups.read(self.user_id, metric, start, end))
                return RollupsView(items=tuple(rows), freshness=freshness)
            case ReadNights(start=start, end=end):
                async with self.store.transaction(readonly=True) as tx:
                    freshness = await read_freshness(tx, self.user_id, NIGHTS, self.gates.get(NIGHTS))
                    (nights,) = await tx.run(tx.sleep.read(self.user_id, start, end))
                return NightsView(items=tuple(nights), freshness=freshness)
            case ReadSessionImpact(session_id=session_id):
                return await read_session_impact(self.store, self.user_id, session_id, self.gates)
            case ReadProductImpact():
                return await read_product_impact(self.store, self.user_id, self.gates)
            case _:
                raise TypeError(f"projection reader: unexpected message {msg!r}")


# -- the outbox for operators ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class ListDeadLetters:
    """Reply: a list of ``DeadLetterItem`` (keyset paging: ``after`` is the last item's (event id, handler))."""

    after: tuple[int, str] | None
    limit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Replay:
    """Reply: how many dead letters of that event went back to pending (0: no such dead letter)."""

    event_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Discard:
    """Reply: how many dead letters of that event were discarded (0: no such dead letter)."""

    event_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Refresh:
    pass


def discarded_ranges(checkpoints: Iterable[Checkpoint]) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """Per (user, handler), the watermark ranges discarded checkpoints covered: an operator who gives up on a
    change lets the read model's freshness move past it (the change is not reflected, by decision). Pure."""
    ranges: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for c in checkpoints:
        if c.wm_from is not None and c.wm_to is not None:
            ranges.setdefault((c.user_id, c.handler), []).append((c.wm_from, c.wm_to))
    return ranges


class ProjectionGauges:
    """The outbox's and the handlers' figures, refreshed by ``OutboxAdmin`` for metrics and the ops views
    (a scrape must not wait for the database)."""

    def __init__(self) -> None:
        self.outbox: OutboxStats | None = None
        self.lag: tuple[HandlerLag, ...] = ()
        self.refreshed_at = -math.inf  # trio clock
        # Per handler, (events, oldest age in s) this process runs in memory (set by its dispatcher, if any).
        self.in_memory: Callable[[], Mapping[str, tuple[int, float]]] = dict

    def handler_lag(self) -> tuple[HandlerLag, ...]:
        """The stored lag with this process's in-memory work added (as ``processing``)."""
        return with_in_memory(self.lag, self.in_memory())


def with_in_memory(lag: Sequence[HandlerLag], in_memory: Mapping[str, tuple[int, float]]) -> tuple[HandlerLag, ...]:
    """Each handler's stored lag plus the events it runs in memory here: counted as processing, and the
    oldest one's age when older. Pure."""
    out = {row.handler: row for row in lag}
    for handler, (count, age) in in_memory.items():
        row = out.get(handler, HandlerLag(handler, 0, 0, 0, 0, None))
        oldest = age if row.oldest_age_seconds is None else max(age, row.oldest_age_seconds)
        out[handler] = HandlerLag(handler, row.pending, row.processing + count, row.failed, row.dead, oldest)
    return tuple(out[name] for name in sorted(out))


class OutboxAdmin(Actor):
    """Dead letters (list, replay, discard) and the figures behind ``ProjectionGauges``."""

    def __init__(self, *, store: Store, gauges: ProjectionGauges, refresh_interval: float | None = 2.0) -> None:
        self.store = store
        self.gauges = gauges
        self.refresh_interval = refresh_interval

    async def started(self) -> None:
        if self.refresh_interval is not None:
            self.every(self.refresh_interval, _Refresh())
        self.send_after(0.0, _Refresh())

    async def _discard(self, event_id: int) -> int:
        async with self.store.transaction() as tx:
            # Dead events have no lease holder; the per-(user, handler) lock keeps the watermark advance
            # serialized with a worker recomputing the same read model.
            (discarded,) = await tx.run(tx.checkpoints.discard(event_id))
            by_handler: dict[str, dict[str, list[tuple[int, int]]]] = {}
            for (user, handler), ranges in discarded_ranges(discarded.checkpoints).items():
                by_handler.setdefault(handler, {})[user] = ranges
            for handler, users in sorted(by_handler.items()):
                await tx.run(tx.checkpoints.lock_users(list(users), handler))
            await tx.commit(*(tx.watermarks.advance_many(handler, users) for handler, users in sorted(by_handler.items())))
        # A dead event whose dispatch gave up has no checkpoints: its deletion alone is the discard.
        return len(discarded.checkpoints) + int(discarded.event)

    async def receive(self, msg: Any) -> Any:
        match msg:
            case ListDeadLetters(after=after, limit=limit):
                async with self.store.transaction(readonly=True) as tx:
                    (items,) = await tx.commit(tx.checkpoints.list_dead(after=after, limit=limit))
                return list[DeadLetterItem](items)
            case Replay(event_id=event_id):
                async with self.store.transaction() as tx:
                    (count,) = await tx.commit(tx.checkpoints.replay(event_id))
                return int(count)
            case Discard(event_id=event_id):
                return await self._discard(event_id)
            case _Refresh():
                try:
                    async with self.store.transaction(readonly=True) as tx:
                        stats, lag = await tx.commit(tx.outbox.stats(), tx.checkpoints.lag())
                except StoreError as exc:  # keep the last figures (their age shows); the database is sick
                    log.warning("outbox figures not refreshed: %s", exc)
                    return None
                self.gauges.outbox, self.gauges.lag = stats, tuple(lag)
                self.gauges.refreshed_at = trio.current_time()
                return None
            case _:
                raise TypeError(f"outbox admin: unexpected message {msg!r}")


__all__ = ["NIGHTS", "ROLLUPS", "Discard", "ListDeadLetters", "NightsView", "OutboxAdmin", "ProjectionGauges",
           "ProjectionReader", "Replay", "RollupsView", "read_freshness", "with_in_memory"]
