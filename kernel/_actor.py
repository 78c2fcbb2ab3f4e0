"""The ``Actor`` base class: what user code subclasses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._cell import Cell
    from ._refs import ActorRef
    from ._system import ActorSystem
    from ._timers import Timer


class Actor:
    """Subclass and define ``async def receive(self, msg)``; its return value answers an ask
    (``kernel.Failed(error)`` answers it with ``error`` raised in the asker instead).

    Messages are handled one at a time, in mailbox order. The kernel binds the running instance to
    its cell after ``__init__``: ``self.ref`` and friends are usable from ``started()`` on.
    """

    _vigil_cell: Cell
    # Set above 1 together with ``receive_batch`` to take up to this many queued messages at once.
    max_batch: int = 1

    async def receive(self, msg: Any) -> Any:
        raise TypeError(f"{type(self).__name__} does not define `async def receive(self, msg)`")

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        """Handle several queued messages at once (e.g. one transaction for all: group commit).

        Used instead of ``receive`` when ``max_batch > 1``. Return one result per message, in order;
        a ``kernel.Failed(error)`` result raises ``error`` in that message's asker. An exception
        escaping crashes the actor: every ask of the batch gets ``ActorCrashed``.
        """
        return [await self.receive(msg) for msg in messages]

    async def started(self) -> None:
        """Runs before the first message of each incarnation (after every restart too)."""

    async def stopping(self) -> None:
        """Runs on a graceful stop, ``self.stop()`` and passivation; not after a crash or a cancel."""

    def _cell_or_raise(self) -> Cell:
        try:
            return self._vigil_cell
        except AttributeError:
            raise RuntimeError(
                f"{type(self).__name__} is not running: actors are built by the kernel from a ChildSpec "
                "(was it spawned under a supervisor?), and `self.ref` is not available inside __init__ "
                "(use `async def started(self)`)"
            ) from None

    @property
    def ref(self) -> ActorRef:
        return self._cell_or_raise().ref

    @property
    def path(self) -> str:
        return self._cell_or_raise().path

    @property
    def system(self) -> ActorSystem:
        return self._cell_or_raise().system

    def stop(self) -> None:
        """Exit normally once the current message is handled (``stopping()`` runs)."""
        self._cell_or_raise().request_stop(drain=False)

    def send_after(self, delay: float, msg: Any) -> Timer:
        """Deliver ``msg`` to this actor's mailbox after ``delay`` seconds of trio time."""
        return self._cell_or_raise().schedule(delay, msg, interval=None)

    def every(self, interval: float, msg: Any) -> Timer:
        """Deliver ``msg`` every ``interval`` seconds, the first one interval from now."""
        if interval <= 0:
            raise ValueError(f"every() needs a positive interval, got {interval}")
        return self._cell_or_raise().schedule(interval, msg, interval=interval)

    def watch(self, ref: ActorRef) -> None:
        """Get a ``Terminated`` message when ``ref``'s actor stops for good (restarts don't count)."""
        from ._cell import watch

        watch(self._cell_or_raise(), ref)

    def unwatch(self, ref: ActorRef) -> None:
        cell = ref._watch_target()
        if cell is not None:
            cell.remove_watcher(self._cell_or_raise())
