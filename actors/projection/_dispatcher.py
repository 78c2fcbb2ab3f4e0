"""The outbox dispatcher: due outbox events in, each handler's work out — in memory when it can, as checkpoints
when it must.

A round claims due events under a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of dispatching
processes share the work without ever holding one event twice), in a unit of work of its own: one statement, so
nothing but the claim lies between a commit's NOTIFY and the workers. For each event, every subscribed handler
whose worker here can take it now (breaker closed, mailbox not crowded) runs it **in memory**: no checkpoint row
is written, the event stays leased to this process while the workers run, and the dispatcher completes it once
every handler has reported (``Handled``). A dependent handler waits in memory for its dependency and is handed
the event when that one is done. Checkpoint rows are written only for work that cannot finish in memory: a
handler that is not ready (``pending``), one whose unit failed (the worker records it ``failed`` with its
backoff, and its dependents ``pending`` behind it), work a worker hands back. Those retry on their own.

What a round owes the store is written by a flush, one transaction: checkpoints at once (a worker waits for
them), completions and skips (below) ``settle_delay`` after the first is owed, or at once past a batch.

Leases: the dispatcher renews the leases of the events it holds every ``lease_seconds / 3`` (one statement),
so a short lease is safe; an event held longer than ``max_hold`` without a report is no longer renewed and
returns to the queue when its lease lapses. A crashed process's events are due again once their lease expires
and the next claim that looks for expired leases (one a ``poll_interval``) returns them to the queue: recovered
within ``lease_seconds`` plus about two polls. Handlers recompute from raw samples, so a redelivered event is
harmless.

Skips: an event a handler has nothing to do for (``Projection.concerns``: steps, for sleep nights) never reaches
its worker. A flush advances that handler's watermark over the event itself, where it can take the (user,
handler) lock without waiting; where a unit of work holds it, the skip is tried again at the next flush.

The dispatcher wakes at once after a local commit (SQLite) or a PostgreSQL ``NOTIFY`` (``NotificationRelay``),
and polls every ``poll_interval`` as the fallback; a worker's report frees room and owes a completion.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import trio

from kernel import Actor, ActorRef, ActorStopped, MailboxFull
from storage import CheckpointIn, OutboxEvent, Store, StoreError, Transaction

from ._messages import Dispatch, Flush, Flushed, Handled, Renew, Settle, Tick, Wake, Work
from ._plan import Plan, Route, Skip, chunk_ranges, dependency_order, find_skips, plan_dispatch, skip_ranges
from ._work import EventDigest
from ._worker import Publishes

log = logging.getLogger("vigil.projection")


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatcherConfig:
    # Events claimed per round. Per event the database's work is the same whatever the batch; per statement it is
    # not: the no-op pipeline on PostgreSQL ran 16.5k events/s at 500, 19-20k at 1,000, 20.7-21k at 2,000
    # (bench/outbox.py). A round takes only what is due, so light load still runs small batches.
    batch: int = 2_000
    # Of the events this process holds while its workers run them in memory; renewed every lease_seconds / 3.
    lease_seconds: float = 10.0
    # The fallback when no wake-up comes; None: none (work moves on wake-ups only, as tests under a mock clock want).
    poll_interval: float | None = 1.0
    in_flight: int = 8_000  # events held in memory at once: past it the dispatcher claims no more until some finish
    # A backstop: an event held this long without every handler's report is no longer renewed and returns to the
    # queue when its lease lapses. Workers report every outcome (a unit is bounded by the handler's timeout), so
    # only a bug reaches it. None: no backstop (tests under a mock clock, where trio's time jumps during I/O).
    max_hold: float | None = 600.0
    # Completions and skips go to the flusher this long after the first is owed (at once past a batch): one
    # transaction for many, and a completion only tidies the queue (the read model and its watermark are committed).
    settle_delay: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.batch <= self.in_flight <= 10_000:
            raise ValueError(f"dispatcher: need 0 < batch ({self.batch}) <= in_flight ({self.in_flight}) <= 10000")
        if not 0 < self.lease_seconds < (self.max_hold if self.max_hold is not None else float("inf")):
            raise ValueError(f"dispatcher: need 0 < lease_seconds ({self.lease_seconds}) < max_hold "
                             f"({self.max_hold})")

    @property
    def heartbeat(self) -> float:
        return self.lease_seconds / 3


def sibling(actor: Actor, relative: str) -> ActorRef:
    """The ref of ``relative`` under ``actor``'s own supervisor."""
    return actor.system.ref(f"{actor.path.rsplit('/', 1)[0]}/{relative}")


