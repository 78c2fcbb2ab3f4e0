"""Drain-rate estimate for a lane, used to tell a client how long to back off.

An exponentially weighted moving average of messages per second, fed by the lane after each batch;
pure arithmetic over (previous estimate, batch size, elapsed time), so the retry hint is testable.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainRate:
    per_second: float = 0.0
    alpha: float = 0.3

    def observe(self, handled: int, elapsed: float) -> DrainRate:
        if handled <= 0 or elapsed <= 0:
            return self
        sample = handled / elapsed
        rate = sample if self.per_second == 0.0 else self.alpha * sample + (1 - self.alpha) * self.per_second
        return DrainRate(per_second=rate, alpha=self.alpha)


def retry_after_ms(queued: int, rate: DrainRate, *, floor_ms: int = 50, ceiling_ms: int = 30_000) -> int:
    """How long until ``queued`` messages have drained at the observed rate, clamped."""
    if rate.per_second <= 0.0:
        return 1000  # nothing observed yet: a conservative second
    estimate = int(queued / rate.per_second * 1000)
    return max(floor_ms, min(ceiling_ms, estimate))
