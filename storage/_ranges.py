"""The projected watermark's rule, pure: completed watermark ranges absorbed into the mark.

The projected watermark of (user, handler) is the highest W such that every change up to W is
reflected in the read model. Each completed checkpoint covers a range (from, to]; events of one
user may complete out of order (across processes), so a range whose ``from`` is above the mark
waits until the ranges below it complete. ``Watermarks.advance`` stores the waiting ranges and
calls :func:`absorb` on them.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["absorb"]


def absorb(projected: int, ranges: Iterable[tuple[int, int]]) -> tuple[int, list[tuple[int, int]]]:
    """Absorb every range that starts at or below the mark (the mark becomes its end if higher),
    repeatedly; returns (the new mark, the ranges still waiting, sorted). Ranges entirely at or
    below the mark are absorbed without effect."""
    mark = projected
    ordered = sorted(ranges)
    for index, (start, end) in enumerate(ordered):
        if start > mark:
            # Sorted by start and the mark only grows by absorbing: nothing after this one can join.
            return mark, ordered[index:]
        mark = max(mark, end)
    return mark, []
