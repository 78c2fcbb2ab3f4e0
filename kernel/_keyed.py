"""Keyed children: one actor per key, started on its first message, passivated when idle.

An idle keyed actor holds no task and no mailbox buffer (a trio task alone costs ~5 KB): its task
runs only while it has messages, and its deques are dropped when it goes quiet. ``entities`` is
kept in least-recently-used order, so both the idle timeout and the ``max_live`` cap look only at
its front.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import trio

from ._actor import Actor
from ._cell import _STOP_DRAIN, _STOP_NOW, Cell, _SystemMessage
from ._errors import ActorStopped
from ._node import Node
from ._policy import ExitReason, decide_restart
from ._refs import _NOTHING, EntityRef, KeyedRef
from ._snapshot import MailboxStatistics, NodeSnapshot
from ._spec import ChildSpec
from ._telemetry import Restarted

if TYPE_CHECKING:
    from ._supervisor import SupervisorNode
    from ._system import ActorSystem

# An entity's ``waiter`` when it has no task: the next wake launches one.
_LAUNCH: Any = object()


class Entity(Cell):
    """One key's actor. Shares the cell's mailbox and loop; owns no task while idle."""

    __slots__ = ("node", "last_used", "_passivating", "history")
    parks = False  # the loop returns on an empty mailbox, freeing the task

    def __init__(self, node: KeyedNode, key: Any) -> None:
        # Idle: no deques and no task until the first message (the cell's loop gives it back when quiet).
        super().__init__(node.system, None, str(key), f"{node.path}/{key}", node.spec, key=key,
                         ref=EntityRef(node, key), idle=True)
        self.node = node
        self.state = "idle"
        self.waiter = _LAUNCH
        self.last_used = 0.0
        self._passivating = False
        # This key's recent restarts: a key that crash-loops is retired, the group lives on.
        self.history: tuple[float, ...] = ()

    @property
    def passivating(self) -> bool:
        return self._passivating

    @passivating.setter
    def passivating(self, value: bool) -> None:
        # The group counts entities on their way out, so eviction does not pick a second victim for them.
        if value != self._passivating:
            self._passivating = value
            self.node.leaving += 1 if value else -1

    @property
    def running(self) -> bool:
        return self.waiter is not _LAUNCH

    def _wake(self) -> None:
        if self.waiter is _LAUNCH:
            self.waiter = None
            self.node.launch(self)

    def request_stop(self, *, drain: bool) -> None:
        # self.stop() inside a keyed actor passivates it; queued messages go to the next incarnation.
        self.passivating = not drain
        self._control(_STOP_DRAIN if drain else _STOP_NOW)

    def inject(self, error: BaseException) -> None:
        self._control(_SystemMessage("crash", error))

    def deliver_timer(self, msg: Any) -> None:
        if self.accepting and self.node.touch(self) and not self.put_nowait(msg):
            self.dead_letter(msg, "timer message refused: mailbox full")

    def deliver_notice(self, msg: Any) -> None:
        if self.accepting and self.node.touch(self):
            self.q.append(msg)
            self._wake()

    def record_failure(self, error: BaseException) -> None:
        super().record_failure(error)
        self.node.record_failure(error)

    def dead_letter(self, msg: Any, reason: str, error: BaseException | None = None) -> None:
        super().dead_letter(msg, reason, error)
        self.node.dead_letters += 1

    async def drive(self) -> None:
        """The entity's task: handle messages until the mailbox is empty, then let the task end."""
        node = self.node
        node.launching -= 1
        if self.q is None:
            self.q = deque()
        if self.sysq is None:
            self.sysq = []
        try:
            while True:
                if self.actor is None:
                    if not self.q and not self.sysq:
                        return
                    self.state = "starting"
                    began = await self._begin()
                    if type(began) is tuple:
                        if not await self._recover(began[1]):
                            return
                        continue
                assert self.actor is not None
                reason, error = await self._loop(self.actor)
                if reason == "idle":
                    self.state = "idle"
                    return
                if reason == "crash":
                    self.actor = None
                    if not await self._recover(error):
                        return
                    continue
                # A normal exit: self.stop(), passivation, or the group shutting down.
                self.state = "stopping"
                actor, self.actor = self.actor, None
                try:
                    await actor.stopping()
                except Exception as exc:
                    self._crashed(_NOTHING, exc)
                if self.draining or not self.q:
                    self.passivating = False
                    node.retire(self, "passivated" if not self.draining else "stopped")
                    return
                self.passivating = False  # messages arrived while stopping: the next incarnation takes them
        finally:
            self.waiter = _LAUNCH
            self.draining = False
            self.passivating = False  # also when cancelled mid-passivation
            if self.q is not None and not self.q and not self.senders:
                self.q = None  # type: ignore[assignment]
            if self.sysq is not None and not self.sysq:
                self.sysq = None
            self.last_used = trio.current_time()
            node.settled(self)

    async def _recover(self, error: BaseException | None) -> bool:
        """After a crash: True to go on with a new incarnation (after backoff), False when retired."""
        node = self.node
        sup = node.parent
        assert sup is not None, "a keyed group always runs under a supervisor"
        limits = sup.spec
        # The supervisor's intensity, applied to this key alone: past it, the key is retired (its
        # backlog dead-lettered, its asks failed) rather than taking the other keys down with it.
        now = trio.current_time()
        decision = decide_restart(self.spec.restart, "crash", history=self.history, now=now,
                                  ran_for=now - self.started_at, consecutive=self.consecutive, limits=limits,
                                  jitter=self.system.jitter())
        self.history, self.consecutive = decision.history, decision.consecutive
        if decision.action == "retire":
            node.retire(self, "crashed (temporary: not restarted)")
            return False
        if decision.action == "give_up":
            node.retire(self, f"gave up: more than {limits.max_restarts} restarts within {limits.within:g} s")
            return False
        self.restarts += 1
        node.restarts += 1
        self.system.publish(Restarted, self.path, attempt=decision.attempt, delay=decision.delay)
        self.state = "restarting"
        await trio.sleep(decision.delay)  # a checkpoint even at zero delay: a crash loop must not starve the others
        return True

    def snapshot(self) -> NodeSnapshot:
        # Reported as an actor (it is one), under its group.
        return replace(Cell.snapshot(self), key=str(self.key))


