"""The read models the worker runs: daily rollups and sleep nights, recomputed from raw samples.

Each ``project`` reads the user's settings (timezone, source priority) and sources, reads the samples the work
touches, computes with the pure functions (``_rollups``, ``_sleep``) and defers the ``replace_range`` writes;
the worker commits them with the checkpoints. Full work (settings changed, or an event that named no keys)
recomputes everything the user has: the replaced range is every date, so rows whose samples are gone vanish.

Keyed work recomputes exactly the named (metric, local date) keys, one contiguous run of days at a time. A
day's samples are those overlapping its local [00:00, 24:00); the scan reaches back ``LOOKBACK`` (2 days) for
samples that began earlier, so a sample longer than that which started before the day is not seen there.
Sleep recomputes the nights [first - 1, last] of each run (a sample on day d belongs to night d - 1 or d),
reading stage samples from 12:00 two days before the first day to 12:00 two days after the last, so each of those nights' clusters is
seen whole unless a chain of samples under 3 h apart runs on for more than a day.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from storage import Transaction

from ._ranking import rank_sources
from ._rollups import RollupSample, daily_rollups, has_rollup, rollup_metrics
from ._sessions import ProductImpacts, SessionImpacts
from ._sleep import sleep_nights
from ._spans import day_runs
from ._work import SAMPLES_CHANGED, SETTINGS_CHANGED, UserWork
from ._worker import Projection

SLEEP_METRIC = "sleep_stage"
FIRST_DAY, LAST_DAY = date(1, 1, 2), date(9999, 12, 30)  # "every date" for a full recompute
_DAY = timedelta(days=1)
_UTC = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True, kw_only=True)
class _UserContext:
    zone: ZoneInfo
    ranks: dict[str, int]


def _local(day: date, zone: ZoneInfo, at: time = time(0)) -> datetime:
    return datetime.combine(day, at, zone)


async def _contexts(tx: Transaction, users: Sequence[str]) -> dict[str, _UserContext]:
    """Every user's zone and source ranking: one statement for the whole batch (two on SQLite)."""
    (found,) = await tx.run(tx.users.projection_contexts_many(users))
    return {user: _UserContext(zone=ZoneInfo(settings.timezone), ranks=rank_sources(settings.source_priority, sources))
            for user, (settings, sources) in found.items()}


async def _read_all(tx: Transaction, wanted: Sequence[tuple[str, str, datetime | None, datetime | None]]
                    ) -> list[list[RollupSample]]:
    """The samples of each (user, metric, start, end) wanted: one statement on PostgreSQL."""
    windows = [(user, metric, start if start is not None else _local(FIRST_DAY, _UTC),
                end if end is not None else _local(LAST_DAY, _UTC)) for user, metric, start, end in wanted]
    (results,) = await tx.run(tx.samples.for_projection_many(windows))
    return [[RollupSample._make(row) for row in rows] for rows in results]


class _Subscribed(ABC):
    """Both read models: the same events, and ``project`` is ``project_many`` of one user."""

    __slots__ = ()

    async def project(self, tx: Transaction, work: UserWork) -> None:
        await self.project_many(tx, [work])

    @abstractmethod
    async def project_many(self, tx: Transaction, works: Sequence[UserWork]) -> None: ...

    @property
    def depends_on(self) -> str | None:
        return None

    def subscribes(self, event_type: str) -> bool:
        return event_type in (SAMPLES_CHANGED, SETTINGS_CHANGED)


class DailyRollups(_Subscribed):
    """Per (metric, local day) totals or averages: ``tx.rollups``."""

    __slots__ = ()

    @property
    def name(self) -> str:
        return "daily_rollups"

    def concerns(self, work: UserWork) -> bool:
        return work.full or any(has_rollup(metric) for metric, _ in work.keys)

    async def project_many(self, tx: Transaction, works: Sequence[UserWork]) -> None:
        """Every user's changed days, read in two crossings whatever the number of users."""
        contexts = await _contexts(tx, [w.user_id for w in works])
        wanted: list[tuple[str, str, datetime | None, datetime | None]] = []
        plans: list[tuple[str, str, date, date, list[date] | None]] = []
        for work in works:
            user, context = work.user_id, contexts[work.user_id]
            if work.full:
                for metric in sorted(rollup_metrics()):
                    wanted.append((user, metric, None, None))
                    plans.append((user, metric, FIRST_DAY, LAST_DAY, None))
                continue
            for metric in sorted({m for m, _ in work.keys if has_rollup(m)}):
                for first, last in day_runs(work.dates_of(metric)):
                    wanted.append((user, metric, _local(first, context.zone), _local(last + _DAY, context.zone)))
                    plans.append((user, metric, first, last,
                                  [first + timedelta(days=i) for i in range((last - first).days + 1)]))
        replaced = []
        for (user, metric, first, last, days), samples in zip(plans, await _read_all(tx, wanted), strict=True):
            context = contexts[user]
            replaced.append((user, metric, first, last,
                             daily_rollups(user, metric, samples, days, context.zone, context.ranks)))
        if replaced:
            tx.defer(tx.rollups.replace_ranges(replaced))


class SleepNights(_Subscribed):
    """Per night: stages, asleep and awake minutes from the most trusted source: ``tx.sleep``."""

    __slots__ = ()

    @property
    def name(self) -> str:
        return "sleep_nights"

    def concerns(self, work: UserWork) -> bool:
        return work.full or bool(work.dates_of(SLEEP_METRIC))

    async def project_many(self, tx: Transaction, works: Sequence[UserWork]) -> None:
        todo = [(w, [] if w.full else day_runs(w.dates_of(SLEEP_METRIC))) for w in works if self.concerns(w)]
        if not todo:
            return
        contexts = await _contexts(tx, [w.user_id for w, _ in todo])
        wanted: list[tuple[str, str, datetime | None, datetime | None]] = []
        plans: list[tuple[str, date, date]] = []
        for work, runs in todo:
            user, zone = work.user_id, contexts[work.user_id].zone
            if work.full:
                wanted.append((user, SLEEP_METRIC, None, None))
                plans.append((user, FIRST_DAY, LAST_DAY))
                continue
            for first, last in runs:
                nights_from, nights_to = first - _DAY, last
                wanted.append((user, SLEEP_METRIC, _local(nights_from - _DAY, zone, time(12)),
                               _local(nights_to + 2 * _DAY, zone, time(12))))
                plans.append((user, nights_from, nights_to))
        for (user, nights_from, nights_to), samples in zip(plans, await _read_all(tx, wanted), strict=True):
            context = contexts[user]
            nights = [n for n in sleep_nights(user, samples, context.zone, context.ranks)
                      if nights_from <= n.night_date <= nights_to]
            tx.defer(tx.sleep.replace_range(user, nights_from, nights_to, nights))


def default_projections() -> list[Projection]:
    return [DailyRollups(), SleepNights(), SessionImpacts(), ProductImpacts()]


__all__ = ["FIRST_DAY", "LAST_DAY", "DailyRollups", "SleepNights", "day_runs", "default_projections", "has_rollup",
           "rollup_metrics"]