class HeldFigures(Protocol):
    """Where the dispatcher publishes a reader of the work it holds in memory (``ProjectionGauges``)."""

    in_memory: Callable[[], Mapping[str, tuple[int, float]]]


@dataclass(slots=True)
class _Held:
    """An event this process holds while handlers run it in memory."""

    digest: EventDigest
    since: float  # trio time of the claim
    running: set[str] = field(default_factory=set)
    waiting: dict[str, list[CheckpointIn]] = field(default_factory=dict)  # dependency -> dependents' rows


def in_memory_lag(held: Mapping[int, _Held], now: float) -> dict[str, tuple[int, float]]:
    """Per handler: the events held here that it runs or waits to run in memory, and the oldest one's age in
    seconds. Pure."""
    out: dict[str, tuple[int, float]] = {}
    for event in held.values():
        names = set(event.running)
        for rows in event.waiting.values():
            names.update(row.handler for row in rows)
        for name in names:
            count, age = out.get(name, (0, 0.0))
            out[name] = (count + 1, max(age, now - event.since))
    return out


class OutboxDispatcher(Actor):
    max_batch = 256  # wake-ups and reports that queued while a round ran are answered by the next round together

    def __init__(self, *, store: Store, routes: Sequence[Route], owner: str,
                 config: DispatcherConfig | None = None, gauges: HeldFigures | None = None,
                 publisher: Publishes | None = None, flusher: str = "flusher") -> None:
        """``gauges``: where operators' figures read the work held in memory here (``in_memory``);
        ``publisher``: told when a skip moved a user's read model on (as workers tell it after a unit);
        ``flusher``: the ``OutboxFlusher`` beside this actor, which writes what it owes."""
        self.flusher = flusher
        self.store = store
        self.gauges = gauges
        self.publisher = publisher
        self.routes = dependency_order(routes)
        self.owner = owner
        self.config = config or DispatcherConfig()
        self.dispatched = 0
        self.workers: dict[str, ActorRef] = {}
        self._held: dict[int, _Held] = {}
        # What the next round's transaction owes the store: checkpoints to create, events to complete.
        self._to_store: list[CheckpointIn] = []
        self._to_complete: list[int] = []
        self._to_hand: dict[str, list[tuple[CheckpointIn, EventDigest]]] = {}
        # Skips whose watermark advance is still to be written (not flushed yet, or the user's lock was held).
        self._to_skip: list[Skip] = []
        self._capped = False  # the last claim was cut short by ``in_flight``
        self._settle_due = False  # a flush is asked for soon
        self._flushing = False  # a flush is with the flusher
        self._expired_at = -float("inf")  # trio time of the last claim that returned expired leases
        # Never past the store's batch limit (a smaller ``max_batch_rows`` than ``batch`` caps every round).
        self._batch = min(self.config.batch, store.config.limits.max_batch_rows)
        self._gates = {route.name: route.gate for route in self.routes}
        # One heartbeat at a time, and only while events are held: a periodic timer would queue beats while a
        # round waits on the database (under a mock clock, enough to fill the mailbox and lose a wake-up).
        self._beat_due = False

    async def started(self) -> None:
        self.workers = {route.name: sibling(self, route.worker) for route in self.routes}
        self._flusher = sibling(self, self.flusher)
        if self.gauges is not None:
            held = self._held
            self.gauges.in_memory = lambda: in_memory_lag(held, trio.current_time())
        if self.config.poll_interval is not None:
            self.every(self.config.poll_interval, Dispatch())
        self.send_after(0.0, Dispatch())

    async def stopping(self) -> None:
        # Completed work is recorded; events still held go back to the queue now rather than when their leases
        # lapse (a worker still finishing one only repeats a recompute).
        try:
            async with self.store.transaction() as tx:
                await tx.commit(*owed_ops(tx, self.owner, self._to_store, self._to_complete,
                                          self.store.config.limits.max_batch_rows), tx.outbox.release(self.owner))
        except StoreError as exc:
            log.warning("outbox dispatcher: could not hand back %d held events (their leases lapse): %s",
                        len(self._held), exc)
        self._held.clear()

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        claim = renew = settle = False
        ready = self._ready()
        for msg in messages:
            match msg:
                case Handled():
                    self._report(msg, ready)
                case Wake() | Dispatch():
                    claim = True
                case Settle():
                    self._settle_due = False
                    settle = True
                case Flushed():
                    self._flushed(msg, ready)
                case Renew():
                    renew = True
                case _:
                    log.error("outbox dispatcher: unexpected message %r", msg)
        self._hand_over()
        if renew:
            self._beat_due = False
            await self._renew()
        # A report frees room: claim again at once if the last claim was cut short by the in-flight bound.
        claim = claim or (self._capped and len(self._held) < self.config.in_flight)
        if claim:
            await self._drain()
        if self._to_store or self._owed_much() or (settle and (self._to_complete or self._to_skip)):
            self._flush()
        if self._held and not self._beat_due:
            self._beat_due = True
            self.send_after(self.config.heartbeat, Renew())
        if (self._to_complete or self._to_skip) and not self._settle_due:
            # Completions and skips are written together, settle_delay after the first is owed (at once past a
            # batch): a claim alone is one statement, and the path to the read model goes through claims only.
            self._settle_due = True
            self.send_after(self.config.settle_delay, Settle())
        return [None] * len(messages)

    def _ready(self) -> frozenset[str]:
        ready = set()
        for route in self.routes:
            stats = self.workers[route.name].statistics()
            if route.gate.taking_work and stats.depth * 2 < stats.capacity:
                ready.add(route.name)
        return frozenset(ready)

    # -- rounds ------------------------------------------------------------------------------------------
    async def _drain(self) -> None:
        while (claimed := await self._round()) is not None and claimed >= self._batch:
            pass  # a full batch: more may be due

    def _owed_much(self) -> bool:
        return len(self._to_complete) + len(self._to_skip) >= self._batch

    async def _round(self) -> int | None:
        """A claim, when there is room, in a unit of work of its own (one statement on PostgreSQL; two once a poll
        interval, when it first returns expired leases to the queue), its in-memory work handed to the workers at
        once. Returns the number of events claimed, None when the database failed."""
        cfg = self.config
        limit = min(self._batch, cfg.in_flight - len(self._held))
        self._capped = limit < self._batch
        if limit <= 0:
            return 0
        try:
            async with self.store.transaction() as tx:
                (events,) = await tx.commit(tx.outbox.claim(self.owner, limit=limit, lease_seconds=cfg.lease_seconds,
                                                            expire=self._expiring()))
        except StoreError as exc:  # nothing was claimed
            log.warning("outbox dispatch failed: %s", exc)
            return None
        self.dispatched += len(events)
        if events:
            self._dispatch(events)
        return len(events)

    def _dispatch(self, events: Sequence[OutboxEvent]) -> None:
        """Claimed events: in-memory work handed over, skips and the rest owed to the next flush."""
        skips = find_skips(events, self.routes)
        plan = plan_dispatch(events, self.routes, self._ready(), frozenset((k.event_id, k.handler) for k in skips))
        advancing = [k for k in skips if k.wm is not None]
        waiting = {k.event_id for k in advancing}
        self._hold(events, plan, advancing)
        self._hand_over()
        self._to_store += plan.store
        self._to_complete += [event_id for event_id in plan.finished if event_id not in waiting]
        self._to_skip += advancing
        self._count_done(k.handler for k in skips if k.wm is None)

    def _flush(self) -> None:
        """Hand what is owed to the flusher (one flush at a time: the next one takes what piles up meanwhile)."""
        if self._flushing or not (self._to_store or self._to_complete or self._to_skip):
            return
        flush = Flush(to_store=tuple(self._to_store), to_complete=tuple(self._to_complete),
                      to_skip=tuple(self._to_skip))
        try:
            self._flusher.tell_nowait(flush)
        except (MailboxFull, ActorStopped) as exc:  # kept: the next settle tries again
            log.warning("outbox dispatcher: the flusher took nothing (%s): kept for the next flush", exc)
            return
        self._to_store, self._to_complete, self._to_skip = [], [], []
        self._flushing = True

    def _flushed(self, msg: Flushed, ready: frozenset[str]) -> None:
        self._flushing = False
        flush = msg.flush
        if msg.advanced is None:  # nothing was written: owed still, before what came since
            self._to_store[:0] = flush.to_store
            self._to_complete[:0] = flush.to_complete
            self._to_skip[:0] = flush.to_skip
            return
        self._skipped(flush.to_skip, msg.advanced, ready)
        for route in self.routes:
            if any(row.handler == route.name for row in flush.to_store):  # its worker claims them as soon as it is free
                route.gate.backlog = True
                with contextlib.suppress(MailboxFull, ActorStopped):
                    self.workers[route.name].tell_nowait(Tick())

    def _expiring(self) -> bool:
        """Whether this claim first returns expired leases to the queue: once a poll interval (every claim when
        there is no poll), not in every claim of a busy dispatcher (a statement on the path to the read model)."""
        now, every = trio.current_time(), self.config.poll_interval
        if every is None or now - self._expired_at >= every:
            self._expired_at = now
            return True
        return False

    def _count_done(self, handlers: Iterable[str]) -> None:
        for name in handlers:
            self._gates[name].completed += 1

    def _skipped(self, skips: Sequence[Skip], advanced: Mapping[str, Mapping[str, int]], ready: frozenset[str]
                 ) -> None:
        """The skips whose advance was written are done (counted as their handlers' completions, the new marks
        told to the publisher); those whose user's lock was held are tried again at the next flush. (No dependent
        waits on a skip: ``plan_dispatch`` counts a skipped dependency as done.)"""
        told: dict[tuple[str, str], str | None] = {}
        for skip in skips:
            if skip.user_id in advanced.get(skip.handler, {}):
                self._gates[skip.handler].completed += 1
                self._resolve(skip.handler, skip.event_id, "done", ready)
                told[(skip.handler, skip.user_id)] = skip.correlation_id
            elif skip.event_id in self._held:
                self._to_skip.append(skip)
        if self.publisher is not None:
            for (handler, user), correlation in told.items():
                self.publisher.projection_updated(user_id=user, handler=handler, projected=advanced[handler][user],
                                                  correlation_id=correlation)

    def _hold(self, events: Sequence[OutboxEvent], plan: Plan, skips: Sequence[Skip]) -> None:
        now = trio.current_time()
        digests = {e.id: EventDigest(event_id=e.id, type=e.type, payload=e.payload) for e in events}
        for skip in skips:  # held until the handler's watermark advance over it is written
            held = self._held.get(skip.event_id)
            if held is None:
                held = self._held[skip.event_id] = _Held(digests[skip.event_id], now)
            held.running.add(skip.handler)
        for handler, rows in plan.run.items():
            for row in rows:
                held = self._held.get(row.event_id)
                if held is None:
                    held = self._held[row.event_id] = _Held(digests[row.event_id], now)
                held.running.add(handler)
                self._to_hand.setdefault(handler, []).append((row, held.digest))
        for event_id, waits in plan.hold.items():
            held = self._held[event_id]  # its dependency runs in memory, so the event is held
            for dependency, rows in waits.items():
                held.waiting.setdefault(dependency, []).extend(rows)

    def _hand_over(self) -> None:
        to_hand, self._to_hand = self._to_hand, {}
        for handler, items in to_hand.items():
            try:
                self.workers[handler].tell_nowait(Work(items=tuple(items), in_memory=True))
            except (MailboxFull, ActorStopped):
                # Stored pending instead: the worker claims them when it has room.
                for row, _ in items:
                    self._to_store.append(replace(row, depends_on=None))
                    self._resolve(handler, row.event_id, "stored", frozenset())

    # -- reports -----------------------------------------------------------------------------------------
    def _report(self, msg: Handled, ready: frozenset[str]) -> None:
        for event_id in msg.done:
            self._resolve(msg.handler, event_id, "done", ready)
        for event_id in msg.stored:
            self._resolve(msg.handler, event_id, "stored", ready)
        for event_id in msg.dropped:
            self._resolve(msg.handler, event_id, "dropped", ready)

    def _resolve(self, handler: str, event_id: int, outcome: str, ready: frozenset[str]) -> None:
        held = self._held.get(event_id)
        if held is None or handler not in held.running:
            return  # no longer held here (past max_hold, a restart): its lease decides
        if outcome == "dropped":
            del self._held[event_id]  # not renewed any more: the event is redelivered whole when its lease lapses
            return
        held.running.discard(handler)
        for row in held.waiting.pop(handler, ()):
            if outcome == "done" and row.handler in ready:
                held.running.add(row.handler)
                self._to_hand.setdefault(row.handler, []).append((replace(row, depends_on=None), held.digest))
            else:
                # Its dependency completed in memory (no row to wait for) or is stored now (wait for that row).
                self._to_store.append(replace(row, depends_on=None) if outcome == "done" else row)
                self._store_waiting(held, row.handler)
        if not held.running and not held.waiting:
            del self._held[event_id]
            self._to_complete.append(event_id)

    def _store_waiting(self, held: _Held, dependency: str) -> None:
        """``dependency`` is stored as a checkpoint: whatever waited for it in memory waits for that row."""
        for row in held.waiting.pop(dependency, ()):
            self._to_store.append(row)
            self._store_waiting(held, row.handler)

    async def _renew(self) -> None:
        now, limit = trio.current_time(), self.config.max_hold
        overdue = [] if limit is None else [event_id for event_id, held in self._held.items() if now - held.since > limit]
        for event_id in overdue:
            del self._held[event_id]
        if overdue:
            log.warning("outbox dispatcher: %d events were held past %g s without every handler's report; left to "
                        "their leases", len(overdue), self.config.max_hold)
        if not self._held:
            return
        try:
            ids, chunk = list(self._held), self.store.config.limits.max_batch_rows
            async with self.store.transaction() as tx:
                await tx.commit(*(tx.outbox.renew_many(self.owner, ids[i:i + chunk],
                                                       lease_seconds=self.config.lease_seconds)
                                  for i in range(0, len(ids), chunk)))
        except StoreError as exc:  # the next beat tries again; past the lease another process may take them
            log.warning("outbox dispatcher: lease renewal failed: %s", exc)


