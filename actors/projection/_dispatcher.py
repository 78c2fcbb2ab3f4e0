"""The outbox dispatcher: due outbox events in, one checkpoint per (event, subscribed handler) out.

Each round is one unit of work: take a batch of due events, marked completed by the statement that selects them
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of dispatching processes share the work without ever
holding one event twice), create their checkpoints, commit. Nothing is ever half dispatched, so the outbox event needs no lease beyond
that transaction; the work that takes time — a handler running a checkpoint — is what carries a lease and a
heartbeat. Checkpoints for a handler whose worker here can take them now (breaker closed, mailbox not crowded, no
dependency) are created already leased to this process and handed to the worker at once: fresh work costs no
second claim. The rest are created ``pending`` and claimed when due.

The dispatcher wakes at once after a local commit (SQLite) or a PostgreSQL ``NOTIFY`` (``NotificationRelay``),
and polls every ``poll_interval`` as the fallback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kernel import Actor, ActorRef, ActorStopped, MailboxFull
from storage import Checkpoint, CheckpointIn, CheckpointKey, OutboxEvent, Store, StoreError, Transaction

from ._messages import Dispatch, Tick, Wake, Work
from ._work import EventDigest
from ._worker import HandlerGate

log = logging.getLogger("vigil.projection")


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatcherConfig:
    batch: int = 500  # events per unit of work
    lease_seconds: float = 10.0  # of the checkpoints leased to this process's workers
    # The fallback when no wake-up comes; None: none (work moves on wake-ups only, as tests under a mock clock want).
    poll_interval: float | None = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """A handler as the dispatcher sees it; ``worker`` is the worker's path relative to the dispatcher's
    supervisor (refs exist only once the system runs)."""

    name: str
    depends_on: str | None
    subscribes: Callable[[str], bool]
    worker: str
    gate: HandlerGate


def sibling(actor: Actor, relative: str) -> ActorRef:
    """The ref of ``relative`` under ``actor``'s own supervisor."""
    return actor.system.ref(f"{actor.path.rsplit('/', 1)[0]}/{relative}")


def _watermark_range(payload: Any) -> tuple[int | None, int | None]:
    mark = payload.get("watermark") if isinstance(payload, Mapping) else None
    if isinstance(mark, Mapping) and isinstance(mark.get("from"), int) and isinstance(mark.get("to"), int):
        return int(mark["from"]), int(mark["to"])
    return None, None


def fan_out(events: Sequence[OutboxEvent], routes: Sequence[Route],
            ready: frozenset[str]) -> tuple[list[CheckpointIn], list[CheckpointIn]]:
    """The checkpoints of ``events``: (those to lease to this process's ready workers now, the rest). Pure."""
    now: list[CheckpointIn] = []
    later: list[CheckpointIn] = []
    for event in events:
        wm_from, wm_to = _watermark_range(event.payload)
        for route in routes:
            if not route.subscribes(event.type):
                continue
            row = CheckpointIn(event_id=event.id, handler=route.name, user_id=event.user_id, event_type=event.type,
                               depends_on=route.depends_on, wm_from=wm_from, wm_to=wm_to,
                               correlation_id=event.correlation_id)
            (now if route.depends_on is None and route.name in ready else later).append(row)
    return now, later


