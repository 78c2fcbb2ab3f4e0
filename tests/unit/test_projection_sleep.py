"""Sleep nights (actors.projection's pure read model): clusters, naps, midnight, DST, source ranking."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.projection import RollupSample, rank_sources, sleep_nights

PROFILE = settings(max_examples=150, derandomize=True, database=None, deadline=None)
BERLIN = ZoneInfo("Europe/Berlin")
IN_BED, ASLEEP, AWAKE, CORE, DEEP, REM = range(6)


def at(day: date, hour: int, minute: int = 0, zone: ZoneInfo = BERLIN) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)


def stage(source: str, start: datetime, minutes: float, code: int) -> RollupSample:
    start = start.astimezone(UTC)  # real minutes: aware arithmetic in Berlin would be wall-clock
    return RollupSample(source, start, start + timedelta(minutes=minutes), float(code))


def test_a_night_across_midnight_sums_its_stages() -> None:
    d = date(2026, 11, 3)
    samples = [stage("w", at(d, 23), 60, CORE), stage("w", at(d + timedelta(days=1), 0), 90, DEEP),
               stage("w", at(d + timedelta(days=1), 1, 30), 10, AWAKE),
               stage("w", at(d + timedelta(days=1), 1, 40), 140, REM)]
    (night,) = sleep_nights("u", samples, BERLIN, {})
    assert night.night_date == d and night.user_id == "u"
    assert (night.start_at, night.end_at) == (at(d, 23), at(d + timedelta(days=1), 4))  # equal as instants
    assert (night.asleep_minutes, night.awake_minutes) == (290.0, 10.0)
    assert night.stages == {"awake": 10.0, "core": 60.0, "deep": 90.0, "rem": 140.0}


def test_gaps_of_three_hours_split_clusters_and_same_night_clusters_merge() -> None:
    d = date(2026, 11, 3)
    first = stage("w", at(d, 22), 120, ASLEEP)  # 22:00-00:00
    second = stage("w", at(d + timedelta(days=1), 2, 59), 60, ASLEEP)  # 2 h 59 min later: same cluster
    third = stage("w", at(d + timedelta(days=1), 7), 60, ASLEEP)  # 3 h 01 min after 03:59: a new cluster
    (night,) = sleep_nights("u", [first, second, third], BERLIN, {})  # both clusters start before noon+12h
    assert (night.night_date, night.asleep_minutes) == (d, 240.0)
    assert (night.start_at, night.end_at) == (at(d, 22), at(d + timedelta(days=1), 8))


def test_a_nap_is_not_a_night_but_a_long_day_sleep_is() -> None:
    d = date(2026, 11, 3)
    nap = [stage("w", at(d, 14), 90, ASLEEP)]
    assert sleep_nights("u", nap, BERLIN, {}) == []
    long_day_sleep = [stage("w", at(d, 10), 200, ASLEEP)]  # a night shift worker's sleep: 3 h 20 min
    (night,) = sleep_nights("u", long_day_sleep, BERLIN, {})
    assert night.night_date == d - timedelta(days=1)  # 12 h before 10:00 is the previous evening
    evening_nap = [stage("w", at(d, 18), 60, ASLEEP)]  # 18:00 is outside [10:00, 18:00)
    assert [n.night_date for n in sleep_nights("u", evening_nap, BERLIN, {})] == [d]


def test_dst_nights_count_real_minutes() -> None:
    for day, expected in ((date(2026, 3, 28), 7 * 60.0), (date(2026, 10, 24), 9 * 60.0)):
        # 23:00 to 07:00 on the wall clock: 7 real hours when the clocks go forward, 9 when they go back.
        start, end = at(day, 23), at(day + timedelta(days=1), 7)
        real = (end.astimezone(UTC) - start.astimezone(UTC)) / timedelta(minutes=1)
        (night,) = sleep_nights("u", [stage("w", start, real, ASLEEP)], BERLIN, {})
        assert (night.night_date, night.asleep_minutes) == (day, expected)


def test_the_higher_ranked_source_decides_a_night_and_counts_its_overlaps_once() -> None:
    d = date(2026, 11, 3)
    watch = [stage("watch", at(d, 23), 60, DEEP), stage("watch", at(d, 23, 30), 60, DEEP)]  # overlap 30 min
    phone = [stage("phone", at(d, 22), 600, ASLEEP)]
    (night,) = sleep_nights("u", watch + phone, BERLIN, rank_sources(["watch"], ["phone", "watch"]))
    assert night.stages == {"deep": 90.0}
    assert (night.start_at, night.end_at) == (at(d, 23), at(d + timedelta(days=1), 0, 30))
    (night,) = sleep_nights("u", watch + phone, BERLIN, rank_sources([], ["phone", "watch"]))
    assert night.stages == {"asleep": 600.0}


def test_unknown_codes_are_ignored_and_in_bed_is_neither_asleep_nor_awake() -> None:
    d = date(2026, 11, 3)
    (night,) = sleep_nights("u", [stage("w", at(d, 22), 600, IN_BED), stage("w", at(d, 22), 10, 9)], BERLIN, {})
    assert (night.asleep_minutes, night.awake_minutes, dict(night.stages)) == (0.0, 0.0, {"inBed": 600.0})


@PROFILE
@given(st.lists(st.tuples(st.integers(0, 5 * 24 * 60), st.integers(1, 600), st.integers(0, 5),
                          st.sampled_from(["a", "b"])), max_size=25))
def test_nights_are_ordered_distinct_and_never_exceed_their_span(raw: list[tuple[int, int, int, str]]) -> None:
    t0 = at(date(2026, 10, 22), 0)
    samples = [stage(src, t0 + timedelta(minutes=m), length, code) for m, length, code, src in raw]
    nights = sleep_nights("u", samples, BERLIN, {"a": 0, "b": 1})
    dates = [n.night_date for n in nights]
    assert dates == sorted(set(dates))
    total = sum(length for _, length, _, _ in raw)
    for n in nights:
        assert n.start_at <= n.end_at
        assert sum(n.stages.values()) <= total + 1e-6
        assert n.asleep_minutes + n.awake_minutes <= sum(n.stages.values()) + 1e-6
