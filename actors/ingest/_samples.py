"""Per-sample validation and normalization: pure, so every rule is testable without I/O.

A request's samples are judged one by one: a bad sample is listed in ``rejected`` with its index and
a code, the others go on. Two samples with the same identity in one request: the later one wins,
exactly as if they had come in two requests. One more rejection is only known in the transaction:
a sample whose identity is deleted (``SAMPLE_DELETED``, see :func:`refused_samples`).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

import trio

from storage import PreparedSamples, SampleIn

from ._units import OutOfRange, UnknownMetric, UnknownUnit, to_canonical


class SampleLike(Protocol):
    """What the lane reads of an uploaded sample: the HTTP layer's validated model passes as it is
    (no copy per sample); :class:`SampleInput` is the plain-data form."""

    @property
    def source_id(self) -> str: ...
    @property
    def source_record_id(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def value(self) -> float | None: ...
    @property
    def unit(self) -> str: ...
    @property
    def start_at(self) -> datetime: ...
    @property
    def end_at(self) -> datetime: ...
    @property
    def metadata(self) -> dict[str, Any]: ...


class DeletionLike(Protocol):
    @property
    def source_id(self) -> str: ...
    @property
    def source_record_id(self) -> str: ...
    @property
    def start_at(self) -> datetime: ...


class PreparesSamples(Protocol):
    """A store, or its ``preparer`` (the same check as plain data, for another process)."""

    def prepare_samples(self, rows: Sequence[SampleIn]) -> PreparedSamples: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleInput:
    source_id: str
    source_record_id: str
    metric: str
    value: float | None
    unit: str
    start_at: datetime
    end_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeletionInput:
    source_id: str
    source_record_id: str
    start_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    index: int
    code: str
    message: str


def normalize_samples(
    samples: Sequence[SampleLike], *, blocked_metrics: Iterable[str] = ()
) -> tuple[list[SampleIn], list[Rejection]]:
    """The accepted samples as the store's rows (canonical unit), and the rejections."""
    blocked = frozenset(blocked_metrics)
    accepted: dict[tuple[str, str, datetime], SampleIn] = {}
    rejected: list[Rejection] = []
    for index, sample in enumerate(samples):
        if sample.metric in blocked:
            rejected.append(Rejection(index=index, code="METRIC_BLOCKED",
                                      message=f"uploads of {sample.metric} are blocked in your settings"))
            continue
        if sample.value is None or not math.isfinite(sample.value):
            rejected.append(Rejection(index=index, code="NON_FINITE_VALUE", message="value must be a finite number"))
            continue
        if sample.end_at < sample.start_at:
            rejected.append(Rejection(index=index, code="INVALID_TIME_RANGE", message="endAt is before startAt"))
            continue
        try:
            value, unit = to_canonical(sample.metric, sample.value, sample.unit)
        except UnknownMetric as exc:
            rejected.append(Rejection(index=index, code="UNKNOWN_METRIC", message=str(exc)))
            continue
        except UnknownUnit as exc:
            rejected.append(Rejection(index=index, code="UNKNOWN_UNIT", message=str(exc)))
            continue
        except OutOfRange as exc:
            rejected.append(Rejection(index=index, code="VALUE_OUT_OF_RANGE", message=str(exc)))
            continue
        identity = (sample.source_id, sample.source_record_id, sample.start_at)
        accepted.pop(identity, None)  # re-insert so the later one keeps its order
        accepted[identity] = SampleIn(sample.source_id, sample.source_record_id, sample.metric, value, unit,
                                      sample.start_at, sample.end_at, sample.metadata)
    return list(accepted.values()), rejected


def local_date(moment: datetime, timezone: str) -> date:
    return moment.astimezone(ZoneInfo(timezone)).date()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)


class _Started(Protocol):
    @property
    def metric(self) -> str: ...
    @property
    def start_at(self) -> datetime: ...


def sample_minutes(samples: Iterable[_Started]) -> dict[str, set[int]]:
    """The UTC minutes (since the epoch) each metric's samples start in: all that affected keys
    need, whatever the user's time zone (since 1972 every UTC offset is whole minutes, so a minute
    lies within one local date; see local_keys for the older ones)."""
    minutes: dict[str, set[int]] = {}
    epoch, minute = _EPOCH, _MINUTE
    for s in samples:
        at = (s.start_at - epoch) // minute
        found = minutes.get(s.metric)
        if found is None:
            minutes[s.metric] = {at}
        else:
            found.add(at)
    return minutes


def local_keys(minutes: Mapping[str, Iterable[int]], timezone: str) -> list[tuple[str, str]]:
    """The (metric, local date) pairs of ``sample_minutes`` in ``timezone``, sorted."""
    zone = ZoneInfo(timezone)
    dates: dict[int, tuple[str, ...]] = {}
    keys: set[tuple[str, str]] = set()
    for metric, moments in minutes.items():
        for at in moments:
            days = dates.get(at)
            if days is None:
                days = dates[at] = _local_days(_EPOCH + at * _MINUTE, zone)
            for day in days:
                keys.add((metric, day))
    return sorted(keys)


