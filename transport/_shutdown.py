"""The shutdown budget: one deadline (``VIGIL_SHUTDOWN_TIMEOUT``, default 25 s, inside the usual 30 s SIGTERM →
SIGKILL window) split deliberately between the phases of a graceful stop, so no phase's own timeout (an HTTP
drain of 10 s, a lane's 30 s) can add up past it:

1. drain HTTP: ``/health`` already answers 503, listeners close, in-flight requests and WebSockets finish —
   at most ``drain`` (the configured drain timeout, capped at half of what the closing reserve leaves);
2. stop the actors: lanes commit what they accepted, outbox work finishes, reapers release their leases —
   whatever the drain left of ``total - close``;
3. close pools (store, coordination, decode workers): the ``close`` reserve.

A hard watchdog at ``total`` plus a small grace ends the process if a phase still hangs (exit code 1, logged).
Pure arithmetic here; run.py's serve is the shell.
"""

from __future__ import annotations

from dataclasses import dataclass

CLOSE_RESERVE = 5.0  # seconds kept for closing pools; at most a fifth of the budget
WATCHDOG_GRACE = 2.0  # past the budget, before the watchdog exits the process


@dataclass(frozen=True, slots=True)
class ShutdownBudget:
    total: float
    drain: float
    close: float

    @classmethod
    def split(cls, total: float, drain_timeout: float) -> ShutdownBudget:
        if total <= 0 or drain_timeout < 0:
            raise ValueError(f"a shutdown budget needs total > 0 and drain >= 0, got {total}, {drain_timeout}")
        close = min(CLOSE_RESERVE, total / 5)
        return cls(total=total, drain=min(drain_timeout, (total - close) / 2), close=close)

    def for_actors(self, elapsed: float) -> float:
        """Seconds the actor system gets to stop, ``elapsed`` seconds after shutdown began (the drain's time)."""
        return max(0.0, self.total - self.close - elapsed)

    @property
    def watchdog(self) -> float:
        return self.total + WATCHDOG_GRACE


__all__ = ["ShutdownBudget"]
