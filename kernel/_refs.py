"""Addresses: ``ActorRef`` (one actor), ``KeyedRef`` (a keyed group) and ``EntityRef`` (one key of it).

A ref is what user code holds; the cell behind it does the work. Asking is here too, because its
fast path is the kernel's hottest code after ``tell``: with room in the mailbox, an ask appends its
envelope, puts its deadline on the system's timer heap and parks, without a checkpoint, a cancel
scope or any allocation beyond the envelope.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import outcome
import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from ._errors import AskTimeout, MailboxFull, NoSuchActor

if TYPE_CHECKING:
    from ._cell import Cell
    from ._keyed import KeyedNode
    from ._snapshot import MailboxStatistics

DEFAULT_ASK_TIMEOUT = 5.0
# Pending entity tasks past which a tell to a cold key yields to let them run.
LAUNCH_BURST = 256

_NOTHING: Any = object()
# What an expired ask deadline hands the asker instead of a reply.
_TIMED_OUT: Any = object()


class _Ask:
    """An ask's envelope: the message plus the parked asker to hand the outcome to.

    It is also the asker's abort function (``wait_task_rescheduled(env)``) and its entry on the
    timer heap (``pending``/``expire``), so an ask allocates nothing else.
    """

    __slots__ = ("msg", "task", "result")

    def __init__(self, msg: Any) -> None:
        self.msg = msg
        self.task: Task | None = None
        # None: unanswered; _NOTHING: abandoned (timed out or cancelled), late replies are dropped.
        self.result: Any = None

    def settle(self, result: outcome.Outcome[Any]) -> None:
        """Answer the asker (once). The message is let go: the envelope may stay on the timer heap
        until its deadline or the next sweep, and must not keep a large message alive that long."""
        self.msg = None
        if self.result is not None:
            return
        task = self.task
        if task is not None:
            self.task = None
            self.result = _NOTHING
            reschedule(task, result)
        else:
            self.result = result

    @property
    def pending(self) -> bool:
        """The asker still waits: its deadline matters."""
        return self.task is not None

    def expire(self) -> None:
        """The deadline passed first: wake the asker with the timeout marker."""
        task = self.task
        assert task is not None
        self.task = None
        self.result = _NOTHING
        reschedule(task, outcome.Value(_TIMED_OUT))

    def __call__(self, _raise_cancel: Any) -> Abort:
        # The asker was cancelled: it stops waiting, the reply (if any) is dropped.
        self.task = None
        self.result = _NOTHING
        return Abort.SUCCEEDED


class ActorRef:
    """The address of one actor; valid across restarts. Cheap to copy and share.

    Two refs are equal when they are of the same kind and address the same thing (``_identity``):
    that, ``path`` and ``repr`` are all a ref kind defines for its identity.
    """

    __slots__ = ("_cell",)

    def __init__(self, cell: Cell) -> None:
        self._cell = cell

    def _identity(self) -> tuple[Any, ...]:
        return (self._cell,)

    @property
    def path(self) -> str:
        return self._cell.path

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and isinstance(other, ActorRef) and other._identity() == self._identity()

    def __hash__(self) -> int:
        return hash((type(self), *self._identity()))

    def _target(self) -> Cell:
        """The cell a message to this ref goes to."""
        return self._cell

    def statistics(self) -> MailboxStatistics:
        """The mailbox's depth, capacity and blocked senders right now."""
        return self._cell.statistics()

    async def tell(self, msg: Any) -> None:
        """Enqueue ``msg``; waits while the mailbox is full (policy ``block``)."""
        cell = self._cell
        if cell.accepting and len(cell.q) < cell.capacity and not cell.senders:
            cell.q.append(msg)
            if cell.waiter is not None:
                cell._wake()
            return
        await cell.put(msg)

    def tell_nowait(self, msg: Any) -> None:
        """Enqueue ``msg`` or raise ``MailboxFull`` (``drop_oldest`` drops instead)."""
        cell = self._cell
        if not cell.accepting:
            raise cell._refuse(msg)
        if not cell.put_nowait(msg):
            raise MailboxFull(cell.path, cell.capacity)

    async def ask(self, msg: Any, *, timeout: float = DEFAULT_ASK_TIMEOUT) -> Any:
        """Send ``msg`` and wait for the value ``receive`` returns.

        Raises ``AskTimeout`` after ``timeout`` seconds, ``ActorCrashed`` if handling it crashed,
        ``ActorStopped`` if the actor stops first. A reply after the timeout is dropped.
        """
        cell = self._target()
        timers = cell.system.timers
        if (not (cell.accepting and len(cell.q) < cell.capacity and not cell.senders) or timers.stopped
                or not timeout >= 0):  # a NaN or negative timeout gets trio's own checks and handling
            return await _ask_waiting(cell, msg, timeout)
        # The common case, without a checkpoint before parking: room in the mailbox. The deadline
        # goes on the system's timer heap; the envelope is the abort function and the heap entry.
        env = _Ask(msg)
        cell.q.append(env)
        if cell.waiter is not None:
            cell._wake()
        env.task = current_task()
        if timeout != math.inf:
            timers.expire_after(timeout, env)
        result = await wait_task_rescheduled(env)
        if result is _TIMED_OUT:
            raise AskTimeout(cell.path, timeout)
        return result

    def _watch_target(self) -> Cell | None:
        """The cell a watch attaches to (None: nothing live to watch)."""
        return self._cell

    def key(self, key: Any) -> ActorRef:
        raise NoSuchActor(f"{self.path}[{key!r}]", f"{self.path!r} is not a keyed child (ChildSpec(keyed=True))")


