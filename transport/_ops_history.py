"""The last minutes of the process's figures, for the operator page's charts (``GET /v1/ops/summary``).

A sampler reads the counters every ``interval`` (request totals and latency buckets, restarts from the
tree, lane depths, the outbox) and keeps one point per interval: rates and the p99 come from the
difference between two readings (``point``, pure), as Prometheus' ``rate()`` and ``histogram_quantile``
would compute them. The page gets the history at once, not only what happened while it was open.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from actors.ingest import IngestService
from actors.projection import ProjectionService
from kernel import NodeSnapshot

from ._metrics import RequestLatency


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """``interval`` seconds between points, ``keep`` points (10 minutes by default)."""

    interval: float = 1.0
    keep: int = 600

    def __post_init__(self) -> None:
        if not self.interval > 0 or self.keep < 2:
            raise ValueError(f"interval must be positive and keep at least 2, got {self.interval}, {self.keep}")


@dataclass(frozen=True, slots=True)
class Reading:
    """The cumulative counters at one instant (trio's clock)."""

    at: float
    responses: int
    errors: int  # 5xx
    buckets: tuple[int, ...]  # per latency bound, not cumulative; the last one past every bound
    restarts: int
    lanes: tuple[tuple[str, int], ...] = ()  # (lane, depth)
    outbox_pending: int | None = None
    outbox_oldest_seconds: float | None = None
    projection_lag: int | None = None  # the most events any handler has not completed
    dead_letters: int | None = None


def quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile of a histogram (non-cumulative ``counts``, one per bound and one past them),
    interpolated linearly within its bucket as ``histogram_quantile`` does; past the last bound it is the
    last bound. None when the histogram is empty."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * (rank - seen) / count
        seen += count
    return bounds[-1]


def point(prev: Reading, cur: Reading, bounds: Sequence[float]) -> dict[str, Any]:
    """One chart point: what happened between two readings (rates per second, the p99 of the requests
    answered in between, restarts in between) and the gauges as they are at ``cur``."""
    span = cur.at - prev.at
    responses = max(0, cur.responses - prev.responses)
    errors = max(0, cur.errors - prev.errors)
    window = [max(0, c - p) for c, p in zip(cur.buckets, prev.buckets, strict=True)]
    p99 = quantile(bounds, window, 0.99)
    return {
        "at": cur.at,
        "requestRate": responses / span if span > 0 else 0.0,
        "errorRatio": errors / responses if responses else 0.0,
        "p99Ms": None if p99 is None else round(p99 * 1000, 3),
        "restarts": max(0, cur.restarts - prev.restarts),
        "lanes": dict(cur.lanes),
        "outboxPending": cur.outbox_pending,
        "outboxOldestSeconds": cur.outbox_oldest_seconds,
        "projectionLag": cur.projection_lag,
        "deadLetters": cur.dead_letters,
    }


def total_restarts(node: NodeSnapshot) -> int:
    total, stack = 0, [node]
    while stack:
        n = stack.pop()
        total += n.restarts
        if n.kind != "keyed":  # a keyed group's own counts include its keys'; its children are a sample
            stack.extend(n.children)
    return total


@dataclass(slots=True)
class OpsHistory:
    """The sampler and its points. ``read`` takes a ``Reading`` now; ``run`` samples until cancelled."""

    read: Callable[[], Reading]
    bounds: tuple[float, ...]
    config: HistoryConfig = field(default_factory=HistoryConfig)
    _points: deque[dict[str, Any]] = field(init=False)
    _last: Reading | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._points = deque(maxlen=self.config.keep)

    def sample(self) -> None:
        reading = self.read()
        if self._last is not None and reading.at > self._last.at:
            self._points.append(point(self._last, reading, self.bounds))
        self._last = reading

    def points(self, since: float | None = None) -> list[dict[str, Any]]:
        """The points after ``since`` (trio's clock; None: all), oldest first."""
        if since is None or not math.isfinite(since):
            return list(self._points)
        return [p for p in self._points if p["at"] > since]

    async def run(self) -> None:
        while True:
            self.sample()
            await trio.sleep(self.config.interval)


def app_reader(tree: Callable[[], NodeSnapshot], latency: RequestLatency, *, ingest: IngestService | None = None,
               projection: ProjectionService | None = None) -> Callable[[], Reading]:
    """A ``Reading`` of the app's own figures: the request histogram, the tree, the lanes, the outbox."""

    def read() -> Reading:
        classes, buckets = latency.totals()
        lanes: tuple[tuple[str, int], ...] = ()
        if ingest is not None:
            lanes = tuple((lane.lane, lane.depth) for lane in ingest.lane_stats())
        pending = oldest = lag = dead = None
        if projection is not None:
            figures = projection.figures()
            if figures.outbox is not None:
                pending, oldest, dead = (figures.outbox.pending, figures.outbox.oldest_pending_age_seconds,
                                         figures.outbox.dead)
            lag = max((h.pending + h.processing + h.failed for h in figures.lag), default=0)
        return Reading(at=trio.current_time(), responses=sum(classes.values()), errors=classes.get("5xx", 0),
                       buckets=tuple(buckets), restarts=total_restarts(tree()), lanes=lanes, outbox_pending=pending,
                       outbox_oldest_seconds=oldest, projection_lag=lag, dead_letters=dead)

    return read


__all__ = ["HistoryConfig", "OpsHistory", "Reading", "app_reader", "point", "quantile", "total_restarts"]
