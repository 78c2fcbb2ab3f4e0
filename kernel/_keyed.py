"""Keyed children: one actor per key, started on its first message, passivated when idle.

An idle keyed actor holds no task and no mailbox buffer (a trio task alone costs ~5 KB): its task
runs only while it has messages, and its deques are dropped when it goes quiet. ``entities`` is
kept in least-recently-used order, so both the idle timeout and the ``max_live`` cap look only at
its front.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

import trio

from ._actor import Actor
from ._cell import _NOTHING, _STOP_DRAIN, _STOP_NOW, ActorRef, Cell, _SystemMessage, ask_cell
from ._errors import ActorStopped, MailboxFull
from ._node import Node
from ._policy import ExitReason, backoff_delay, consecutive_restarts, record_restart, should_restart
from ._spec import ChildSpec
from ._telemetry import Restarted, Started

if TYPE_CHECKING:
    from ._supervisor import SupervisorNode
    from ._system import ActorSystem

# Pending entity tasks past which a tell to a cold key yields to let them run.
LAUNCH_BURST = 256
# An entity's ``waiter`` when it has no task: the next wake launches one.
_LAUNCH: Any = object()


class Entity(Cell):
    """One key's actor. Shares the cell's mailbox and loop; owns no task while idle."""

    __slots__ = ("node", "last_used", "_passivating", "history")

    def __init__(self, node: KeyedNode, key: Any) -> None:
        # Deliberately not Cell.__init__: that allocates what an idle entity must not hold.
        self.system = node.system
        self.parent = None
        self.node = node
        self.key = key
        self.name = str(key)
        self.path = f"{node.path}/{key}"
        self.spec = node.spec
        self.capacity = node.spec.mailbox
        self.overflow = node.overflow
        self.state = "idle"
        self.restarts = 0
        self.crashes = 0
        self.last_failure = None
        self.consecutive = 0
        self.started_at = 0.0
        self.q = None  # type: ignore[assignment]
        self.sysq = None  # type: ignore[assignment]
        self.senders = None
        self.waiter = _LAUNCH
        self.accepting = True
        self.draining = False
        self.retired = False
        self.actor = None
        self.incarnation = 0
        self.processed = 0
        self.dead_letters = 0
        self.watchers = None
        self.ref = EntityRef(node, key)
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

    # The cell's loop parks on an empty mailbox; an entity returns instead, freeing its task.
    async def _park(self) -> bool:
        return False

    def _wake(self) -> None:
        if self.waiter is _LAUNCH:
            self.waiter = None
            self.node.launch(self)

    def _control(self, message: _SystemMessage) -> None:
        if self.sysq is None:
            self.sysq = deque()
        self.sysq.append(message)
        self._wake()

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
            self.sysq = deque()
        try:
            while True:
                if self.actor is None:
                    if not self.q and not self.sysq:
                        return
                    began, error = await self._begin()
                    if began == "crash":
                        if not await self._recover(error):
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
                self.sysq = None  # type: ignore[assignment]
            self.last_used = trio.current_time()
            node.settled(self)

    async def _begin(self) -> tuple[ExitReason, BaseException | None]:
        self.incarnation += 1
        self.started_at = trio.current_time()
        self.state = "starting"
        try:
            actor = self._build()
            self.actor = actor
            await actor.started()
        except Exception as exc:
            self.actor = None
            return self._crashed(_NOTHING, exc)
        self.state = "running"
        self.system.publish(Started, self.path, attempt=self.restarts or None)
        return "normal", None

    async def _recover(self, error: BaseException | None) -> bool:
        """After a crash: True to go on with a new incarnation (after backoff), False when retired."""
        node = self.node
        if not should_restart(self.spec.restart, "crash"):
            node.retire(self, "crashed (temporary: not restarted)")
            return False
        sup = node.parent
        assert sup is not None, "a keyed group always runs under a supervisor"
        policy = sup.spec
        now = trio.current_time()
        # The supervisor's intensity, applied to this key alone: past it, the key is retired (its
        # backlog dead-lettered, its asks failed) rather than taking the other keys down with it.
        self.history, exceeded = record_restart(self.history, now, max_restarts=policy.max_restarts,
                                                within=policy.within)
        if exceeded:
            node.retire(self, f"gave up: more than {policy.max_restarts} restarts within {policy.within:g} s")
            return False
        attempt = consecutive_restarts(self.consecutive, now - self.started_at, policy.reset_after)
        delay = backoff_delay(attempt, base_delay=policy.base_delay, max_delay=policy.max_delay,
                              jitter=self.system.jitter())
        self.consecutive = attempt + 1
        self.restarts += 1
        node.restarts += 1
        self.system.publish(Restarted, self.path, attempt=attempt + 1, delay=delay)
        self.state = "restarting"
        await trio.sleep(delay)  # a checkpoint even at zero delay: a crash loop must not starve the others
        return True

    def tree(self) -> dict[str, Any]:
        node = Node.tree(self)
        node["kind"] = "actor"
        node["key"] = str(self.key)
        node["mailbox"] = {"depth": len(self.q) if self.q is not None else 0, "capacity": self.capacity}
        node["processed"] = self.processed
        node["deadLetters"] = self.dead_letters
        return node


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

    def tree(self) -> dict[str, Any]:
        node = super().tree()
        entities = list(self.entities.values())
        node["mailbox"] = {"depth": sum(len(e.q) for e in entities if e.q is not None), "capacity": self.spec.mailbox}
        node["processed"] = self.processed_total + sum(e.processed for e in entities)
        node["deadLetters"] = self.dead_letters
        node["live"] = len(entities)
        node["maxLive"] = self.spec.max_live
        node["passivated"] = self.passivated
        shown = entities[-100:]  # the most recently used; the full set can be large
        node["children"] = [e.tree() for e in shown]
        node["childrenTruncated"] = len(entities) > len(shown)
        return node


class KeyedRef(ActorRef):
    """The address of a keyed group: ``.key(k)`` addresses one key's actor."""

    __slots__ = ("_node",)

    def __init__(self, node: KeyedNode) -> None:
        self._node = node

    @property
    def path(self) -> str:
        return self._node.path

    def __repr__(self) -> str:
        return f"<KeyedRef {self._node.path}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyedRef) and other._node is self._node

    def __hash__(self) -> int:
        return id(self._node)

    def key(self, key: Any) -> EntityRef:
        return EntityRef(self._node, key)

    def _no_key(self) -> TypeError:
        return TypeError(f"{self._node.path!r} is keyed: send to one key's actor with ref.key(k)")

    async def tell(self, msg: Any) -> None:
        raise self._no_key()

    def tell_nowait(self, msg: Any) -> None:
        raise self._no_key()

    async def ask(self, msg: Any, *, timeout: float = 5.0) -> Any:
        raise self._no_key()


