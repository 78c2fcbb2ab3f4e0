"""Sleep nights from sleep_stage samples: pure (API.md "Health projections").

Stage samples (HealthKit codes: 0 inBed, 1 asleep, 2 awake, 3 core, 4 deep, 5 REM) less than 3 h apart, over
all sources, form a cluster; a cluster belongs to the night of the local date 12 h before its start. A cluster
with under 3 h asleep that starts between 10:00 and 18:00 local is a nap and is dropped. A cluster's stages come
from the most trusted source that has samples in it (only that source's samples count, its own overlaps once);
start/end are that source's first start and last end. Clusters of the same night date merge into one night.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from storage import SleepNight

from ._rollups import RollupSample, trust_order
from ._spans import Cover, micros

CLUSTER_GAP = timedelta(hours=3)
NIGHT_SHIFT = timedelta(hours=12)  # a cluster starting before noon belongs to the previous evening's night
NAP_ASLEEP_MINUTES = 180.0
NAP_HOURS = (time(10), time(18))  # a short cluster starting in [10:00, 18:00) local is a nap
STAGE_NAMES: dict[int, str] = {0: "inBed", 1: "asleep", 2: "awake", 3: "core", 4: "deep", 5: "rem"}
ASLEEP = frozenset({"asleep", "core", "deep", "rem"})
AWAKE = frozenset({"awake"})


@dataclass(frozen=True, slots=True, kw_only=True)
class _Night:
    night: date
    start_at: datetime
    end_at: datetime
    stages: dict[str, float]  # minutes

    @property
    def asleep(self) -> float:
        return sum(m for name, m in self.stages.items() if name in ASLEEP)

    @property
    def awake(self) -> float:
        return sum(m for name, m in self.stages.items() if name in AWAKE)


def clusters(samples: Sequence[RollupSample]) -> list[list[RollupSample]]:
    """Samples (of every source) grouped into runs whose gaps are under ``CLUSTER_GAP``, in time order."""
    out: list[list[RollupSample]] = []
    reach: datetime | None = None
    for sample in sorted(samples, key=lambda s: (s.start_at, s.end_at, s.source_id, s.value)):
        if reach is None or sample.start_at - reach >= CLUSTER_GAP:
            out.append([])
            reach = sample.end_at
        out[-1].append(sample)
        reach = max(reach, sample.end_at)
    return out


def _night_of(cluster: list[RollupSample], zone: ZoneInfo, ranks: Mapping[str, int]) -> _Night:
    ordered = trust_order(cluster, ranks)
    chosen = [s for s in ordered if s.source_id == ordered[0].source_id]
    cover = Cover()
    stages: dict[str, float] = {}
    for sample in chosen:  # earliest first: where the source overlaps itself, the earlier sample counts
        name = STAGE_NAMES[int(sample.value)]
        span = (micros(sample.start_at), micros(sample.end_at))
        counted = sum(end - start for start, end in cover.uncovered(span))
        cover.add(span)
        if counted > 0:
            stages[name] = stages.get(name, 0.0) + counted / 60_000_000
    start = min(cluster, key=lambda s: s.start_at).start_at
    night = (start.astimezone(zone) - NIGHT_SHIFT).date()
    return _Night(night=night, start_at=min(s.start_at for s in chosen), end_at=max(s.end_at for s in chosen),
                  stages=stages)


def _is_nap(night: _Night, cluster_start: datetime, zone: ZoneInfo) -> bool:
    local = cluster_start.astimezone(zone).time()
    return night.asleep < NAP_ASLEEP_MINUTES and NAP_HOURS[0] <= local < NAP_HOURS[1]


def sleep_nights(user_id: str, samples: Sequence[RollupSample], zone: ZoneInfo,
                 ranks: Mapping[str, int]) -> list[SleepNight]:
    """The nights the samples make, in date order (naps dropped, same-date clusters merged)."""
    merged: dict[date, _Night] = {}
    known = [s for s in samples if s.value in STAGE_NAMES]  # ingest admits only the codes; be safe anyway
    for cluster in clusters(known):
        night = _night_of(cluster, zone, ranks)
        if _is_nap(night, cluster[0].start_at, zone):
            continue
        other = merged.get(night.night)
        if other is not None:
            stages = dict(other.stages)
            for name, minutes in night.stages.items():
                stages[name] = stages.get(name, 0.0) + minutes
            night = _Night(night=night.night, start_at=min(other.start_at, night.start_at),
                           end_at=max(other.end_at, night.end_at), stages=stages)
        merged[night.night] = night
    return [SleepNight(user_id, n.night, n.start_at, n.end_at, n.asleep, n.awake,
                       {name: n.stages[name] for name in STAGE_NAMES.values() if name in n.stages})
            for _, n in sorted(merged.items())]


__all__ = ["CLUSTER_GAP", "STAGE_NAMES", "clusters", "sleep_nights"]
