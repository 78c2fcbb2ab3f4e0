"""The pure parts of ingestion: the unit registry, per-sample judgement, local dates, the retry hint."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.ingest import (
    REGISTRY,
    DrainRate,
    OutOfRange,
    SampleInput,
    UnknownMetric,
    UnknownUnit,
    accepted_indices,
    affected_keys,
    local_date,
    local_keys,
    normalize_samples,
    prepare_upload,
    refused_samples,
    retry_after_ms,
    sample_minutes,
    to_canonical,
)
from storage import InvalidData, open_store

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def inp(record: str = "r1", *, metric: str = "heart_rate", value: float | None = 61.0, unit: str = "bpm",
        start: datetime = T0, end: datetime | None = None, source: str = "w") -> SampleInput:
    return SampleInput(source_id=source, source_record_id=record, metric=metric, value=value, unit=unit,
                       start_at=start, end_at=end or start)


# -- the registry -------------------------------------------------------------------------------------
def test_the_minimum_registry_of_api_md_with_canonical_units() -> None:
    required = {"heart_rate": "bpm", "steps": "count", "active_energy": "kcal", "distance": "m",
                "sleep_stage": "category", "hrv_sdnn": "ms", "spo2": "%", "weight": "kg"}
    assert {m: REGISTRY[m].unit for m in required} == required


# (metric, value, unit, expected canonical value, canonical unit): factors from their definitions
CONVERSIONS = [
    ("distance", 1.5, "km", 1500.0, "m"),
    ("distance", 1.0, "mi", 1609.344, "m"),
    ("active_energy", 4.184, "kJ", 1.0, "kcal"),
    ("active_energy", 1000.0, "kJ", 239.0057361376673, "kcal"),
    ("weight", 1.0, "lb", 0.45359237, "kg"),
    ("weight", 150.0, "lb", 68.0388555, "kg"),
    ("hrv_sdnn", 0.045, "s", 45.0, "ms"),
    ("spo2", 0.97, "fraction", 97.0, "%"),
    ("body_temperature", 98.6, "degF", 37.0, "degC"),
    ("body_temperature", 32.0, "degF", 0.0, "degC"),
    ("body_temperature", -40.0, "degF", -40.0, "degC"),
    ("heart_rate", 72.0, "bpm", 72.0, "bpm"),
    ("steps", 12.0, "count", 12.0, "count"),
]


@pytest.mark.parametrize("metric, value, unit, expected, canonical", CONVERSIONS)
def test_known_units_convert_to_the_canonical_one(metric: str, value: float, unit: str, expected: float,
                                                  canonical: str) -> None:
    got, got_unit = to_canonical(metric, value, unit)
    assert got_unit == canonical
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(x=st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_conversions_are_the_defined_linear_maps(x: float) -> None:
    assert to_canonical("distance", x, "km")[0] == pytest.approx(x * 1000)
    assert to_canonical("active_energy", x, "kJ")[0] == pytest.approx(x / 4.184)
    assert to_canonical("weight", x, "lb")[0] == pytest.approx(x * 0.45359237)
    assert to_canonical("hrv_sdnn", x, "s")[0] == pytest.approx(x * 1000)
    assert to_canonical("body_temperature", x, "degF")[0] == pytest.approx((x - 32) * 5 / 9, abs=1e-9)
    assert to_canonical("distance", x, "m") == (x, "m")


def test_unknown_metric_and_unit_are_told_apart() -> None:
    with pytest.raises(UnknownMetric, match="mood"):
        to_canonical("mood", 1.0, "points")
    with pytest.raises(UnknownUnit, match="furlong"):
        to_canonical("distance", 1.0, "furlong")
    with pytest.raises(UnknownUnit):
        to_canonical("heart_rate", 60.0, "km")  # a known unit, of another metric


@pytest.mark.parametrize("metric, value, unit", [
    ("spo2", 1.5, "fraction"), ("spo2", 101.0, "%"), ("steps", -1.0, "count"), ("heart_rate", 401.0, "bpm"),
    ("sleep_stage", 2.5, "category"), ("sleep_stage", 6.0, "category"),
])
def test_out_of_range_values_are_refused(metric: str, value: float, unit: str) -> None:
    with pytest.raises(OutOfRange):
        to_canonical(metric, value, unit)


# -- per-sample judgement --------------------------------------------------------------------------------
def test_each_bad_sample_is_rejected_with_its_index_and_the_rest_go_on() -> None:
    samples = [
        inp("ok1"),
        inp("u", metric="distance", value=1.0, unit="furlong"),
        inp("m", metric="mood", unit="x"),
        inp("nan", value=math.nan),
        inp("inf", value=math.inf),
        inp("none", value=None),
        inp("time", start=T0, end=T0 - timedelta(seconds=1)),
        inp("range", metric="spo2", value=120.0, unit="%"),
        inp("ok2", metric="distance", value=2.0, unit="km"),
    ]
    accepted, rejected = normalize_samples(samples)
    assert [(r.index, r.code) for r in rejected] == [
        (1, "UNKNOWN_UNIT"), (2, "UNKNOWN_METRIC"), (3, "NON_FINITE_VALUE"), (4, "NON_FINITE_VALUE"),
        (5, "NON_FINITE_VALUE"), (6, "INVALID_TIME_RANGE"), (7, "VALUE_OUT_OF_RANGE")]
    assert all(r.message for r in rejected)
    assert [(a.source_record_id, a.value, a.unit) for a in accepted] == [("ok1", 61.0, "bpm"), ("ok2", 2000.0, "m")]


def test_blocked_metrics_are_rejected_before_anything_else() -> None:
    samples = [inp("a", metric="steps", value=math.nan, unit="nope"), inp("b"), inp("c", metric="steps", value=1,
                                                                                  unit="count")]
    accepted, rejected = normalize_samples(samples, blocked_metrics=["steps"])
    assert [(r.index, r.code) for r in rejected] == [(0, "METRIC_BLOCKED"), (2, "METRIC_BLOCKED")]
    assert [a.source_record_id for a in accepted] == ["b"]


def test_equal_start_and_end_is_a_valid_instant() -> None:
    accepted, rejected = normalize_samples([inp(start=T0, end=T0)])
    assert rejected == [] and len(accepted) == 1


def test_a_repeated_identity_keeps_the_later_sample() -> None:
    accepted, _ = normalize_samples([inp("r", value=60.0), inp("x"), inp("r", value=70.0),
                                     inp("r", value=80.0, start=T0 + timedelta(seconds=1))])
    assert [(a.source_record_id, a.value, a.start_at) for a in accepted] == [
        ("x", 61.0, T0), ("r", 70.0, T0), ("r", 80.0, T0 + timedelta(seconds=1))]


# -- local dates ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("moment, zone, expected", [
    (datetime(2026, 11, 24, 23, 30, tzinfo=UTC), "Europe/Berlin", date(2026, 11, 25)),   # CET +1
    (datetime(2026, 11, 24, 22, 59, tzinfo=UTC), "Europe/Berlin", date(2026, 11, 24)),
    (datetime(2026, 7, 1, 22, 0, tzinfo=UTC), "Europe/Berlin", date(2026, 7, 2)),         # CEST +2
    (datetime(2026, 7, 1, 21, 59, tzinfo=UTC), "Europe/Berlin", date(2026, 7, 1)),
    (datetime(2026, 11, 24, 5, 0, tzinfo=UTC), "America/Los_Angeles", date(2026, 11, 23)),
    (datetime(2026, 11, 24, 23, 30, tzinfo=UTC), "UTC", date(2026, 11, 24)),
    (datetime(2026, 11, 24, 11, 0, tzinfo=UTC), "Pacific/Kiritimati", date(2026, 11, 25)),  # +14
])
def test_local_date_is_in_the_users_timezone(moment: datetime, zone: str, expected: date) -> None:
    assert local_date(moment, zone) == expected


def test_affected_keys_are_distinct_sorted_metric_local_date_pairs() -> None:
    accepted, _ = normalize_samples([
        inp("a", start=datetime(2026, 11, 24, 23, 30, tzinfo=UTC)),
        inp("b", start=datetime(2026, 11, 24, 10, 0, tzinfo=UTC)),
        inp("c", start=datetime(2026, 11, 25, 10, 0, tzinfo=UTC)),
        inp("d", metric="steps", value=3, unit="count", start=datetime(2026, 11, 24, 1, 0, tzinfo=UTC)),
    ])
    assert affected_keys(accepted, "Europe/Berlin") == [
        ("heart_rate", "2026-11-24"), ("heart_rate", "2026-11-25"), ("steps", "2026-11-24")]
    assert affected_keys(accepted, "UTC") == [
        ("heart_rate", "2026-11-24"), ("heart_rate", "2026-11-25"), ("steps", "2026-11-24")]
    assert affected_keys(accepted, "America/New_York") == [
        ("heart_rate", "2026-11-24"), ("heart_rate", "2026-11-25"), ("steps", "2026-11-23")]


_ZONES = ["UTC", "Europe/Berlin", "America/St_Johns", "Asia/Kathmandu", "Australia/Lord_Howe",
          "Pacific/Chatham", "Africa/Monrovia", "Europe/Amsterdam", "America/Los_Angeles", "Pacific/Kiritimati"]


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(starts=st.lists(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1),
                                    timezones=st.just(UTC)), min_size=1, max_size=20),
       metrics=st.lists(st.sampled_from(["heart_rate", "steps"]), min_size=20, max_size=20),
       zone=st.sampled_from(_ZONES))
def test_keys_from_utc_minutes_are_the_local_dates_of_the_samples(starts: list[datetime], metrics: list[str],
                                                                 zone: str) -> None:
    """Bucketing by UTC minute loses nothing: exactly each sample's local date, and where a pre-1972
    offset with seconds puts midnight inside a minute, at most that minute's other day too."""
    rows, _ = normalize_samples([inp(f"r{i}", metric=m, value=1.0, unit="bpm" if m == "heart_rate" else "count",
                                     start=t) for i, (t, m) in enumerate(zip(starts, metrics, strict=False))])
    exact = {(r.metric, local_date(r.start_at, zone).isoformat()) for r in rows}
    keys = local_keys(sample_minutes(rows), zone)
    assert keys == sorted(set(keys)) and exact <= set(keys)
    if all(t.year >= 1973 for t in starts):
        assert set(keys) == exact
    for metric, day in set(keys) - exact:  # only ever a neighbour of a real one
        assert any(m == metric and abs((date.fromisoformat(day) - date.fromisoformat(d)).days) == 1
                   for m, d in exact)


