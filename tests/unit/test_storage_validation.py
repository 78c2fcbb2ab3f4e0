"""Input checks and conversions of the storage layer (no database)."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import InvalidData, Limits, OutboxPolicy, RetryPolicy, SampleCursor, SampleIn, StoreConfig
from storage._open import open_store, parse_url
from storage._time import EPOCH, from_micros, to_micros
from storage._validate import dump_json, event_hash, samples

LIMITS = Limits()
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)

offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
aware_datetimes = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).flatmap(lambda dt: offsets.map(lambda tz: dt.astimezone(tz)))
ids = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=40
)


@st.composite
def valid_samples(draw: st.DrawFn) -> SampleIn:
    start = draw(aware_datetimes)
    return SampleIn(
        draw(ids),
        draw(ids),
        draw(st.sampled_from(["heart_rate", "steps", "spo2"])),
        draw(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**6), 10**6)),
        draw(st.sampled_from(["bpm", "count", "%"])),
        start,
        start + timedelta(seconds=draw(st.integers(0, 86_400))),
        draw(st.none() | st.dictionaries(ids, st.integers() | ids, max_size=3)),
    )


@given(st.lists(valid_samples(), max_size=20))
def test_valid_samples_normalize_exactly(rows: list[SampleIn]) -> None:
    as_micros = samples(rows, LIMITS, micros=True)
    as_datetimes = samples(rows, LIMITS, micros=False)
    assert len(as_micros) == len(as_datetimes) == len({(r[0], r[1], r[5]) for r in rows})
    for micro_row, dt_row in zip(as_micros, as_datetimes, strict=True):
        assert micro_row[2] == (dt_row[2] - EPOCH) // timedelta(microseconds=1)
        assert from_micros(micro_row[2]) == dt_row[2] and from_micros(micro_row[3]) == dt_row[3]
        assert type(micro_row[5]) is float and math.isfinite(micro_row[5])


def test_repeated_keys_keep_the_last_row() -> None:
    first = SampleIn("s", "r", "steps", 1.0, "count", T0, T0)
    second = first._replace(value=2.0, start_at=T0.astimezone(timezone(timedelta(hours=5))))
    (only,) = samples([first, second], LIMITS, micros=True)
    assert only[5] == 2.0


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1", None, True, 1 + 2j])
def test_bad_values_are_named(value: object) -> None:
    with pytest.raises(InvalidData) as caught:
        samples([SampleIn("s", "r", "steps", value, "count", T0, T0)], LIMITS, micros=True)  # type: ignore[arg-type]
    assert caught.value.field == "samples[0].value"


@pytest.mark.parametrize("micros", [True, False])
def test_naive_timestamps_are_refused(micros: bool) -> None:
    naive = datetime(2026, 1, 1)
    for row, field in [
        (SampleIn("s", "r", "steps", 1.0, "count", naive, T0), "start_at"),
        (SampleIn("s", "r", "steps", 1.0, "count", T0, naive), "end_at"),
        (SampleIn("s", "r", "steps", 1.0, "count", date(2026, 1, 1), T0), "start_at"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(InvalidData, match="naive|datetime") as caught:
            samples([row], LIMITS, micros=micros)
        assert caught.value.field == f"samples[0].{field}"


def test_limits_are_configurable() -> None:
    tight = Limits(max_id_chars=4, max_json_chars=10, max_batch_rows=2)
    row = SampleIn("abcd", "r", "steps", 1.0, "count", T0, T0)
    samples([row], tight, micros=True)
    with pytest.raises(InvalidData, match="longer than 4"):
        samples([row._replace(source_id="abcde")], tight, micros=True)
    with pytest.raises(InvalidData, match="JSON longer"):
        samples([row._replace(metadata={"k": "0123456789"})], tight, micros=True)
    with pytest.raises(InvalidData, match="more than 2 rows"):
        samples([row] * 3, tight, micros=True)


def test_json_is_strict() -> None:
    assert dump_json("x", {"b": [1, 2.5, None, True]}, 100) == '{"b":[1,2.5,null,true]}'
    for bad in ({"x": math.nan}, {"x": {1, 2}}, {"x": "\x00"}):
        with pytest.raises(InvalidData):
            dump_json("x", bad, 100)


def test_event_hash_is_canonical() -> None:
    assert event_hash("u", "t", {"a": 1, "b": 2}) == event_hash("u", "t", {"b": 2, "a": 1})
    assert event_hash("u", "t", {"a": 1}) != event_hash("v", "t", {"a": 1})


@given(aware_datetimes, st.integers(0, 2**62))
def test_cursor_round_trips(start: datetime, ident: int) -> None:
    cursor = SampleCursor(start, ident)
    token = cursor.encode()
    assert re.fullmatch(SampleCursor.PATTERN, token)
    back = SampleCursor.decode(token)
    assert back == cursor and back.start_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize("token", ["", "!!", "bm9wZQ", "MTIzLmFiYw", "1.2.3", "1.", ".1", "1.-2", " 1.2", "1.2\n",
                                   "1" * 19 + ".1", "1." + "1" * 20])
def test_bad_cursors_are_invalid_data(token: str) -> None:
    assert not re.fullmatch(SampleCursor.PATTERN, token)
    with pytest.raises(InvalidData):
        SampleCursor.decode(token)


@pytest.mark.parametrize("token, start", [
    ("999999999999999999.7", datetime.max.replace(tzinfo=UTC)),
    ("-999999999999999999.7", datetime.min.replace(tzinfo=UTC)),
    ("0.7", datetime(1970, 1, 1, tzinfo=UTC)),
])
def test_every_cursor_of_the_published_pattern_is_a_position(token: str, start: datetime) -> None:
    """Past every representable instant reads as the end, before them as the start: never an error."""
    assert SampleCursor.decode(token) == SampleCursor(start, 7)


def test_micros_are_exact_far_from_the_epoch() -> None:
    for value in (datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)):
        assert from_micros(to_micros(value)) == value


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///./data/vigil.db", ("sqlite", "./data/vigil.db")),
        ("sqlite:////var/lib/vigil.db", ("sqlite", "/var/lib/vigil.db")),
        ("sqlite:///:memory:", ("sqlite", ":memory:")),
        (
            "postgresql://postgres@127.0.0.1:5432/test",
            ("postgresql", "postgresql://postgres@127.0.0.1:5432/test"),
        ),
        ("postgres://u@h/db", ("postgresql", "postgres://u@h/db")),
    ],
)
def test_urls_choose_the_backend(url: str, expected: tuple[str, str]) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://x", "sqlite://relative.db", "sqlite:///", "", "memory"])
def test_bad_urls_fail_fast(url: str) -> None:
    with pytest.raises(InvalidData):
        open_store(url)


def test_config_is_frozen_and_checked() -> None:
    config = StoreConfig()
    with pytest.raises(AttributeError):
        config.seed = 3  # type: ignore[misc]
    for bad in (
        lambda: RetryPolicy(attempts=0),
        lambda: RetryPolicy(multiplier=0.5),
        lambda: OutboxPolicy(lease_seconds=0),
        lambda: OutboxPolicy(base_delay=math.inf),
        lambda: Limits(max_id_chars=0),
        lambda: StoreConfig(pg_schema="bad-name; drop"),
        lambda: StoreConfig(pg_min_size=5, pg_max_size=2),
        lambda: StoreConfig(sqlite_synchronous="OFF"),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValueError):
            bad()


def test_outbox_backoff_doubles_up_to_the_cap() -> None:
    policy = OutboxPolicy(base_delay=5, max_delay=60, jitter=0.2)
    assert [policy.delay(n, 0.0) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    assert policy.delay(3, 0.999) == pytest.approx(20 * (1 - 0.2 * 0.999))
    assert policy.delay(10_000, 0.5) == pytest.approx(60 * 0.9)  # no overflow on long streaks
