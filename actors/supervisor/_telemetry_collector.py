"""The telemetry collector: lifecycle event totals and the recent history, for operators.

The kernel's tree already holds per-actor counters; what it cannot answer is "how many give-ups or
mailbox overflows happened since start" and "what happened in the last minutes" once the actors
involved have been restarted or passivated. The collector keeps both, draining its own telemetry
subscription on a timer so it never competes with the actors it observes.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from kernel import Actor, Subscription, TelemetryEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """Ask message: reply is a ``TelemetrySnapshot``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetrySnapshot:
    totals: dict[str, int]
    recent: tuple[TelemetryEvent, ...]  # plain kernel events: whoever serves them renders them
    dropped: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Drain:
    """Timer tick: move buffered events into the totals."""


class TelemetryCollector(Actor):
    def __init__(self, *, interval: float = 1.0, keep: int = 500, buffer: int = 10_000) -> None:
        self.interval = interval
        self.buffer = buffer
        self.totals: Counter[str] = Counter()
        self.recent: deque[TelemetryEvent] = deque(maxlen=keep)
        self.subscription: Subscription | None = None

    async def started(self) -> None:
        # Owned by our path: a restart replaces the subscription a crashed incarnation left behind.
        self.subscription = self.system.telemetry.attach(buffer=self.buffer, owner=self.path)
        self.every(self.interval, _Drain())

    async def stopping(self) -> None:
        self._drain()
        self._detach()

    def _detach(self) -> None:
        if self.subscription is not None:
            self.system.telemetry.detach(self.subscription)
            self.subscription = None

    def _drain(self) -> None:
        if self.subscription is None:
            return
        for event in self.system.telemetry.drain(self.subscription):
            self.totals[event.kind] += 1
            self.recent.append(event)

    async def receive(self, msg: Any) -> Any:
        match msg:
            case _Drain():
                self._drain()
            case Snapshot():
                self._drain()
                return TelemetrySnapshot(
                    totals=dict(self.totals),
                    recent=tuple(self.recent),
                    dropped=self.subscription.dropped if self.subscription is not None else 0,
                )
            case _:
                raise TypeError(f"telemetry collector: unexpected message {msg!r}")
        return None
