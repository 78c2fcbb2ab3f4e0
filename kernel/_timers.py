"""One timer service per system: a heap of deadlines served by a single task.

It serves two kinds of deadline. A ``Timer`` (``send_after``, ``every``) belongs to one incarnation
of one actor; it is dropped, not delivered, once that incarnation has ended, which is how timers are
"cancelled with the actor" without any bookkeeping on the crash path. An ask's deadline wakes its
asker with a timeout unless the reply came first: one heap push per ask instead of a
``trio.CancelScope`` (whose setup and teardown cost more than the rest of a round trip).

Entries are never removed early: an answered ask or a cancelled timer stays in the heap, inert,
until the heap has grown past twice what is live, and is then swept out in one pass.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, Any, Protocol

import trio

if TYPE_CHECKING:
    from ._cell import Cell

# Inert entries tolerated before a sweep, beyond twice the live ones.
SWEEP_SLACK = 1024


class Deadline(Protocol):
    """What the heap holds besides timers: something to tell once its time has come."""

    @property
    def pending(self) -> bool: ...
    def expire(self) -> None: ...


class Timer:
    __slots__ = ("_cell", "_incarnation", "msg", "interval", "cancelled", "fired")

    def __init__(self, cell: Cell, incarnation: int, msg: Any, interval: float | None) -> None:
        self._cell = cell
        self._incarnation = incarnation
        self.msg = msg
        self.interval = interval
        self.cancelled = False
        self.fired = 0

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def active(self) -> bool:
        cell = self._cell
        # The incarnation must still be running: after a crash the number stays until the restart.
        return (not self.cancelled and cell.incarnation == self._incarnation and cell.actor is not None
                and cell.alive)


class TimerService:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = 0
        self._rearm: trio.Event = trio.Event()
        self._sweep_at = SWEEP_SLACK
        # Once the service task has ended no deadline fires: callers fall back to their own.
        self.stopped = False
        # The run's clock, set by the system when it starts inside trio.
        self.clock: trio.abc.Clock | None = None

    def add(self, cell: Cell, incarnation: int, delay: float, msg: Any, interval: float | None) -> Timer:
        if not math.isfinite(delay) or delay < 0:
            raise ValueError(f"a timer delay must be finite and >= 0, got {delay}")
        timer = Timer(cell, incarnation, msg, interval)
        self._push(trio.current_time() + delay, timer)
        return timer

    def expire_after(self, timeout: float, item: Deadline) -> None:
        """Call ``item.expire()`` in ``timeout`` seconds if it is still ``pending`` then.

        One per ask: the clock is read directly (``trio.current_time()`` is three calls deeper)."""
        clock = self.clock
        self._push((clock.current_time() if clock is not None else trio.current_time()) + timeout, item)

    def _push(self, deadline: float, item: Any) -> None:
        heap = self._heap
        self._seq += 1
        if len(heap) >= self._sweep_at:
            self._sweep()
        if not heap or deadline < heap[0][0]:
            self._rearm.set()
        heapq.heappush(heap, (deadline, self._seq, item))

    def _sweep(self) -> None:
        heap = self._heap
        heap[:] = [entry for entry in heap if _live(entry[2])]
        heapq.heapify(heap)
        self._sweep_at = 2 * len(heap) + SWEEP_SLACK

    def __len__(self) -> int:
        return len(self._heap)

    async def run(self) -> None:
        heap = self._heap
        try:
            while True:
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    deadline, _, item = heapq.heappop(heap)
                    if type(item) is not Timer:
                        if item.pending:
                            item.expire()
                        continue
                    if not item.active:
                        continue
                    item.fired += 1
                    item._cell.deliver_timer(item.msg)
                    if item.interval is not None and item.active:
                        # Fixed rate from the scheduled time, so periods don't drift with load.
                        self._push(max(deadline + item.interval, now), item)
                self._rearm = trio.Event()
                with trio.move_on_at(heap[0][0] if heap else math.inf):
                    await self._rearm.wait()
        finally:
            self.stopped = True


def _live(item: Any) -> bool:
    return bool(item.active) if type(item) is Timer else bool(item.pending)
