"""Daily rollups from raw samples: pure (API.md "Health projections").

Cumulative metrics (steps, active energy, distance) report each local day's total. A sample's value is spread
uniformly over [start, end); where samples overlap, each moment counts once, from the most trusted source
(``ranks``; within one source the earlier-starting sample). Only the uncovered part of a sample counts, and a
part crossing local midnight is split by time between the two days. An instant sample (start == end) counts
whole on its day unless something more trusted covers that instant. ``count`` is the samples contributing to a
day, ``min``/``max`` their contributions.

Other numeric metrics report sum/min/max/count (avg = sum / count) over the samples that start on the day,
with no overlap rule. Days are the user's local days, so a DST day has 23 or 25 hours.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from datetime import date, datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

from actors.ingest import REGISTRY
from storage import DailyRollup

from ._spans import Cover, local_day, micros, split_by_day

CUMULATIVE = frozenset({"steps", "active_energy", "distance"})
_NO_ROLLUP = frozenset({"sleep_stage"})  # categories, not quantities: see sleep nights


class RollupSample(NamedTuple):
    """The part of a stored sample a read model reads."""

    source_id: str
    start_at: datetime
    end_at: datetime
    value: float


def has_rollup(metric: str) -> bool:
    return metric in REGISTRY and metric not in _NO_ROLLUP


def rollup_metrics() -> frozenset[str]:
    return frozenset(name for name in REGISTRY if has_rollup(name))


def trust_order(samples: Sequence[RollupSample], ranks: Mapping[str, int]) -> list[RollupSample]:
    """Most trusted first: by source rank (unranked sources last, by id), then earliest start; the rest of the
    key only makes the order total, so equal inputs in any order give the same answer."""
    last = len(ranks)
    return sorted(samples, key=lambda s: (ranks.get(s.source_id, last), s.source_id, s.start_at, s.end_at,
                                          s.value))


def _cumulative(samples: Sequence[RollupSample], zone: ZoneInfo,
                ranks: Mapping[str, int]) -> dict[date, list[float]]:
    """local day -> each contributing sample's share of its value on that day."""
    cover = Cover()
    shares: dict[date, list[float]] = {}
    for sample in trust_order(samples, ranks):
        start, end = micros(sample.start_at), micros(sample.end_at)
        if end <= start:
            if not cover.covers(start):
                shares.setdefault(local_day(start, zone), []).append(sample.value)
            continue
        mine: dict[date, int] = {}
        for part in cover.uncovered((start, end)):
            for day, length in split_by_day(part, zone):
                mine[day] = mine.get(day, 0) + length
        cover.add((start, end))
        for day, length in mine.items():
            shares.setdefault(day, []).append(sample.value * length / (end - start))
    return shares


def _by_start(samples: Sequence[RollupSample], zone: ZoneInfo) -> dict[date, list[float]]:
    values: dict[date, list[float]] = {}
    for sample in samples:
        values.setdefault(sample.start_at.astimezone(zone).date(), []).append(sample.value)
    return values


def daily_rollups(user_id: str, metric: str, samples: Sequence[RollupSample], days: Collection[date] | None,
                  zone: ZoneInfo, ranks: Mapping[str, int]) -> list[DailyRollup]:
    """The rollups of ``days`` (None: every day the samples reach), in date order; a day no sample
    contributes to has no row. ``samples`` must include every sample that overlaps those days."""
    if not has_rollup(metric):
        raise ValueError(f"{metric!r} has no daily rollup")
    per_day = _cumulative(samples, zone, ranks) if metric in CUMULATIVE else _by_start(samples, zone)
    unit = REGISTRY[metric].unit
    wanted = None if days is None else set(days)
    return [DailyRollup(user_id, metric, day, unit, len(values), math.fsum(values), min(values), max(values))
            for day, values in sorted(per_day.items()) if values and (wanted is None or day in wanted)]


__all__ = ["CUMULATIVE", "RollupSample", "daily_rollups", "has_rollup", "rollup_metrics", "trust_order"]