class OutboxDispatcher(Actor):
    max_batch = 256  # wake-ups that queued while a round ran are answered by the next round together

    def __init__(self, *, store: Store, routes: Sequence[Route], owner: str,
                 config: DispatcherConfig | None = None) -> None:
        self.store = store
        self.routes = tuple(routes)
        self.owner = owner
        self.config = config or DispatcherConfig()
        self.dispatched = 0
        self.workers: dict[str, ActorRef] = {}

    async def started(self) -> None:
        self.workers = {route.name: sibling(self, route.worker) for route in self.routes}
        if self.config.poll_interval is not None:
            self.every(self.config.poll_interval, Dispatch())
        self.send_after(0.0, Dispatch())

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        if any(isinstance(m, Wake | Dispatch) for m in messages):
            while await self._round() >= self.config.batch:
                pass  # a full batch: more may be due
        return [None] * len(messages)

    def _ready(self) -> frozenset[str]:
        ready = set()
        for route in self.routes:
            stats = self.workers[route.name].statistics()
            if route.gate.taking_work and stats.depth * 2 < stats.capacity:
                ready.add(route.name)
        return frozenset(ready)

    async def _round(self) -> int:
        ready = self._ready()
        cfg = self.config

        async def work(tx: Transaction) -> tuple[list[OutboxEvent], list[Checkpoint], set[str]]:
            (events,) = await tx.run(tx.outbox.take(limit=cfg.batch))
            if not events:
                return [], [], set()
            now, later = fan_out(events, self.routes, ready)
            ops = []
            if now:
                ops.append(tx.checkpoints.create_many(now, owner=self.owner, lease_seconds=cfg.lease_seconds))
            if later:
                ops.append(tx.checkpoints.create_many(later))
            results = await tx.commit(*ops)
            return events, (list(results[0]) if now else []), {row.handler for row in later}

        try:
            events, leased, waiting = await self.store.transact(work)
        except StoreError as exc:
            # The database is sick: the events stay due (nothing was committed); the next poll tries again.
            log.warning("outbox dispatch failed: %s", exc)
            return 0
        self.dispatched += len(events)
        await self._hand_over(events, leased)
        for route in self.routes:
            if route.name in waiting:  # its worker claims them as soon as it is free
                route.gate.backlog = True
                with contextlib.suppress(MailboxFull, ActorStopped):
                    self.workers[route.name].tell_nowait(Tick())
        return len(events)

    async def _hand_over(self, events: Sequence[OutboxEvent], leased: Sequence[Checkpoint]) -> None:
        digests = {e.id: EventDigest(event_id=e.id, type=e.type, payload=e.payload) for e in events}
        by_handler: dict[str, list[tuple[Checkpoint, EventDigest | None]]] = {}
        for checkpoint in leased:
            by_handler.setdefault(checkpoint.handler, []).append((checkpoint, digests.get(checkpoint.event_id)))
        refused: list[CheckpointKey] = []
        for route in self.routes:
            items = by_handler.get(route.name)
            if not items:
                continue
            try:
                self.workers[route.name].tell_nowait(Work(items=tuple(items)))
            except (MailboxFull, ActorStopped):
                refused.extend(CheckpointKey(c.event_id, c.handler) for c, _ in items)
        if refused:
            # Back to pending, unattempted: the worker claims them when it has room.
            try:
                async with self.store.transaction() as tx:
                    await tx.commit(tx.checkpoints.release(self.owner, refused))
            except StoreError as exc:
                log.warning("could not hand back %d checkpoints (their leases expire): %s", len(refused), exc)


class NotificationRelay(Actor):
    """Turns the store's outbox notifications (local commits; PostgreSQL LISTEN) into the dispatcher's wake-ups.

    Its one message runs for as long as the actor lives: if the notification stream breaks (a lost connection)
    the actor crashes and its supervisor starts it again with backoff, which subscribes anew.
    """

    def __init__(self, *, store: Store, dispatcher: str) -> None:
        self.store = store
        self.dispatcher_path = dispatcher  # relative to this actor's supervisor

    async def started(self) -> None:
        self.dispatcher = sibling(self, self.dispatcher_path)
        self.send_after(0.0, _Listen())

    async def receive(self, msg: Any) -> Any:
        if not isinstance(msg, _Listen):
            raise TypeError(f"notification relay: unexpected message {msg!r}")
        async with self.store.outbox_notifications() as ids:
            async for _ in ids:
                try:
                    self.dispatcher.tell_nowait(Wake())
                except MailboxFull:
                    pass  # a wake-up is already queued: it will see this event too
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Listen:
    pass


__all__ = ["DispatcherConfig", "NotificationRelay", "OutboxDispatcher", "Route", "fan_out", "sibling"]
