"""Helpers for tests of code that uses the store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["ManualClock"]


class ManualClock:
    """A wall clock that moves only when told: ``StoreConfig(clock=ManualClock(...))``.

    Leases, backoff schedules and reapers compare stored wall-clock times, so tests advance
    this instead of sleeping.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
        if self.now.utcoffset() is None:
            raise ValueError("ManualClock needs a timezone-aware start")

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now
