"""Foreground lanes before background ones.

Separate bounded queues keep one lane's flood out of another lane's *queue*, but requests share the
cores (parsing and hashing on the one trio thread, or in worker processes), and on SQLite every lane's
transaction goes through the one writer (whose thread also needs the GIL that busy parsing holds). So
"a flood in one lane must not slow the others" needs an order as well: the hot and change lanes
(people looking at a screen) are foreground; the cold lane (backfill) is background and takes a turn
— to parse a request, or to start a transaction — only when no foreground request has been in flight
for ``quiet`` seconds.

``quiet`` bridges the gap between one foreground request and the client's next, so a busy screen is
not interleaved with backfill at every gap. ``max_wait`` bounds starvation: a background unit that
has waited that long goes anyway (one unit, then it queues again), so a steady foreground stream
slows backfill down but never stops it.

The decision is pure (:func:`background_wait`); :class:`LanePriority` is the thin trio shell.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import trio


@dataclass(frozen=True, slots=True, kw_only=True)
class PriorityConfig:
    quiet: float = 0.02
    max_wait: float = 1.0

    def __post_init__(self) -> None:
        if not (self.quiet >= 0 and self.max_wait >= 0):
            raise ValueError(f"quiet and max_wait are seconds >= 0, got {self.quiet!r} and {self.max_wait!r}")


def background_wait(*, active: int, quiet_until: float, waiting_since: float, now: float,
                    max_wait: float, last_starved: float = -math.inf) -> float:
    """Seconds a background unit that began waiting at ``waiting_since`` should still wait (0: go).

    ``active`` foreground requests are in flight; with none, the last one ended ``quiet`` before
    ``quiet_until``. While one is active the answer is the starvation bound: the shell wakes earlier
    when the last foreground request ends and asks again. Starvation passes are rationed across all
    waiting units: one per ``max_wait`` (``last_starved`` is when the previous one went), so many
    units that began waiting together do not all break into a busy foreground at once.
    """
    starved_at = max(waiting_since, last_starved) + max_wait
    if now >= starved_at:
        return 0.0
    if active > 0:
        return starved_at - now
    return max(0.0, min(quiet_until, starved_at) - now)


class LanePriority:
    """Counts foreground requests in flight and makes background work wait its turn."""

    def __init__(self, config: PriorityConfig | None = None) -> None:
        self.config = config or PriorityConfig()
        self._active = 0
        self._quiet_until = -math.inf
        self._idle = trio.Event()  # set while no foreground request is in flight
        self._idle.set()
        self._background_cpu = trio.Lock()
        self.starved_turns = 0  # background units that went because they had waited max_wait
        self._last_starved = -math.inf

    @property
    def foreground_active(self) -> int:
        return self._active

    @contextmanager
    def foreground(self) -> Iterator[None]:
        """Mark a foreground request in flight for the duration of the block."""
        self._active += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                self._quiet_until = trio.current_time() + self.config.quiet
                self._idle.set()

    async def background_turn(self) -> None:
        """Return when background work may run (always a checkpoint)."""
        since = trio.current_time()
        while True:
            now = trio.current_time()
            wait = background_wait(active=self._active, quiet_until=self._quiet_until, waiting_since=since,
                                   now=now, max_wait=self.config.max_wait, last_starved=self._last_starved)
            if wait <= 0.0:
                if self._active > 0:
                    self.starved_turns += 1
                    self._last_starved = now
                await trio.lowlevel.checkpoint()
                return
            if self._active > 0:
                with trio.move_on_after(wait):
                    await self._idle.wait()
            else:
                await trio.sleep(wait)  # the quiet period

    @asynccontextmanager
    async def background_cpu(self) -> AsyncIterator[None]:
        """One background unit of CPU work at a time, each after its turn: a burst of backfill
        requests does not parse all at once between two foreground steps."""
        async with self._background_cpu:
            await self.background_turn()
            yield