_LAST_OF_MINUTE = timedelta(seconds=59, microseconds=999_999)


def _local_days(minute: datetime, zone: ZoneInfo) -> tuple[str, ...]:
    local = minute.astimezone(zone)
    offset = local.utcoffset()
    if offset is None or not offset.seconds % 60:
        return (local.date().isoformat(),)
    # A local mean time offset (before 1972) with seconds: local midnight may fall inside this
    # minute, so name both days it touches (one extra recompute at worst).
    last = (minute + _LAST_OF_MINUTE).astimezone(zone).date().isoformat()
    return tuple(dict.fromkeys((local.date().isoformat(), last)))


def accepted_indices(samples: Sequence[SampleLike], rejected: Iterable[Rejection]) -> list[int]:
    """The request index of each row :func:`normalize_samples` gave for ``samples`` (in its order),
    from the rejections it made: per identity the last sample not rejected, placed as it places it."""
    skip = {r.index for r in rejected}
    where: dict[tuple[str, str, datetime], int] = {}
    for index, sample in enumerate(samples):
        if index not in skip:
            identity = (sample.source_id, sample.source_record_id, sample.start_at)
            where.pop(identity, None)
            where[identity] = index
    return list(where.values())


def refused_samples(samples: Sequence[SampleLike], upload: PreparedUpload,
                    refused: Sequence[int]) -> tuple[tuple[Rejection, ...], dict[str, set[int]]]:
    """For the rows of ``upload`` the store refused (``UpsertCounts.refused``: their identity is
    deleted, and stays so): their rejections, by request index, and the ``sample_minutes`` of the
    rows that were written. Only on that path, so an upload keeps no index per row."""
    indices = accepted_indices(samples, upload.rejected)
    gone = {indices[row] for row in refused}
    rejections = tuple(Rejection(index=index, code="SAMPLE_DELETED",
                                 message="this sample was deleted, and a deleted sample's identity is never reused")
                       for index in sorted(gone))
    return rejections, sample_minutes(samples[i] for i in indices if i not in gone)


def affected_keys(samples: Iterable[SampleIn], timezone: str) -> list[tuple[str, str]]:
    """The (metric, local date) pairs a change touches, for projections to recompute."""
    return local_keys(sample_minutes(samples), timezone)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class PreparedUpload:
    """An upload's samples judged, converted and checked by the store before they queue for their
    lane (see :func:`prepare_upload`): the lane's own work per request is then small."""

    rows: PreparedSamples
    rejected: tuple[Rejection, ...]
    metrics: frozenset[str]  # every metric the upload names, rejected samples' too
    minutes: dict[str, set[int]]  # of the accepted samples: see sample_minutes
    blocked: frozenset[str] = frozenset()  # of ``metrics``, those judged blocked

    def applies_to(self, blocked_metrics: Iterable[str]) -> bool:
        """Whether this preparation holds for a user blocking these metrics: it judged exactly the
        ones of them this upload names (usually none: uploads are prepared before settings are read)."""
        return self.metrics.intersection(blocked_metrics) == self.blocked


def preparing_upload(samples: Sequence[SampleLike], store: PreparesSamples, *,
                     blocked_metrics: Iterable[str] = ()) -> Generator[None, None, PreparedUpload]:
    """:func:`prepare_upload` in steps: it yields between them (each well under a millisecond for
    a 500-sample upload), so an async caller can let other tasks run in between."""
    blocked = frozenset(blocked_metrics)
    rows, rejected = normalize_samples(samples, blocked_metrics=blocked)
    yield
    checked = store.prepare_samples(rows)
    yield
    metrics = frozenset(s.metric for s in samples)
    return PreparedUpload(rows=checked, rejected=tuple(rejected), metrics=metrics, minutes=sample_minutes(rows),
                          blocked=metrics & blocked)


T = TypeVar("T")


def run_steps(steps: Generator[None, None, T]) -> T:
    """Drive a stepwise computation (``preparing_upload``, ...) to its end in one go."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def run_steps_async(steps: Generator[None, None, T]) -> T:
    """Drive a stepwise computation with a trio checkpoint between its steps, so other tasks on
    this thread (the lanes' transactions resuming) go on in between."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        await trio.lowlevel.checkpoint()


def prepare_upload(samples: Sequence[SampleLike], store: PreparesSamples, *,
                   blocked_metrics: Iterable[str] = ()) -> PreparedUpload:
    """Everything per sample an upload needs before its transaction: pure but for the store's
    checks (no I/O). Raises the store's InvalidData for data it would refuse."""
    return run_steps(preparing_upload(samples, store, blocked_metrics=blocked_metrics))
