"""Time spans for the read models: exact integer microseconds, a union of covered spans, local days. Pure.

Microseconds rather than float seconds so that "covered" and "split at midnight" are exact: a sample never
loses or gains a sliver of its value to rounding at a boundary.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
Span = tuple[int, int]  # [start, end) in microseconds since the epoch


def micros(at: datetime) -> int:
    return (at - _EPOCH) // _US


def from_micros(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def day_runs(days: Iterable[date]) -> list[tuple[date, date]]:
    """Sorted distinct days as inclusive runs of consecutive days."""
    runs: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if runs and runs[-1][1] + timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def day_start(day: date, zone: ZoneInfo) -> int:
    """The first microsecond of local ``day``. Where a DST change skips midnight, the wall clock's 00:00
    (fold 0) maps to the instant the day's first existing wall time begins, so days stay contiguous."""
    return micros(datetime.combine(day, time(0), zone))


def local_day(us: int, zone: ZoneInfo) -> date:
    return from_micros(us).astimezone(zone).date()


def split_by_day(span: Span, zone: ZoneInfo) -> list[tuple[date, int]]:
    """``span`` cut at local midnights: (local day, microseconds of the span on it), in order."""
    start, end = span
    day = local_day(start, zone)
    out = []
    cursor = start
    while cursor < end:
        boundary = day_start(day + timedelta(days=1), zone)
        piece_end = min(end, boundary)
        if piece_end > cursor:
            out.append((day, piece_end - cursor))
        cursor = piece_end
        day += timedelta(days=1)
    return out


class Cover:
    """A union of disjoint [start, end) spans, kept sorted: what higher-ranked (or earlier) samples cover."""

    __slots__ = ("_ends", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def covers(self, at: int) -> bool:
        i = bisect_right(self._starts, at) - 1
        return i >= 0 and self._ends[i] > at

    def uncovered(self, span: Span) -> list[Span]:
        """The parts of ``span`` not covered yet."""
        start, end = span
        out = []
        cursor = start
        i = max(0, bisect_right(self._starts, start) - 1)
        while i < len(self._starts) and self._starts[i] < end and cursor < end:
            if self._ends[i] > cursor:
                if self._starts[i] > cursor:
                    out.append((cursor, self._starts[i]))
                cursor = max(cursor, self._ends[i])
            i += 1
        if cursor < end:
            out.append((cursor, end))
        return out

    def add(self, span: Span) -> None:
        start, end = span
        if end <= start:
            return
        lo = bisect_left(self._ends, start)  # first span that ends at or after our start: touches or overlaps
        hi = bisect_right(self._starts, end)  # spans from lo to hi - 1 merge with ours
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]


__all__ = ["Cover", "Span", "day_runs", "day_start", "from_micros", "local_day", "micros", "split_by_day"]
