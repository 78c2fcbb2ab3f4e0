"""Daily rollups and source ranking (actors.projection's pure read models): local days, DST, overlaps."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.projection import RollupSample, daily_rollups, has_rollup, rank_sources, rollup_metrics
from storage import DailyRollup

PROFILE = settings(max_examples=200, derandomize=True, database=None, deadline=None)
BERLIN = ZoneInfo("Europe/Berlin")
UTC_ZONE = ZoneInfo("UTC")
T0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)


def s(source: str, start: datetime, minutes: float, value: float) -> RollupSample:
    return RollupSample(source, start, start + timedelta(minutes=minutes), value)


def by_day(rows: list[DailyRollup]) -> dict[date, float]:
    return {r.local_date: r.sum for r in rows}


def test_ranking_puts_priority_first_then_first_seen() -> None:
    assert rank_sources(["watch"], ["phone", "scale", "watch"]) == {"watch": 0, "phone": 1, "scale": 2}
    assert rank_sources([], ["b", "a"]) == {"b": 0, "a": 1}
    assert rank_sources(["x", "x"], ["a"]) == {"x": 0, "a": 1}  # named twice: ranked once


def test_which_metrics_roll_up() -> None:
    assert has_rollup("steps") and has_rollup("heart_rate")
    assert not has_rollup("sleep_stage") and not has_rollup("nope")
    assert "sleep_stage" not in rollup_metrics() and {"steps", "weight"} <= rollup_metrics()
    with pytest.raises(ValueError):
        daily_rollups("u", "sleep_stage", [], None, UTC_ZONE, {})


def test_a_sample_across_local_midnight_is_split_by_time() -> None:
    # 22:30-23:30 UTC = 23:30-00:30 in Berlin (CET): half on each local day; in UTC all on one.
    sample = s("w", datetime(2026, 11, 3, 22, 30, tzinfo=UTC), 60, 100.0)
    assert by_day(daily_rollups("u", "steps", [sample], None, BERLIN, {})) == {
        date(2026, 11, 3): 50.0, date(2026, 11, 4): 50.0}
    assert by_day(daily_rollups("u", "steps", [sample], None, UTC_ZONE, {})) == {date(2026, 11, 3): 100.0}


@pytest.mark.parametrize(("day", "hours"), [(date(2026, 3, 29), 23), (date(2026, 10, 25), 25)])
def test_dst_days_have_their_real_length(day: date, hours: int) -> None:
    # One sample per real hour for 48 h from local midnight before the day: the DST day gets `hours` of them.
    start = datetime.combine(day - timedelta(days=1), datetime.min.time(), BERLIN).astimezone(UTC)
    samples = [s("w", start + timedelta(hours=h), 60, 1.0) for h in range(72)]
    rows = by_day(daily_rollups("u", "steps", samples, None, BERLIN, {}))
    assert rows[day - timedelta(days=1)] == 24.0
    assert rows[day] == float(hours)
    # A sample spanning the whole DST day, exactly: all of it on the day.
    whole = RollupSample("w", datetime.combine(day, datetime.min.time(), BERLIN),
                         datetime.combine(day + timedelta(days=1), datetime.min.time(), BERLIN), 7.0)
    assert by_day(daily_rollups("u", "steps", [whole], None, BERLIN, {})) == {day: 7.0}


def test_overlapping_watch_and_phone_steps_count_once_from_the_trusted_source() -> None:
    watch = s("watch", T0, 60, 600.0)  # 08:00-09:00
    phone = s("phone", T0 + timedelta(minutes=30), 60, 900.0)  # 08:30-09:30: only 09:00-09:30 is new
    ranks = rank_sources(["watch"], ["phone", "watch"])
    (row,) = daily_rollups("u", "steps", [phone, watch], None, UTC_ZONE, ranks)
    assert (row.sum, row.count, row.min, row.max) == (1050.0, 2, 450.0, 600.0)
    # Trust the phone instead: the watch keeps only 08:00-08:30.
    (row,) = daily_rollups("u", "steps", [phone, watch], None, UTC_ZONE, rank_sources(["phone"], []))
    assert row.sum == 1200.0
    # Unranked sources follow first-seen order.
    (row,) = daily_rollups("u", "steps", [phone, watch], None, UTC_ZONE, rank_sources([], ["phone", "watch"]))
    assert row.sum == 1200.0


def test_same_source_overlaps_count_once_and_instants_respect_coverage() -> None:
    a = s("w", T0, 60, 60.0)
    b = s("w", T0 + timedelta(minutes=30), 60, 60.0)  # overlaps a by 30 min: only its second half counts
    inside = RollupSample("p", T0 + timedelta(minutes=10), T0 + timedelta(minutes=10), 5.0)  # covered instant
    outside = RollupSample("p", T0 + timedelta(hours=5), T0 + timedelta(hours=5), 5.0)
    (row,) = daily_rollups("u", "steps", [a, b, inside, outside], None, UTC_ZONE, {"w": 0, "p": 1})
    assert (row.sum, row.count) == (95.0, 3)


def test_fully_covered_sample_does_not_count_and_deleting_shrinks_the_total() -> None:
    watch = s("watch", T0, 120, 1000.0)
    phone = s("phone", T0 + timedelta(minutes=30), 30, 999.0)
    other_day = s("watch", T0 + timedelta(days=1), 10, 10.0)
    ranks = {"watch": 0, "phone": 1}
    rows = daily_rollups("u", "steps", [watch, phone, other_day], None, UTC_ZONE, ranks)
    assert [(r.local_date, r.sum, r.count) for r in rows] == [(T0.date(), 1000.0, 1), (
        T0.date() + timedelta(days=1), 10.0, 1)]
    # The watch sample deleted (absent): the phone's now counts; the other day, asked for, disappears.
    rows = daily_rollups("u", "steps", [phone], [T0.date(), T0.date() + timedelta(days=1)], UTC_ZONE, ranks)
    assert [(r.local_date, r.sum) for r in rows] == [(T0.date(), 999.0)]


def test_other_metrics_average_the_samples_starting_on_the_day() -> None:
    late = datetime(2026, 11, 3, 22, 59, tzinfo=UTC)  # 23:59 in Berlin
    rows = daily_rollups("u", "heart_rate", [s("w", late, 30, 60.0), s("p", late, 1, 80.0),
                                              s("w", late + timedelta(minutes=2), 1, 100.0)], None, BERLIN, {})
    assert [(r.local_date, r.count, r.sum, r.min, r.max, r.avg, r.unit) for r in rows] == [
        (date(2026, 11, 3), 2, 140.0, 60.0, 80.0, 70.0, "bpm"), (date(2026, 11, 4), 1, 100.0, 100.0, 100.0, 100.0, "bpm")]


def test_days_limits_the_output() -> None:
    samples = [s("w", T0 + timedelta(days=d), 10, 1.0) for d in range(5)]
    rows = daily_rollups("u", "distance", samples, [T0.date() + timedelta(days=2)], UTC_ZONE, {})
    assert [r.local_date for r in rows] == [T0.date() + timedelta(days=2)]


@st.composite
def samples_of(draw: st.DrawFn, source: str, max_size: int = 30) -> list[RollupSample]:
    out = []
    for _ in range(draw(st.integers(0, max_size))):
        start = T0 + timedelta(minutes=draw(st.integers(0, 4 * 24 * 60)))
        length = timedelta(minutes=draw(st.integers(0, 36 * 60)))
        out.append(RollupSample(source, start, start + length, draw(st.floats(0.0, 1e4))))
    return out


def _overlap(x: RollupSample, k: RollupSample) -> bool:
    def covers(span: RollupSample, at: datetime) -> bool:
        return span.start_at <= at < span.end_at

    if x.start_at == x.end_at:
        return covers(k, x.start_at)
    if k.start_at == k.end_at:
        return covers(x, k.start_at)
    return x.start_at < k.end_at and k.start_at < x.end_at


def _disjoint(samples: list[RollupSample]) -> list[RollupSample]:
    """Keep samples that overlap none kept before them (so every moment has one sample)."""
    kept: list[RollupSample] = []
    for x in samples:
        if not any(_overlap(x, k) for k in kept):
            kept.append(x)
    return kept


@PROFILE
@given(samples_of("w"), st.sampled_from(["UTC", "Europe/Berlin", "America/Santiago", "Asia/Kathmandu"]))
def test_one_source_without_overlaps_keeps_its_total_over_all_days(samples: list[RollupSample], zone: str) -> None:
    samples = _disjoint(samples)
    rows = daily_rollups("u", "steps", samples, None, ZoneInfo(zone), {})
    assert math.isclose(math.fsum(r.sum for r in rows), math.fsum(x.value for x in samples), rel_tol=1e-9,
                        abs_tol=1e-6)


@PROFILE
@given(samples_of("w"), st.data())
def test_a_lower_ranked_source_fully_covered_changes_nothing(samples: list[RollupSample], data: st.DataObject) -> None:
    spans = [x for x in samples if x.end_at > x.start_at]
    covered = []
    for x in spans[:10]:  # a phone sample inside each watch sample
        length = (x.end_at - x.start_at) // timedelta(minutes=1)
        a = data.draw(st.integers(0, length - 1))  # an instant at the end would be outside [start, end)
        b = data.draw(st.integers(a, length))
        covered.append(RollupSample("phone", x.start_at + timedelta(minutes=a), x.start_at + timedelta(minutes=b),
                                    data.draw(st.floats(0.0, 1e4))))
    ranks = rank_sources(["w"], ["phone"])
    before = daily_rollups("u", "steps", samples, None, BERLIN, ranks)
    after = daily_rollups("u", "steps", samples + covered, None, BERLIN, ranks)
    assert [(r.local_date, r.sum) for r in after] == [(r.local_date, r.sum) for r in before]