async def _ask_waiting(cell: Cell, msg: Any, timeout: float) -> Any:
    """An ask that may wait for room in the mailbox first (or outlives the timer service): one
    cancel scope bounds both waits."""
    env = _Ask(msg)
    with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
        if cell.accepting and len(cell.q) < cell.capacity and not cell.senders:
            cell.q.append(env)
            if cell.waiter is not None:
                cell._wake()
        else:
            await cell.put(env)
        result = env.result
        if result is not None:
            # Answered before we parked (handed over from the blocked-senders queue).
            env.result = _NOTHING
            return result.unwrap()
        env.task = current_task()
        return await wait_task_rescheduled(env)
    if scope.cancelled_caught:
        raise AskTimeout(cell.path, timeout)
    raise AssertionError("unreachable: an ask either returns, raises or times out")


class KeyedRef(ActorRef):
    """The address of a keyed group: ``.key(k)`` addresses one key's actor."""

    __slots__ = ("_node",)

    def __init__(self, node: KeyedNode) -> None:
        self._node = node

    def _identity(self) -> tuple[Any, ...]:
        return (self._node,)

    @property
    def path(self) -> str:
        return self._node.path

    def statistics(self) -> MailboxStatistics:
        """The group's totals: queued messages and blocked senders over its live keys; ``capacity``
        is each key's."""
        return self._node.statistics()

    def key(self, key: Any) -> EntityRef:
        return EntityRef(self._node, key)

    def _no_key(self) -> TypeError:
        return TypeError(f"{self._node.path!r} is keyed: send to one key's actor with ref.key(k)")

    def _target(self) -> Cell:
        raise self._no_key()

    async def tell(self, msg: Any) -> None:
        raise self._no_key()

    def tell_nowait(self, msg: Any) -> None:
        raise self._no_key()


class EntityRef(ActorRef):
    """The address of one key's actor; valid across passivation (the next message restarts it)."""

    __slots__ = ("_node", "_key")

    def __init__(self, node: KeyedNode, key: Any) -> None:
        self._node = node
        self._key = key

    def _identity(self) -> tuple[Any, ...]:
        return (self._node, self._key)

    @property
    def path(self) -> str:
        return f"{self._node.path}/{self._key}"

    @property
    def key_value(self) -> Any:
        return self._key

    def statistics(self) -> MailboxStatistics:
        """This key's mailbox; zeros (and the capacity) while the key has no live actor."""
        return self._node.key_statistics(self._key)

    def _target(self) -> Cell:
        return self._node.entity(self._key)

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

    def key(self, key: Any) -> EntityRef:
        raise TypeError(f"{self.path!r} already addresses one key")
