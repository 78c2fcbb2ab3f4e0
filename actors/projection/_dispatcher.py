"""The outbox dispatcher: due outbox events in, each handler's work out — in memory when it can, as checkpoints
when it must.

A round is one transaction: what earlier rounds owe the store (completions, checkpoints), then a claim of due
events under a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of dispatching processes share
the work without ever holding one event twice). For each event, every subscribed handler whose worker here can
take it now (breaker closed, mailbox not crowded) runs it **in memory**: no checkpoint row is written, the event
stays leased to this process while the workers run, and the dispatcher completes it once every handler has
reported (``Handled``). A dependent handler waits in memory for its dependency and is handed the event when
that one is done. Checkpoint rows are written only for work that cannot finish in memory: a handler that is
not ready (``pending``), one whose unit failed (the worker records it ``failed`` with its backoff, and its
dependents ``pending`` behind it), work a worker hands back. Those retry on their own, as before.

Leases: the dispatcher renews the leases of the events it holds every ``lease_seconds / 3`` (one statement),
so a short lease is safe; an event held longer than ``max_hold`` without a report is no longer renewed and
returns to the queue when its lease lapses. A crashed process's events are due again once their lease expires
and are claimed at the next round of any process: recovered within ``lease_seconds`` plus one poll
(the claim expires old leases first). Handlers recompute from raw samples, so a redelivered event is harmless.

The dispatcher wakes at once after a local commit (SQLite) or a PostgreSQL ``NOTIFY`` (``NotificationRelay``),
on a worker's report, and polls every ``poll_interval`` as the fallback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import trio

from kernel import Actor, ActorRef, ActorStopped, MailboxFull
from storage import CheckpointIn, OutboxEvent, Store, StoreError, Transaction

from ._messages import Dispatch, Handled, Renew, Tick, Wake, Work
from ._work import EventDigest
from ._worker import HandlerGate

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

    def __post_init__(self) -> None:
        if not 0 < self.batch <= self.in_flight <= 10_000:
            raise ValueError(f"dispatcher: need 0 < batch ({self.batch}) <= in_flight ({self.in_flight}) <= 10000")
        if not 0 < self.lease_seconds < (self.max_hold if self.max_hold is not None else float("inf")):
            raise ValueError(f"dispatcher: need 0 < lease_seconds ({self.lease_seconds}) < max_hold "
                             f"({self.max_hold})")

    @property
    def heartbeat(self) -> float:
        return self.lease_seconds / 3


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


def dependency_order(routes: Sequence[Route]) -> tuple[Route, ...]:
    """``routes`` with every dependency before its dependents (stable otherwise); a cycle is refused."""
    by_name = {r.name: r for r in routes}
    ordered: list[Route] = []
    placed: set[str] = set()

    def place(route: Route, path: tuple[str, ...]) -> None:
        if route.name in placed:
            return
        if route.name in path:
            raise ValueError(f"projection handlers depend on each other in a cycle: {' -> '.join(path + (route.name,))}")
        dep = by_name.get(route.depends_on) if route.depends_on else None
        if dep is not None:
            place(dep, path + (route.name,))
        placed.add(route.name)
        ordered.append(route)

    for route in routes:
        place(route, ())
    return tuple(ordered)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a round does with the events it claimed (see ``plan_dispatch``)."""

    run: dict[str, list[CheckpointIn]]  # per handler: run in memory now
    hold: dict[int, dict[str, list[CheckpointIn]]]  # per event, per dependency running in memory: dependents' rows
    store: list[CheckpointIn]  # checkpoints to create pending
    finished: list[int]  # events nothing runs in memory: complete them in the round's transaction