class OutboxFlusher(Actor):
    """Writes what the dispatcher owes the store (``Flush``), in one transaction, beside its claims: checkpoints,
    the skips' watermark advances (where the user's lock is free), completions. Answers ``Flushed``."""

    def __init__(self, *, store: Store, owner: str, dispatcher: str = "dispatcher") -> None:
        self.store = store
        self.owner = owner
        self.dispatcher_path = dispatcher
        self._batch = store.config.limits.max_batch_rows

    async def started(self) -> None:
        self.dispatcher = sibling(self, self.dispatcher_path)

    async def receive(self, msg: Any) -> Any:
        if not isinstance(msg, Flush):
            raise TypeError(f"outbox flusher: unexpected message {msg!r}")
        pieces = chunk_ranges(skip_ranges(msg.to_skip), self._batch)
        advanced: dict[str, dict[str, int]] = {}
        try:
            async with self.store.transaction() as tx:
                results = await tx.commit(*(tx.watermarks.advance_where_free(p) for p in pieces),
                                          *owed_ops(tx, self.owner, msg.to_store, msg.to_complete, self._batch))
        except Exception as exc:  # noqa: BLE001 - the dispatcher waits for an answer to every flush, whatever failed
            log.warning("outbox flusher: could not write what the dispatcher owes (kept for the next flush): %s", exc,
                        exc_info=not isinstance(exc, StoreError))
            answer = Flushed(flush=msg, advanced=None)
        else:
            for piece in results[:len(pieces)]:
                for handler, marks in piece.items():
                    advanced.setdefault(handler, {}).update(marks)
            answer = Flushed(flush=msg, advanced=advanced)
        with contextlib.suppress(ActorStopped):  # a dispatcher gone for good: the events' leases decide
            await self.dispatcher.tell(answer)
        return None


def owed_ops(tx: Transaction, owner: str, to_store: Sequence[CheckpointIn], to_complete: Sequence[int],
             chunk: int) -> list[Any]:
    """Checkpoints to create, then events to complete (an event is done only once all its remaining work is
    stored), in statements of at most ``chunk`` rows (a breaker that opened with thousands of events held stores
    a row per handler each)."""
    ops: list[Any] = [tx.checkpoints.create_many(to_store[i:i + chunk]) for i in range(0, len(to_store), chunk)]
    ops += [tx.outbox.complete_many(owner, to_complete[i:i + chunk]) for i in range(0, len(to_complete), chunk)]
    return ops


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


__all__ = ["DispatcherConfig", "HeldFigures", "NotificationRelay", "OutboxDispatcher", "OutboxFlusher", "in_memory_lag",
           "owed_ops", "sibling"]
