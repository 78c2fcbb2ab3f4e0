"""The AI domain's pure parts: the report window and week, the prompt (redacted by construction, with its
fail-closed gate; session and product ids never in it), the retry classification of provider errors, and the configuration's secrets."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import anthropic
import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.ai import (
    ANTHROPIC_BREAKER,
    MAX_SESSIONS,
    AiConfig,
    RedactionError,
    WeekData,
    build_prompt,
    call_outcome,
    check_redacted,
    classify,
    iso_week,
    report_window,
    window_span,
)
from kernel import NO_RETRY, RetryAfter
from run import ai_config
from storage import DailyRollup, SessionImpact, SleepNight
from transport import Settings

USER = "jane.doe@example.com"
START, END = date(2026, 11, 20), date(2026, 11, 26)


def test_the_window_is_the_last_seven_local_days_and_the_week_is_iso() -> None:
    assert report_window(date(2026, 11, 26)) == (START, END)
    assert iso_week(date(2026, 11, 26)) == "2026-W48"
    assert iso_week(date(2027, 1, 1)) == "2026-W53"  # ISO years differ from calendar years at the edges
    assert iso_week(date(2026, 1, 1)) == "2026-W01"


def rollup(metric: str, day: date, value: float, count: int = 1, unit: str = "bpm") -> DailyRollup:
    return DailyRollup(USER, metric, day, unit, count, value * count, value, value)


def test_the_prompt_has_only_allowlisted_words_numbers_and_relative_days() -> None:
    data = WeekData(start=START, end=END, rollups=(
        rollup("heart_rate", date(2026, 11, 21), 62.25, count=4),
        rollup("steps", date(2026, 11, 26), 8123.0, unit="count"),
        rollup("journal_mood", date(2026, 11, 22), 3.0, unit="felt sad, call +1 415 555 0134"),  # not a metric
        rollup("heart_rate", date(2026, 11, 12), 70.0),  # outside the window
    ), nights=(
        SleepNight(USER, date(2026, 11, 24), datetime(2026, 11, 24, 23, tzinfo=UTC),
                   datetime(2026, 11, 25, 6, tzinfo=UTC), 400.0, 20.5,
                   {"deep": 90.0, "rem": 100.0, "jane.doe@example.com": 1.0, "core": "n/a"}),
    ))
    prompt = build_prompt(data)
    assert prompt.splitlines() == [
        "Aggregated data for the last 7 days (day 1 = Fri, day 7 = today, Thu).",
        "Daily rollups:",
        "heart_rate (bpm):",
        "  day 2 (Sat): avg 62.2, min 62.2, max 62.2, readings 4",
        "steps (count):",
        "  day 7 (Thu): total 8123",
        "Sleep:",
        "  night of day 5 (Tue): asleep 400 min, awake 20.5 min; stages (min): deep 90, rem 100",
        "Sessions: none recorded.",
    ]


def test_an_empty_week_says_so() -> None:
    prompt = build_prompt(WeekData(start=START, end=END, rollups=(), nights=()))
    assert prompt.splitlines()[1:] == ["Daily rollups: none recorded.", "Sleep: no nights recorded.",
                                       "Sessions: none recorded."]


def test_the_window_span_is_local_midnight_to_local_midnight_in_utc() -> None:
    assert window_span(START, END, ZoneInfo("Europe/Paris")) == (datetime(2026, 11, 19, 23, tzinfo=UTC),
                                                                 datetime(2026, 11, 26, 23, tzinfo=UTC))
    # 25 October 2026: Paris leaves summer time, the window is 7 days and one hour long
    first, last = window_span(date(2026, 10, 20), date(2026, 10, 26), ZoneInfo("Europe/Paris"))
    assert (first, last - first) == (datetime(2026, 10, 19, 22, tzinfo=UTC), timedelta(days=7, hours=1))
    assert window_span(START, END, UTC) == (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC))


PARIS = ZoneInfo("Europe/Paris")
NONE = {"avg": None, "min": None, "max": None, "count": 0}


def hr(avg: float | None) -> dict[str, Any]:
    return NONE if avg is None else {"avg": avg, "min": avg - 5, "max": avg + 5, "count": 3}


def session(session_id: str, product: str | None, start: str, minutes: float | None, before: float | None,
            during: float | None = None, after: float | None = None, status: str = "ended") -> SessionImpact:
    at = datetime.fromisoformat(start)
    end = None if minutes is None else at + timedelta(minutes=minutes)
    dd = None if during is None or before is None else during - before
    da = None if after is None or before is None else after - before
    return SessionImpact(USER, session_id, product, status, at, end, at - timedelta(hours=1),
                         (end or at) + timedelta(hours=1), {"before": hr(before), "during": hr(during),
                                                            "after": hr(after)}, dd, da)


# Client-chosen ids: an email, a uuid, free text; none may reach the prompt.
UUID = "5b0e6c1a-9f3d-4c8e-a1b2-c3d4e5f60718"
COFFEE = "coffee with Dr Smith, 2026-11-22"
WEEK_SESSIONS = (  # newest first, as the store reads them
    session("late", "late-product", "2026-11-26T23:30:00+00:00", 10, 60.0, 61.0, 62.0),  # Friday 00:30 in Paris
    session("after lunch w/ Bob", None, "2026-11-26T09:00:00+00:00", None, 72.0, status="active"),
    session("free text: felt dizzy", COFFEE, "2026-11-25T08:00:00+00:00", 20, 60.0, 70.0, 61.0),
    session(UUID, USER, "2026-11-24T10:00:00+00:00", 90, 70.0, 90.5, None),
    session(f"{USER}/1", COFFEE, "2026-11-21T23:30:00+00:00", 45, 65.0, 110.0, 80.0),  # Sun 00:30 in Paris
    session("early", "early-product", "2026-11-19T22:59:00+00:00", 10, 60.0, 61.0, 62.0),  # Thursday 23:59
)


def test_sessions_have_relative_days_figures_and_prompt_local_product_labels() -> None:
    prompt = build_prompt(WeekData(start=START, end=END, rollups=(), nights=(), sessions=WEEK_SESSIONS, tz=PARIS))
    assert prompt.splitlines()[3:] == [
        "Sessions (heart rate in bpm: avg the hour before, during, and the hour after; delta = avg minus avg "
        "before):",
        "  day 3 (Sun): product A, ended, 45 min; avg before 65, during 110, after 80; delta during +45, after +15",
        "  day 5 (Tue): product B, ended, 90 min; avg before 70, during 90.5, after no data; delta during +20.5, "
        "after n/a",
        "  day 6 (Wed): product A, ended, 20 min; avg before 60, during 70, after 61; delta during +10, after +1",
        "  day 7 (Thu): no product, active; avg before 72, during no data, after no data; delta during n/a, "
        "after n/a",
        "Per product (the sessions above):",
        "  product A: 2 sessions, mean delta during +27.5 (from 2), mean delta after +8 (from 2)",
        "  product B: 1 session, mean delta during +20.5 (from 1), mean delta after n/a (from 0)",
    ]
    for value in (USER, "jane.doe", UUID, "5b0e6c1a", COFFEE, "coffee", "Smith", "dizzy", "Bob", "late", "early"):
        assert value not in prompt
    # In UTC the first session starts on Saturday, and the last one on Thursday (not Friday, after the window).
    utc = build_prompt(WeekData(start=START, end=END, rollups=(), nights=(), sessions=WEEK_SESSIONS)).splitlines()
    assert utc[4].startswith("  day 2 (Sat): product A, ended, 45 min;")
    assert utc[8].startswith("  day 7 (Thu): product C, ended, 10 min;") and "  product C: 1 session" in utc[-1]


def test_unreadable_session_figures_and_statuses_are_not_written() -> None:
    odd = SessionImpact(USER, "s", "p", "finished by jane.doe@example.com", datetime(2026, 11, 24, 10, tzinfo=UTC),
                        datetime(2026, 11, 24, 9, tzinfo=UTC), datetime(2026, 11, 24, 9, tzinfo=UTC),
                        datetime(2026, 11, 24, 11, tzinfo=UTC),
                        {"before": {"avg": "65 (call +1 415 555 0134)"}, "during": [1, 2], "after": {"avg": True},
                         "jane": {"avg": 1.0}}, float("nan"), -3.25)
    ended_backwards = SessionImpact(USER, "t", None, "ended", datetime(2026, 11, 25, 10, tzinfo=UTC),
                                    datetime(2026, 11, 25, 9, tzinfo=UTC), datetime(2026, 11, 25, 9, tzinfo=UTC),
                                    datetime(2026, 11, 25, 11, tzinfo=UTC), {}, 0.0, None)
    lines = build_prompt(WeekData(start=START, end=END, rollups=(), nights=(),
                                  sessions=(odd, ended_backwards))).splitlines()
    assert lines[4:] == [
        "  day 5 (Tue): product A, status unknown; avg before no data, during no data, after no data; "
        "delta during n/a, after -3.2",
        "  day 6 (Wed): no product, ended; avg before no data, during no data, after no data; delta during 0, "
        "after n/a",
        "Per product (the sessions above):",
        "  product A: 1 session, mean delta during n/a (from 0), mean delta after -3.2 (from 1)",
    ]


def test_at_most_the_newest_sessions_are_written_and_the_prompt_says_there_were_more() -> None:
    at = datetime(2026, 11, 20, 0, 30, tzinfo=UTC)
    many = tuple(session(f"s{i}", f"p{i}", (at + timedelta(hours=3 * i)).isoformat(), 30, 60.0, 60.0 + i, 60.0)
                 for i in range(MAX_SESSIONS + 1))
    lines = build_prompt(WeekData(start=START, end=END, rollups=(), nights=(), sessions=many)).splitlines()
    assert lines[3].startswith(f"Sessions (the {MAX_SESSIONS} most recent of more; ")
    shown = [line for line in lines if ", ended, 30 min;" in line]
    assert len(shown) == MAX_SESSIONS
    assert "delta during +1," in shown[0] and "delta during +50," in shown[-1]  # session 0 (the oldest) left out
    assert lines[-1] == "  product AX: 1 session, mean delta during +50 (from 1), mean delta after 0 (from 1)"


_ids = st.one_of(st.emails(), st.uuids().map(str), st.text(min_size=1, max_size=40),
                 st.sampled_from([USER, UUID, COFFEE, "product A", "day 3 (Thu)", "ended"]))
_bpm = st.one_of(st.none(), st.floats(min_value=30, max_value=220, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_ids, st.one_of(st.none(), _ids), st.integers(0, 7 * 24 * 60 - 1),
                          st.sampled_from(["active", "paused", "ended"]), st.one_of(st.none(), st.integers(0, 600)),
                          _bpm, _bpm, _bpm), max_size=8))
def test_the_prompt_depends_on_which_sessions_share_a_product_never_on_the_ids(rows: list[Any]) -> None:
    """The same sessions under canonical ids ("s0", "p0") give the same prompt: no id value can leak, however
    it reads (an email, a uuid, free text, or text that looks like the prompt's own words)."""
    at = datetime(2026, 11, 20, tzinfo=UTC)

    def week(canonical: bool) -> WeekData:
        products: dict[str, str] = {}
        built = []
        for i, (sid, pid, minute, status, minutes, before, during, after) in enumerate(rows):
            if canonical:
                sid = f"s{i}"
                pid = None if pid is None else products.setdefault(pid, f"p{len(products)}")
            built.append(session(sid, pid, (at + timedelta(minutes=minute)).isoformat(), minutes, before, during,
                                 after, status=status))
        return WeekData(start=START, end=END, rollups=(), nights=(), sessions=tuple(built))

    prompt = build_prompt(week(canonical=False))
    assert prompt == build_prompt(week(canonical=True))
    check_redacted(prompt)


@pytest.mark.parametrize("text", [
    "contact jane.doe@example.com", "call +1 415 555 0134", "call 4155550134",
    "id 5b0e6c1a-9f3d-4c8e-a1b2-c3d4e5f60718", "on 2026-11-24", "source iphone-SN-F2LXK9Q1ABC",
])
def test_the_last_gate_refuses_text_that_looks_like_an_identifier(text: str) -> None:
    with pytest.raises(RedactionError):
        check_redacted(text)


def test_the_last_gate_refuses_listed_values_and_passes_plain_figures() -> None:
    with pytest.raises(RedactionError):
        check_redacted("hello Jane", forbidden=["Jane"])
    check_redacted("steps (count):\n  day 7 (Thu): total 18123.5\nhrv_sdnn (ms): avg 41, readings 86400")


def _status_error(status: int, retry_after: str | None = None) -> anthropic.APIStatusError:
    request = httpx2.Request("POST", "http://fake/v1/messages")
    hdrs = {"retry-after": retry_after} if retry_after is not None else {}
    response = httpx2.Response(status, headers=hdrs, request=request)
    return anthropic.APIStatusError("fake", response=response, body=None)


def test_only_429_5xx_connection_errors_and_timeouts_are_retried() -> None:
    request = httpx2.Request("POST", "http://fake/v1/messages")
    assert classify(_status_error(429, "7")) == RetryAfter(7.0)
    assert classify(_status_error(503)) == RetryAfter(None)
    assert classify(anthropic.APIConnectionError(request=request)) == RetryAfter(None)
    assert classify(anthropic.APITimeoutError(request=request)) == RetryAfter(None)
    for status in (400, 401, 403, 404, 413):
        assert classify(_status_error(status)) is NO_RETRY
    assert classify(ValueError("a bug")) is NO_RETRY
    assert [call_outcome(e) for e in (_status_error(429), _status_error(529), _status_error(401),
                                      anthropic.APITimeoutError(request=request),
                                      anthropic.APIConnectionError(request=request))] == [
        "rate_limited", "server_error", "client_error", "timeout", "connection_error"]


def test_the_breaker_has_the_seeds_numbers() -> None:
    b = ANTHROPIC_BREAKER
    assert (b.window, b.min_calls, b.failure_rate, b.consecutive_failures, b.open_for, b.half_open_probes) == \
        (10.0, 5, 0.5, 5, 30.0, 3)


def test_configuration_from_the_environment_and_the_key_never_in_a_repr() -> None:
    settings = Settings.from_env({"VIGIL_ANTHROPIC_API_KEY": "sk-ant-secret", "VIGIL_ANTHROPIC_BASE_URL":
                                  "http://127.0.0.1:9", "VIGIL_ANTHROPIC_MODEL": "claude-x"})
    config = ai_config(settings)
    assert (config.api_key, config.base_url, config.model, config.configured) == \
        ("sk-ant-secret", "http://127.0.0.1:9", "claude-x", True)
    assert "sk-ant-secret" not in repr(settings) and "sk-ant-secret" not in repr(config)
    unset = ai_config(Settings.from_env({}))
    assert not unset.configured and unset.model == AiConfig().model and unset.base_url is None
    with pytest.raises(ValueError):
        AiConfig(timeout=0)