def test_a_minute_holding_an_old_local_midnight_names_both_days() -> None:
    # Amsterdam kept +00:19:32 (winter) until 1937: local midnight fell at 23:40:28 UTC.
    before = inp("a", start=datetime(1930, 1, 15, 23, 40, 10, tzinfo=UTC))
    after = inp("b", start=datetime(1930, 1, 15, 23, 40, 50, tzinfo=UTC))
    assert local_date(before.start_at, "Europe/Amsterdam") == date(1930, 1, 15)
    assert local_date(after.start_at, "Europe/Amsterdam") == date(1930, 1, 16)
    rows, _ = normalize_samples([before, after])
    assert affected_keys(rows, "Europe/Amsterdam") == [("heart_rate", "1930-01-15"), ("heart_rate", "1930-01-16")]


async def test_an_upload_is_prepared_without_settings_and_checked_by_the_store() -> None:
    async with open_store("sqlite:///:memory:") as store:
        upload = prepare_upload([inp("a"), inp("b", metric="steps", value=3, unit="count"),
                                 inp("c", metric="spo2", value=math.nan, unit="%"), inp("a", value=70.0)], store)
        assert len(upload.rows) == 2 and [(r.index, r.code) for r in upload.rejected] == [(2, "NON_FINITE_VALUE")]
        assert upload.metrics == {"heart_rate", "steps", "spo2"}  # a rejected sample's metric too
        minute = int(T0.timestamp()) // 60
        assert upload.minutes == {"heart_rate": {minute}, "steps": {minute}}
        # Made without settings: it holds for a user unless they block a metric it names.
        assert upload.applies_to([]) and upload.applies_to(["distance"])
        assert not upload.applies_to(["spo2"]) and not upload.applies_to(["steps"])
        blocked = prepare_upload([inp("a"), inp("b", metric="steps", value=3, unit="count")], store,
                                 blocked_metrics=["steps"])
        assert len(blocked.rows) == 1 and [(r.index, r.code) for r in blocked.rejected] == [(1, "METRIC_BLOCKED")]
        with pytest.raises(InvalidData) as caught:
            prepare_upload([inp("ok"), inp("nul\x00")], store)
        assert caught.value.field == "samples[1].source_record_id"