class EntityRef(ActorRef):
    """The address of one key's actor; valid across passivation (the next message restarts it)."""

    __slots__ = ("_node", "_key")

    def __init__(self, node: KeyedNode, key: Any) -> None:
        self._node = node
        self._key = key

    @property
    def path(self) -> str:
        return f"{self._node.path}/{self._key}"

    @property
    def key_value(self) -> Any:
        return self._key

    def __repr__(self) -> str:
        return f"<EntityRef {self.path}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EntityRef) and other._node is self._node and other._key == self._key

    def __hash__(self) -> int:
        return hash((id(self._node), self._key))

    def _watch_target(self) -> Cell | None:
        entity = self._node.entities.get(self._key)
        return entity if entity is not None and entity.alive else None

    async def tell(self, msg: Any) -> None:
        node = self._node
        entity = node.entity(self._key)
        if len(entity.q) < entity.capacity and not entity.senders:
            entity.q.append(msg)
            if entity.waiter is not None:
                entity._wake()
                if node.launching >= LAUNCH_BURST:
                    # A burst to cold keys: let the started tasks run (and go idle) before more pile up,
                    # or every pending task (~2.4 KB) is held at once.
                    await trio.lowlevel.checkpoint()
            return
        await entity.put(msg)

    def tell_nowait(self, msg: Any) -> None:
        entity = self._node.entity(self._key)
        if not entity.put_nowait(msg):
            raise MailboxFull(entity.path, entity.capacity)

    async def ask(self, msg: Any, *, timeout: float = 5.0) -> Any:
        return await ask_cell(self._node.entity(self._key), msg, timeout)

    def key(self, key: Any) -> EntityRef:
        raise TypeError(f"{self.path!r} already addresses one key")
