"""An actor's cell: its bounded mailbox, its system lane and its message loop (its refs: ``_refs``).

The hot path is built for throughput: a send with room appends to a deque and returns without a
checkpoint; the actor drains its mailbox in batches and parks (``wait_task_rescheduled``) only when
it is empty; a blocked sender hands its message over directly when room appears, so the order of
blocked senders is kept.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import outcome
import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from ._actor import Actor
from ._errors import ActorCrashed, ActorStopped, MailboxFull
from ._node import Node
from ._policy import ExitReason
from ._refs import _NOTHING, ActorRef, _Ask
from ._snapshot import MailboxStatistics, NodeSnapshot
from ._spec import Overflow
from ._telemetry import Crashed, MailboxOverflow, Started, Stopped

if TYPE_CHECKING:
    from ._spec import ChildSpec
    from ._supervisor import SupervisorNode
    from ._system import ActorSystem
    from ._timers import Timer

LoopExit = Literal["normal", "crash", "idle"]

# Messages handled between two checkpoints while the mailbox stays non-empty: long enough to
# amortise the scheduler, short enough that one busy actor cannot starve the others.
BATCH = 256



@dataclass(frozen=True, slots=True, kw_only=True)
class Terminated:
    """Sent to watchers when a watched actor stops for good."""

    path: str
    reason: str


class _SystemMessage:
    __slots__ = ("action", "error")

    def __init__(self, action: str, error: BaseException | None = None) -> None:
        self.action = action
        self.error = error


_STOP_NOW = _SystemMessage("stop")
_STOP_DRAIN = _SystemMessage("drain")


@dataclass(frozen=True, slots=True)
class Failed:
    """A ``receive_batch`` result that answers its ask with ``error`` instead of a value."""

    error: BaseException


class InjectedCrash(Exception):
    """The default exception of ``kernel.testing.inject_crash``."""


class Cell(Node):
    """A plain actor: one long-lived task per incarnation, parked while its mailbox is empty."""

    __slots__ = (
        "spec", "key", "capacity", "overflow", "q", "sysq", "senders", "waiter", "accepting", "draining",
        "actor", "incarnation", "processed", "dead_letters", "watchers", "ref",
    )
    kind = "actor"
    # A cell's loop parks its task on an empty mailbox; an entity's gives the task up instead.
    parks: ClassVar[bool] = True

    def __init__(
        self,
        system: ActorSystem,
        parent: SupervisorNode | None,
        name: str,
        path: str,
        spec: ChildSpec,
        *,
        key: Any = _NOTHING,
        ref: ActorRef | None = None,
        idle: bool = False,
    ) -> None:
        super().__init__(system, parent, name, path)
        self.spec = spec
        self.key = key
        self.capacity = spec.mailbox
        self.overflow: Overflow = spec.overflow
        # An idle cell (an entity until its first message) holds no mailbox buffer: a deque costs ~600 B.
        self.q: deque[Any] = None if idle else deque()  # type: ignore[assignment]
        # The system lane: a list, not a deque (an empty deque costs ~600 B); it holds a message or two
        # at most. An idle cell (an entity while it has no task) holds none.
        self.sysq: list[_SystemMessage] | None = None if idle else []
        self.senders: OrderedDict[Task, Any] | None = None
        # The parked loop's task (an entity keeps a launch marker here instead).
        self.waiter: Any = None
        self.accepting = True
        self.draining = False
        self.actor: Actor | None = None
        self.incarnation = 0
        self.processed = 0
        self.dead_letters = 0
        self.watchers: list[Cell] | None = None
        self.ref = ref if ref is not None else ActorRef(self)

    @property
    def shutdown_timeout(self) -> float:
        return self.spec.shutdown_timeout

    def statistics(self) -> MailboxStatistics:
        q, senders = self.q, self.senders
        return MailboxStatistics(depth=len(q) if q is not None else 0, capacity=self.capacity,
                                 blocked_senders=len(senders) if senders else 0)

    # -- sending ----------------------------------------------------------------------------------
    def _wake(self) -> None:
        task = self.waiter
        if task is not None:
            self.waiter = None
            reschedule(task)

    def __call__(self, _raise_cancel: Any) -> Abort:
        # A parked cell is its own abort function: parking allocates nothing (no bound method).
        self.waiter = None
        return Abort.SUCCEEDED

    def _refuse(self, msg: Any) -> ActorStopped:
        """A send to an actor stopped for good: the message is a dead letter, the sender is told."""
        self.dead_letter(msg, "sent to a stopped actor")
        return ActorStopped(self.path, f"it has {self.state}")

    async def put(self, item: Any) -> None:
        """The slow path of ``tell``/``ask``: the mailbox is full, or senders are already waiting."""
        if not self.accepting:
            raise self._refuse(item)
        overflow = self.overflow
        if overflow == "block":
            self._overflowed()
            task = current_task()
            if self.senders is None:
                self.senders = OrderedDict()
            senders = self.senders
            senders[task] = item

            def abort(_: Any) -> Abort:
                senders.pop(task, None)
                return Abort.SUCCEEDED

            await wait_task_rescheduled(abort)
        elif not self.put_nowait(item):
            raise MailboxFull(self.path, self.capacity)

    def put_nowait(self, item: Any) -> bool:
        """Enqueue without waiting; False when the policy refuses it (full mailbox)."""
        q = self.q
        if len(q) < self.capacity and not self.senders:
            q.append(item)
            if self.waiter is not None:
                self._wake()
            return True
        if self.overflow == "drop_oldest" and q:
            oldest = q.popleft()
            self._overflowed()
            self.dead_letter(oldest, "dropped: mailbox full (drop_oldest)")
            if type(oldest) is _Ask:
                oldest.settle(outcome.Error(MailboxFull(self.path, self.capacity)))
            q.append(item)
            if self.waiter is not None:
                self._wake()
            return True
        self._overflowed()
        return False

    def _overflowed(self) -> None:
        telemetry = self.system.telemetry
        if telemetry.listening:
            telemetry.publish(MailboxOverflow(path=self.path, at=trio.current_time(), detail=self.overflow))

    def deliver_timer(self, msg: Any) -> None:
        # A timer cannot wait for room: a full mailbox turns the tick into a dead letter.
        if not self.accepting:
            self.dead_letter(msg, "timer message for a stopped actor")
        elif not self.put_nowait(msg):
            self.dead_letter(msg, "timer message refused: mailbox full")

    def deliver_notice(self, msg: Any) -> None:
        """Kernel notices (``Terminated``) bypass the capacity: they are few and must not be lost."""
        if not self.accepting:
            self.dead_letter(msg, "notice for a stopped actor")
            return
        self.q.append(msg)
        if self.waiter is not None:
            self._wake()

    def _admit_blocked_sender(self) -> None:
        senders = self.senders
        assert senders
        task, item = senders.popitem(last=False)
        self.q.append(item)
        reschedule(task)

    # -- control ----------------------------------------------------------------------------------
    def _control(self, message: _SystemMessage) -> None:
        if self.sysq is None:
            self.sysq = []
        self.sysq.append(message)
        if self.waiter is not None:
            self._wake()

    def request_stop(self, *, drain: bool) -> None:
        if self.actor is None and self.scope is not None:
            if not drain:
                # Not built yet (waiting out a restart delay): there is nothing to let finish.
                self.scope.cancel()
                return
            # A draining stop still owes the queued messages their turn: skip the rest of the
            # delay and let the next incarnation drain them (it finds _STOP_DRAIN first).
            if self.delay_scope is not None:
                self.delay_scope.cancel()
        self._control(_STOP_DRAIN if drain else _STOP_NOW)

    def inject(self, error: BaseException) -> None:
        self._control(_SystemMessage("crash", error))

    def schedule(self, delay: float, msg: Any, *, interval: float | None) -> Timer:
        return self.system.timers.add(self, self.incarnation, delay, msg, interval)

    def add_watcher(self, watcher: Cell) -> None:
        if not self.alive:
            watcher.deliver_notice(Terminated(path=self.path, reason=self.state))
            return
        if self.watchers is None:
            self.watchers = []
        if watcher not in self.watchers:
            self.watchers.append(watcher)

    def remove_watcher(self, watcher: Cell) -> None:
        if self.watchers and watcher in self.watchers:
            self.watchers.remove(watcher)

    # -- the incarnation --------------------------------------------------------------------------
    def _build(self) -> Actor:
        spec = self.spec
        if self.key is _NOTHING:
            actor = spec.factory(*spec.args, **spec.kwargs)
        else:
            actor = spec.factory(self.key, *spec.args, **spec.kwargs)
        if not isinstance(actor, Actor):
            raise TypeError(
                f"the factory of {self.path!r} returned {type(actor).__name__}, not an Actor subclass instance"
            )
        actor._vigil_cell = self
        return actor

    async def _begin(self) -> Actor | tuple[ExitReason, BaseException]:
        """Build this incarnation's actor and run its ``started``: the actor, or how it crashed."""
        self.incarnation += 1
        self.started_at = trio.current_time()
        try:
            actor = self._build()
            self.actor = actor
            if type(actor).started is not Actor.started:  # most actors have no hook: skip its coroutine
                await actor.started()
        except Exception as exc:
            self.actor = None
            return self._crashed(_NOTHING, exc)
        self.state = "running"
        if self.system.telemetry.listening:
            self.system.publish(Started, self.path, attempt=self.restarts or None)
        return actor

    async def _incarnation(self) -> tuple[ExitReason, BaseException | None]:
        self.draining = False
        actor = await self._begin()
        if type(actor) is tuple:
            return actor
        assert isinstance(actor, Actor)
        self._came_up()
        try:
            reason, error = await self._loop(actor)
            assert reason != "idle", "a plain actor's loop parks, it never idles out"
            if reason == "normal":
                self.state = "stopping"
                try:
                    await actor.stopping()
                except Exception as exc:
                    return self._crashed(_NOTHING, exc)
            return ("crash" if reason == "crash" else "normal"), error
        finally:
            self.actor = None
            # Control messages were for this incarnation: a stop that arrived as it was cancelled
            # must not end the next one the moment it starts.
            if self.sysq:
                self.sysq.clear()
            self.draining = False

    async def _loop(self, actor: Actor) -> tuple[LoopExit, BaseException | None]:
        """Handle messages until told to stop; park on an empty mailbox (inline: this is the hot path)."""
        if actor.max_batch > 1:
            return await self._loop_batched(actor)
        q = self.q
        sysq = self.sysq
        assert sysq is not None, "a running cell has its system lane"
        receive = actor.receive
        parks = self.parks
        task = current_task()
        item: Any = _NOTHING
        try:
            while True:
                if sysq:
                    if self._take_control():
                        return "normal", None
                    continue
                if not q:
                    if self.draining:
                        return "normal", None
                    if not parks:
                        return "idle", None
                    self.waiter = task
                    await wait_task_rescheduled(self)
                    continue
                budget = BATCH
                while q:
                    item = q.popleft()
                    if self.senders:
                        self._admit_blocked_sender()
                    if type(item) is _Ask:
                        result = await receive(item.msg)
                        item.settle(outcome.Error(result.error) if type(result) is Failed else outcome.Value(result))
                    else:
                        await receive(item)
                    item = _NOTHING
                    self.processed += 1
                    if sysq:
                        break
                    budget -= 1
                    if not budget:
                        await trio.lowlevel.checkpoint()
                        budget = BATCH
        except Exception as exc:
            return self._crashed(item, exc)
        except BaseException:
            if item is not _NOTHING:
                # Cancelled mid-message (forced stop): the message is lost to this actor.
                self.dead_letter(item, "interrupted: actor cancelled")
                if type(item) is _Ask:
                    item.settle(outcome.Error(ActorStopped(self.path, "it was cancelled while handling this ask")))
            raise

    async def _loop_batched(self, actor: Actor) -> tuple[LoopExit, BaseException | None]:
        """The loop of an actor with ``receive_batch``: everything queued (up to ``max_batch``) at once."""
        q = self.q
        limit = actor.max_batch
        items: list[Any] = []
        try:
            while True:
                done = await self._next_work()
                if done is not None:
                    return done, None
                items = [q.popleft() for _ in range(min(limit, len(q)))]
                while self.senders and len(q) < self.capacity:
                    self._admit_blocked_sender()
                results = await actor.receive_batch([i.msg if type(i) is _Ask else i for i in items])
                if len(results) != len(items):
                    raise TypeError(
                        f"{type(actor).__name__}.receive_batch returned {len(results)} results for {len(items)} messages"
                    )
                for env, result in zip(items, results, strict=True):
                    if type(env) is _Ask:
                        env.settle(outcome.Error(result.error) if type(result) is Failed else outcome.Value(result))
                self.processed += len(items)
                items = []
        except Exception as exc:
            for env in items:
                self.dead_letter(env, "crashed while handling its batch", exc)
                if type(env) is _Ask:
                    crashed = ActorCrashed(self.path, exc)
                    crashed.__cause__ = exc
                    env.settle(outcome.Error(crashed))
            return self._crashed(_NOTHING, exc)
        except BaseException:
            for env in items:
                self.dead_letter(env, "interrupted: actor cancelled")
                if type(env) is _Ask:
                    env.settle(outcome.Error(ActorStopped(self.path, "it was cancelled while handling this ask")))
            raise

    async def _next_work(self) -> LoopExit | None:
        """Wait until a message is queued (None), or say how the loop ends ("normal", "idle")."""
        while True:
            if self.sysq:
                if self._take_control():
                    return "normal"
                continue
            if self.q:
                return None
            if self.draining or not self.parks:
                return "normal" if self.draining else "idle"
            await self._park()

    def _take_control(self) -> bool:
        """Apply one system-lane message; True means "stop now" (after the current message)."""
        assert self.sysq is not None
        control = self.sysq.pop(0)
        if control is _STOP_NOW:
            return True
        if control is _STOP_DRAIN:
            self.draining = True
        elif control.error is not None:
            raise control.error  # an injected crash: handled like one from receive()
        return False

    async def _park(self) -> None:
        """Wait for a message or a control message."""
        self.waiter = current_task()
        await wait_task_rescheduled(self)

    def _crashed(self, item: Any, exc: Exception) -> tuple[ExitReason, BaseException]:
        self.record_failure(exc)
        if item is not _NOTHING:
            self.dead_letter(item, "crashed while handling it", exc)
            if type(item) is _Ask:
                crashed = ActorCrashed(self.path, exc)
                crashed.__cause__ = exc
                item.settle(outcome.Error(crashed))
        self.system.publish(Crashed, self.path, error=exc)
        return "crash", exc

    def dead_letter(self, msg: Any, reason: str, error: BaseException | None = None) -> None:
        if type(msg) is _Ask:
            msg = msg.msg
        self.dead_letters += 1
        self.system.dead_letters.record(self.path, msg, reason, error)

    def revive(self) -> None:
        super().revive()
        self.accepting = True

    def finalize(self, detail: str) -> None:
        """Stopped for good: refuse new sends; what is queued or waiting fails fast, nothing hangs."""
        super().finalize(detail)
        self.fail_waiting(detail)
        if self.sysq:
            self.sysq.clear()
        self.system.publish(Stopped, self.path, detail=detail)
        if self.watchers:
            notice = Terminated(path=self.path, reason=detail)
            for watcher in self.watchers:
                watcher.deliver_notice(notice)
            self.watchers = None

    def fail_waiting(self, detail: str) -> None:
        """Refuse new sends; what is queued becomes dead letters and every waiter fails fast."""
        self.accepting = False
        error_detail = f"it stopped ({detail})"
        while self.q:
            item = self.q.popleft()
            self.dead_letter(item, f"undelivered: actor stopped ({detail})")
            if type(item) is _Ask:
                item.settle(outcome.Error(ActorStopped(self.path, error_detail)))
        if self.senders:
            for task, item in list(self.senders.items()):
                self.dead_letter(item, f"undelivered: actor stopped ({detail})")
                reschedule(task, outcome.Error(ActorStopped(self.path, error_detail)))
                if type(item) is _Ask:
                    item.result = _NOTHING
            self.senders.clear()

    def snapshot(self) -> NodeSnapshot:
        return replace(super().snapshot(), mailbox=self.statistics(), processed=self.processed,
                       dead_letters=self.dead_letters)


def watch(watcher: Cell, target: ActorRef) -> None:
    """Attach ``watcher`` to ``target``'s actor; if nothing is live there, tell it at once."""
    cell = target._watch_target()
    if cell is None:
        watcher.deliver_notice(Terminated(path=target.path, reason="not running"))
    else:
        cell.add_watcher(watcher)