def plan_dispatch(events: Sequence[OutboxEvent], routes: Sequence[Route], ready: frozenset[str]) -> Plan:
    """Each event's work per subscribed handler (``routes`` in ``dependency_order``). Pure.

    A handler in ``ready`` with no dependency runs in memory; a dependent whose dependency runs in memory waits
    for it in memory (handed over or stored when it reports); anything else becomes a pending checkpoint, with
    its ``depends_on`` when the dependency is stored too."""
    run: dict[str, list[CheckpointIn]] = {}
    hold: dict[int, dict[str, list[CheckpointIn]]] = {}
    store: list[CheckpointIn] = []
    finished: list[int] = []
    for event in events:
        wm_from, wm_to = _watermark_range(event.payload)
        in_memory: set[str] = set()
        for route in routes:
            if not route.subscribes(event.type):
                continue
            row = CheckpointIn(event_id=event.id, handler=route.name, user_id=event.user_id, event_type=event.type,
                               depends_on=route.depends_on, wm_from=wm_from, wm_to=wm_to,
                               correlation_id=event.correlation_id)
            if route.depends_on is not None and route.depends_on in in_memory:
                hold.setdefault(event.id, {}).setdefault(route.depends_on, []).append(row)
                in_memory.add(route.name)
            elif route.depends_on is None and route.name in ready:
                run.setdefault(route.name, []).append(row)
                in_memory.add(route.name)
            else:
                store.append(row)
        if not in_memory:
            finished.append(event.id)
    return Plan(run=run, hold=hold, store=store, finished=finished)


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
                 config: DispatcherConfig | None = None, gauges: HeldFigures | None = None) -> None:
        """``gauges``: where operators' figures read the work held in memory here (``in_memory``)."""
        self.store = store
        self.gauges = gauges
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
        self._capped = False  # the last claim was cut short by ``in_flight``
        # Never past the store's batch limit (a smaller ``max_batch_rows`` than ``batch`` caps every round).
        self._batch = min(self.config.batch, store.config.limits.max_batch_rows)
        # One heartbeat at a time, and only while events are held: a periodic timer would queue beats while a
        # round waits on the database (under a mock clock, enough to fill the mailbox and lose a wake-up).
        self._beat_due = False

    async def started(self) -> None:
        self.workers = {route.name: sibling(self, route.worker) for route in self.routes}
        if self.gauges is not None:
            held = self._held
            self.gauges.in_memory = lambda: in_memory_lag(held, trio.current_time())
        if self.config.poll_interval is not None:
            self.every(self.config.poll_interval, Dispatch())
        self.send_after(0.0, Dispatch())

    async def stopping(self) -> None:
        # Completed work is recorded; events still held go back to the queue now rather than when their leases
        # lapse (a worker still finishing one only repeats a recompute).
        to_store, to_complete = self._take_owed()
        try:
            async with self.store.transaction() as tx:
                await tx.commit(*self._owed_ops(tx, to_store, to_complete), tx.outbox.release(self.owner))
        except StoreError as exc:
            log.warning("outbox dispatcher: could not hand back %d held events (their leases lapse): %s",
                        len(self._held), exc)
        self._held.clear()

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        claim = renew = False
        ready = self._ready()
        for msg in messages:
            match msg:
                case Handled():
                    self._report(msg, ready)
                case Wake() | Dispatch():
                    claim = True
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
        if claim or self._to_store or self._to_complete:
            await self._drain(claim)
        if self._held and not self._beat_due:
            self._beat_due = True
            self.send_after(self.config.heartbeat, Renew())
        return [None] * len(messages)

    def _ready(self) -> frozenset[str]:
        ready = set()
        for route in self.routes:
            stats = self.workers[route.name].statistics()
            if route.gate.taking_work and stats.depth * 2 < stats.capacity:
                ready.add(route.name)
        return frozenset(ready)

    # -- rounds ------------------------------------------------------------------------------------------
    async def _drain(self, claim: bool) -> None:
        while True:
            claimed = await self._round(claim)
            if claimed is None:
                return  # the database is sick: the next poll tries again
            if claimed >= self._batch:
                claim = True  # a full batch: more may be due
            elif not (self._to_store or self._to_complete):
                return

    def _take_owed(self) -> tuple[list[CheckpointIn], list[int]]:
        owed = self._to_store, self._to_complete
        self._to_store, self._to_complete = [], []
        return owed

    def _owed_ops(self, tx: Transaction, to_store: Sequence[CheckpointIn], to_complete: Sequence[int]) -> list[Any]:
        # The checkpoints first: an event is done only once all its remaining work is stored. In chunks under the
        # store's batch limit (a breaker that opened with thousands of events held stores a row per handler each).
        chunk = self.store.config.limits.max_batch_rows
        ops: list[Any] = [tx.checkpoints.create_many(to_store[i:i + chunk]) for i in range(0, len(to_store), chunk)]
        ops += [tx.outbox.complete_many(self.owner, to_complete[i:i + chunk])
                for i in range(0, len(to_complete), chunk)]
        return ops

    async def _round(self, claim: bool) -> int | None:
        """One transaction: what is owed, then a claim (when ``claim`` and there is room). Returns the number of
        events claimed, None when the transaction failed (what was owed stays owed)."""
        cfg = self.config
        ready = self._ready()
        limit = min(self._batch, cfg.in_flight - len(self._held)) if claim else 0
        if claim:
            self._capped = limit < self._batch
        to_store, to_complete = self._take_owed()
        if limit <= 0 and not to_store and not to_complete:
            return 0

        async def work(tx: Transaction) -> tuple[list[OutboxEvent], Plan]:
            owed = self._owed_ops(tx, to_store, to_complete)
            if limit <= 0:
                await tx.commit(*owed)
                return [], plan_dispatch([], self.routes, ready)
            *_, events = await tx.run(*owed, tx.outbox.claim(self.owner, limit=limit,
                                                             lease_seconds=cfg.lease_seconds))
            plan = plan_dispatch(events, self.routes, ready)
            await tx.commit(*self._owed_ops(tx, plan.store, plan.finished))
            return events, plan

        try:
            events, plan = await self.store.transact(work)
        except StoreError as exc:
            # Nothing was committed: the events stay due, and what was owed is owed still.
            log.warning("outbox dispatch failed: %s", exc)
            self._to_store[:0] = to_store
            self._to_complete[:0] = to_complete
            return None
        self.dispatched += len(events)
        self._hold(events, plan)
        self._hand_over()
        for route in self.routes:
            if any(row.handler == route.name for row in plan.store):  # its worker claims them as soon as it is free
                route.gate.backlog = True
                with contextlib.suppress(MailboxFull, ActorStopped):
                    self.workers[route.name].tell_nowait(Tick())
        return len(events)

    def _hold(self, events: Sequence[OutboxEvent], plan: Plan) -> None:
        now = trio.current_time()
        digests = {e.id: EventDigest(event_id=e.id, type=e.type, payload=e.payload) for e in events}
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


__all__ = ["DispatcherConfig", "HeldFigures", "NotificationRelay", "OutboxDispatcher", "Plan", "Route", "dependency_order",
           "in_memory_lag", "plan_dispatch", "sibling"]
