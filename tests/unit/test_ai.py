"""The AI domain's pure parts: the report window and week, the prompt (redacted by construction, with its
fail-closed gate), the retry classification of provider errors, and the configuration's secrets."""

from __future__ import annotations

from datetime import UTC, date, datetime

import anthropic
import httpx2
import pytest

from actors.ai import (
    ANTHROPIC_BREAKER,
    AiConfig,
    RedactionError,
    WeekData,
    build_prompt,
    call_outcome,
    check_redacted,
    classify,
    iso_week,
    report_window,
)
from kernel import NO_RETRY, RetryAfter
from run import ai_config
from storage import DailyRollup, SleepNight
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
    ]


def test_an_empty_week_says_so() -> None:
    prompt = build_prompt(WeekData(start=START, end=END, rollups=(), nights=()))
    assert "Daily rollups: none recorded." in prompt and "Sleep: no nights recorded." in prompt


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