@settings(max_examples=200, derandomize=True)
@given(picks=st.lists(st.tuples(st.integers(0, 4), st.sampled_from([61.0, math.nan, 70.0])), max_size=12))
def test_accepted_indices_name_the_sample_behind_each_normalized_row(picks: list[tuple[int, float]]) -> None:
    """Repeats, rejections in between, a rejected later repeat: each row is its request index's sample."""
    samples = [inp(f"r{record}", value=value) for record, value in picks]
    rows, rejected = normalize_samples(samples)
    indices = accepted_indices(samples, rejected)
    assert len(indices) == len(rows)
    for row, index in zip(rows, indices, strict=True):
        assert (row.source_record_id, row.value) == (samples[index].source_record_id, samples[index].value)


async def test_refused_rows_become_sample_deleted_rejections_at_their_request_index() -> None:
    async with open_store("sqlite:///:memory:") as store:
        day2 = T0 + timedelta(days=1)
        samples = [inp("a"), inp("gone", start=day2), inp("bad", value=math.nan), inp("gone", start=day2, value=70.0),
                   inp("b", metric="steps", value=3, unit="count", start=day2)]
        upload = prepare_upload(samples, store)
        assert len(upload.rows) == 3  # a, gone (index 3), b
        rejections, minutes = refused_samples(samples, upload, [1])
        assert [(r.index, r.code) for r in rejections] == [(3, "SAMPLE_DELETED")]
        assert "deleted" in rejections[0].message
        # The refused row's minute is no longer touched; the rows written keep theirs.
        assert minutes == {"heart_rate": {int(T0.timestamp()) // 60}, "steps": {int(day2.timestamp()) // 60}}
        assert refused_samples(samples, upload, [0, 1, 2])[1] == {}


# -- the retry hint of a full lane ------------------------------------------------------------------------
def test_retry_after_is_a_conservative_second_before_anything_drained() -> None:
    assert retry_after_ms(64, DrainRate()) == 1000


@pytest.mark.parametrize("queued, per_second, expected", [
    (32, 10.0, 3200), (64, 1000.0, 64), (1, 1000.0, 50), (64, 0.5, 30_000)])
def test_retry_after_is_the_drain_time_clamped(queued: int, per_second: float, expected: int) -> None:
    assert retry_after_ms(queued, DrainRate(per_second=per_second)) == expected


def test_drain_rate_is_an_ewma_of_observed_batches() -> None:
    rate = DrainRate().observe(10, 1.0)
    assert rate.per_second == 10.0  # the first observation is taken as is
    rate = rate.observe(20, 1.0)
    assert rate.per_second == pytest.approx(0.3 * 20 + 0.7 * 10)
    assert rate.observe(0, 1.0) == rate and rate.observe(5, 0.0) == rate  # nothing learned


@settings(max_examples=100, deadline=None)
@given(queued=st.integers(0, 10_000), per_second=st.floats(min_value=1e-6, max_value=1e9))
def test_retry_after_stays_within_its_bounds(queued: int, per_second: float) -> None:
    assert 50 <= retry_after_ms(queued, DrainRate(per_second=per_second)) <= 30_000
