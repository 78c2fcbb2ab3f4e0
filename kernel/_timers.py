"""One timer service per system: a heap of deadlines served by a single task.

A timer belongs to one incarnation of one actor; it is dropped, not delivered, once that
incarnation has ended, which is how timers are "cancelled with the actor" without any bookkeeping
on the crash path.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from ._cell import Cell


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
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = 0
        self._rearm: trio.Event = trio.Event()

    def add(self, cell: Cell, incarnation: int, delay: float, msg: Any, interval: float | None) -> Timer:
        if not math.isfinite(delay) or delay < 0:
            raise ValueError(f"a timer delay must be finite and >= 0, got {delay}")
        timer = Timer(cell, incarnation, msg, interval)
        self._push(trio.current_time() + delay, timer)
        return timer

    def _push(self, deadline: float, timer: Timer) -> None:
        self._seq += 1
        first = self._heap[0][0] if self._heap else math.inf
        heapq.heappush(self._heap, (deadline, self._seq, timer))
        if deadline < first:
            self._rearm.set()

    def __len__(self) -> int:
        return len(self._heap)

    async def run(self) -> None:
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                deadline, _, timer = heapq.heappop(heap)
                if not timer.active:
                    continue
                timer.fired += 1
                timer._cell.deliver_timer(timer.msg)
                if timer.interval is not None and timer.active:
                    # Fixed rate from the scheduled time, so periods don't drift with load.
                    self._push(max(deadline + timer.interval, now), timer)
            self._rearm = trio.Event()
            with trio.move_on_at(heap[0][0] if heap else math.inf):
                await self._rearm.wait()