class KeyedNode(Node):
    """A keyed child: routes each key to its entity, starting and passivating entities as needed."""

    __slots__ = (
        "spec", "overflow", "entities", "nursery", "ref", "stop_requested", "drain_on_stop", "dead_letters",
        "processed_total", "passivated", "_reaper_wake", "_pending", "launching", "leaving",
    )
    kind = "keyed"

    def __init__(self, system: ActorSystem, parent: SupervisorNode | None, spec: ChildSpec, path: str) -> None:
        super().__init__(system, parent, spec.name, path)
        self.spec = spec
        self.overflow = spec.overflow
        self.entities: OrderedDict[Any, Entity] = OrderedDict()
        self.nursery: trio.Nursery | None = None
        self.ref = KeyedRef(self)
        self.stop_requested = False
        self.drain_on_stop = True
        self.dead_letters = 0
        self.processed_total = 0
        self.passivated = 0
        self._reaper_wake = trio.Event()
        # Entities with messages that arrived while the group was between incarnations.
        self._pending: list[Entity] = []
        # Drive tasks started but not yet running: a burst of cold keys is throttled on this.
        self.launching = 0
        # Entities being passivated: still in ``entities`` until stopping() returns.
        self.leaving = 0

    @property
    def shutdown_timeout(self) -> float:
        return self.spec.shutdown_timeout

    @property
    def live(self) -> int:
        return len(self.entities)

    # -- routing ----------------------------------------------------------------------------------
    def entity(self, key: Any) -> Entity:
        """The entity for ``key``, started if needed, marked most recently used."""
        if self.retired:
            raise ActorStopped(f"{self.path}/{key}", f"the keyed group {self.path!r} has stopped")
        entities = self.entities
        entity = entities.get(key)
        if entity is None:
            entity = Entity(self, key)
            entities[key] = entity
            if len(entities) == 1:
                self._reaper_wake.set()
            elif len(entities) - self.leaving > self.spec.max_live:
                self._evict(keep=entity)
        else:
            entities.move_to_end(key)
        entity.last_used = trio.current_time()
        if entity.q is None:
            entity.q = deque()
        return entity

    def touch(self, entity: Entity) -> bool:
        """Make ``entity`` ready to receive (a timer or notice for a possibly idle entity)."""
        if self.entities.get(entity.key) is not entity:
            return False  # passivated since: the message belonged to an incarnation that is gone
        self.entities.move_to_end(entity.key)
        if entity.q is None:
            entity.q = deque()
        return True

    def launch(self, entity: Entity) -> None:
        if self.nursery is None:
            self._pending.append(entity)  # between incarnations of the group: started on the next one
            return
        self.launching += 1
        self.nursery.start_soon(entity.drive)

    def settled(self, entity: Entity) -> None:
        if self.entities.get(entity.key) is entity:
            self.entities.move_to_end(entity.key)
        if len(self.entities) - self.leaving > self.spec.max_live:
            self._evict()  # the cap was overshot while every older actor was busy

    def retire(self, entity: Entity, detail: str) -> None:
        if self.entities.get(entity.key) is entity:
            del self.entities[entity.key]
        entity.passivating = False
        self.passivated += 1
        self.processed_total += entity.processed
        entity.processed = 0
        # The same ending as any actor's: Stopped telemetry, watchers told, queued and waiting sends failed.
        entity.finalize(detail)

    def _evict(self, keep: Entity | None = None) -> None:
        """Passivate least recently used idle entities until at most ``max_live`` remain live.

        Busy ones are skipped (the cap may be overshot until they settle), and so is ``keep``, the
        entity a message is being routed to: evicting it would start a second actor for its key.
        """
        excess = len(self.entities) - self.leaving - self.spec.max_live
        for entity in list(self.entities.values()):
            if excess <= 0:
                break
            if entity is keep or entity.running or entity.passivating:
                continue
            self._passivate(entity)
            excess -= 1

    def _passivate(self, entity: Entity) -> None:
        actor = entity.actor
        if actor is None or type(actor).stopping is Actor.stopping:
            # Nothing to run on the way out: drop it now, without a task.
            entity.actor = None
            self.retire(entity, "passivated")
            return
        entity.request_stop(drain=False)

    # -- the incarnation --------------------------------------------------------------------------
    def request_stop(self, *, drain: bool) -> None:
        if self.nursery is None and self.scope is not None:
            self.scope.cancel()
            return
        self.stop_requested = True
        self.drain_on_stop = drain
        self._reaper_wake.set()

    async def _incarnation(self) -> tuple[ExitReason, BaseException | None]:
        self.started_at = trio.current_time()
        self.stop_requested = False
        try:
            # A restarted group rebuilds its actors (their mailboxes survive): whatever an actor held
            # when the group was cancelled belongs to the incarnation that ended.
            for entity in list(self.entities.values()):
                self._reset(entity)
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self.state = "running"
                self._came_up()
                pending, self._pending = self._pending, []
                for entity in pending:
                    self.launching += 1
                    nursery.start_soon(entity.drive)
                for entity in self.entities.values():
                    if (entity.q or entity.sysq) and entity.waiter is _LAUNCH:
                        entity.waiter = None
                        self.launching += 1
                        nursery.start_soon(entity.drive)
                await self._reap()
                self.state = "stopping"
                for entity in list(self.entities.values()):
                    if entity.running or entity.q or (
                        entity.actor is not None and type(entity.actor).stopping is not Actor.stopping
                    ):
                        entity.request_stop(drain=self.drain_on_stop)
                    else:
                        entity.actor = None
                        self.retire(entity, "stopped")
        finally:
            self.nursery = None
        return "normal", None

    def _reset(self, entity: Entity) -> None:
        if entity.actor is None and entity.incarnation == 0:
            return  # never started: nothing of a previous incarnation to drop
        entity.actor = None
        entity.incarnation += 1  # its timers belonged to the old actor
        entity.passivating = False
        if entity.sysq:
            entity.sysq.clear()
        if not entity.q:
            self.retire(entity, "restarted with its group")

    async def _reap(self) -> None:
        """Passivate entities idle for ``idle_timeout``, until asked to stop."""
        idle_timeout = self.spec.idle_timeout
        while not self.stop_requested:
            now = trio.current_time()
            next_due = math.inf
            for entity in list(self.entities.values()):
                due = entity.last_used + idle_timeout
                if due > now:
                    next_due = min(next_due, due)
                    break
                if not entity.running and not entity.passivating:
                    self._passivate(entity)
            if self.entities:
                # Whatever is left (busy past its timeout, or a passivation a new message may yet
                # interrupt) is looked at again within one idle period at the latest.
                next_due = min(next_due, now + idle_timeout)
            self._reaper_wake = trio.Event()
            with trio.move_on_at(next_due):
                await self._reaper_wake.wait()

    def finalize(self, detail: str) -> None:
        for entity in list(self.entities.values()):
            self.retire(entity, detail)
        super().finalize(detail)

    def revive(self) -> None:
        super().revive()

    def statistics(self) -> MailboxStatistics:
        depth = blocked = 0
        for entity in self.entities.values():
            if entity.q is not None:
                depth += len(entity.q)
            if entity.senders:
                blocked += len(entity.senders)
        return MailboxStatistics(depth=depth, capacity=self.spec.mailbox, blocked_senders=blocked)

    def key_statistics(self, key: Any) -> MailboxStatistics:
        entity = self.entities.get(key)
        if entity is None:
            return MailboxStatistics(depth=0, capacity=self.spec.mailbox, blocked_senders=0)
        return entity.statistics()

    def snapshot(self) -> NodeSnapshot:
        entities = list(self.entities.values())
        shown = entities[-100:]  # the most recently used; the full set can be large
        return replace(
            super().snapshot(),
            mailbox=self.statistics(),
            processed=self.processed_total + sum(e.processed for e in entities),
            dead_letters=self.dead_letters,
            children=tuple(e.snapshot() for e in shown),
            live=len(entities),
            max_live=self.spec.max_live,
            passivated=self.passivated,
            children_truncated=len(entities) > len(shown),
        )
