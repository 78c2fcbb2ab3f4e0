"""The AI weekly report through HTTP (API.md "AI and exports") against a fake Messages API over real HTTP.

The whole application in-process over a temp SQLite store (``running_app``) on trio's real clock; the store's
wall clock is a ``ManualClock`` so "the last 7 days" and the ISO week are fixed. Uploads go through the API and
the read side projects them; consumption sessions are pushed through sync. The report is built from those read
models only, and what the fake received (headers and body bytes) is checked for every identifier and free text
seeded into the data, session and product ids included.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.ai import ANTHROPIC_BREAKER, AiConfig
from actors.projection import (
    DispatcherConfig,
    HandlerConfig,
    ProjectionConfig,
    SessionImpacts,
    default_projections,
)
from kernel import CircuitBreaker, RetryPolicy
from storage import StoreConfig
from storage.testing import ManualClock
from tests.ai_helpers import (
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    REPORT_TEXT,
    FakeAnthropic,
    Reply,
    fake_anthropic,
)
from tests.impact_helpers import PoisonedSessionImpacts
from tests.ingest_helpers import (
    OPS_TOKEN,
    Harness,
    error_of,
    fast_tree_config,
    free_port,
    headers,
    running_app,
    sample,
    signed,
)
from tests.sync_helpers import Device, op

REPORT = "/v1/ai/weekly-report"
KEY = "sk-ant-test-key-0123456789"
MODEL = "claude-test"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # a Thursday: the window is Fri 20 .. Thu 26 November
# Identifiers and free text seeded into the user's data: none may reach the provider.
USER = "jane.doe@example.com"
SOURCE = "iphone-of-jane-SN-F2LXK9Q1"
RECORD = "rec-5b0e6c1a-9f3d-4c8e-a1b2-c3d4e5f60718"
DEVICE = "device-A1B2C3D4E5"
PHONE = "+1 415 555 0134"
NOTE = "felt dizzy after talking to Dr Smith"
SESSION_ID = "session-of-jane.doe@example.com-7d1f3c2a"
PRODUCT = "Dr Smith's coffee <jane.doe+coffee@example.com>"
FORBIDDEN = (USER, "jane.doe", SOURCE, "F2LXK9Q1", RECORD, "5b0e6c1a", DEVICE, PHONE, "555 0134", NOTE, "dizzy",
             "Smith", "2026-11-2", SESSION_ID, "7d1f3c2a", PRODUCT, "coffee")


def fast_retry(attempts: int = 3) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, initial=0.01, multiplier=2.0, cap=0.05)


def ai_config(url: str, **changes: Any) -> AiConfig:
    return replace(AiConfig(api_key=KEY, base_url=url, model=MODEL, timeout=5.0, deadline=20.0, retry=fast_retry(),
                            seed=3), **changes)


@asynccontextmanager
async def app_with(tmp_path: Path, ai: AiConfig, **options: Any) -> AsyncIterator[Harness]:
    config = fast_tree_config(tree={
        "ai": ai,
        "projection": ProjectionConfig(dispatcher=DispatcherConfig(poll_interval=0.05),
                                       handler=HandlerConfig(poll_interval=0.05, timeout=10.0, lease_seconds=10.0),
                                       figures_interval=0.05)})
    async with running_app(tmp_path, config=config, store_config=StoreConfig(clock=ManualClock(NOW)),
                           **options) as harness:
        yield harness


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with fake_anthropic() as server:
        yield server


async def post_report(h: Harness, user: str = USER) -> tuple[int, Any]:
    response = await h.client.post(REPORT, headers=headers(user))
    return response.status_code, await response.get_json()


def week_of_samples(record_prefix: str = "r") -> list[dict[str, Any]]:
    meta = {"note": NOTE, "email": USER, "phone": PHONE, "deviceId": DEVICE}
    out = [sample(f"{record_prefix}-hr-{d}", metric="heart_rate", value=60.0 + d, unit="bpm",
                  start=f"2026-11-{d:02d}T08:00:00Z", source=SOURCE, metadata=meta) for d in range(20, 27)]
    out += [sample(f"{record_prefix}-st-{d}", metric="steps", value=1000.0 * d, unit="count",
                   start=f"2026-11-{d:02d}T09:00:00Z", end=f"2026-11-{d:02d}T10:00:00Z", source=SOURCE, metadata=meta)
            for d in range(20, 27)]
    out += [sample(RECORD, metric="sleep_stage", value=4, unit="category", start="2026-11-23T23:00:00Z",
                   end="2026-11-24T01:00:00Z", source=SOURCE, metadata=meta),
            sample(f"{record_prefix}-sl-2", metric="sleep_stage", value=5, unit="category",
                   start="2026-11-24T01:00:00Z", end="2026-11-24T06:30:00Z", source=SOURCE, metadata=meta)]
    return out


async def upload_and_project(h: Harness, samples: list[dict[str, Any]], *, user: str = USER,
                             sessions: bool = True) -> None:
    """Upload, then wait until the read models the report reads are fresh (``sessions``: the session ones too)."""
    status, body, _ = await h.post(signed(samples), user=user)
    assert status == 200, body
    await read_models_fresh(h, user=user, sessions=sessions)


async def read_models_fresh(h: Harness, *, user: str = USER, sessions: bool = True) -> None:
    window = {"from": "2026-11-20", "to": "2026-11-26"}
    views = [("/v1/health/rollups/daily", {**window, "metric": "steps"}), ("/v1/health/sleep/nights", window)]
    views += [("/v1/health/product-impact", {})] if sessions else []  # session impact, then product impact
    with trio.fail_after(20):
        for path, params in views:
            while True:
                code, view = await h.get(path, user=user, **params)
                assert code == 200, view
                if view["freshness"]["status"] == "fresh":
                    break
                await trio.sleep(0.02)


def usage_rows(h: Harness) -> list[tuple[str, str, int, int]]:
    return [(r["outcome"], r["model"], r["input_tokens"], r["output_tokens"])
            for r in h.db.rows("SELECT * FROM ai_usage ORDER BY id")]


async def metric_value(h: Harness, name: str, label: str) -> float:
    response = await h.client.get("/metrics", headers={"Authorization": f"Bearer {OPS_TOKEN}"})
    text = (await response.get_data()).decode()
    series = f"{name}{{{label}}}" if label else name
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match, f"{series} missing from /metrics:\n{text}"
    return float(match.group(1))


# -- success, cache, redaction ------------------------------------------------------------------------------
async def test_a_report_from_the_read_models_is_cached_until_new_data_arrives(tmp_path: Path,
                                                                              fake: FakeAnthropic) -> None:
    async with app_with(tmp_path, ai_config(fake.url)) as h:
        code, _ = await h.put_settings(USER, allowHealthDataUpload=True, blockedMetrics=[], timezone="Europe/Paris",
                                       sourcePriority=[SOURCE, DEVICE])
        assert code == 200
        await upload_and_project(h, week_of_samples())

        code, body = await post_report(h)
        assert code == 200, body
        assert body == {"report": REPORT_TEXT, "model": MODEL, "generatedAt": "2026-11-26T12:00:00Z",
                        "cached": False}
        assert len(fake.requests) == 1
        sent = fake.requests[0]
        assert sent.path == "/v1/messages"
        assert sent.headers["x-api-key"] == KEY and "authorization" not in sent.headers
        request = sent.json()
        assert request["model"] == MODEL
        prompt = request["messages"][0]["content"]
        # Built from the read models: the daily rollups and the night, with relative day labels.
        assert "steps (count):" in prompt and "day 7 (Thu): total 26000" in prompt
        assert "heart_rate (bpm):" in prompt and "day 7 (Thu): avg 86, min 86, max 86, readings 1" in prompt
        assert "night of day 4 (Mon): asleep 450 min" in prompt and "deep 120" in prompt and "rem 330" in prompt

        # A second call with no new data: the cached report, no request.
        code, again = await post_report(h)
        assert code == 200 and again == {**body, "cached": True}
        assert len(fake.requests) == 1

        # New data: a new report.
        await upload_and_project(h, [sample("r-new", metric="steps", value=500.0, unit="count",
                                            start="2026-11-26T11:00:00Z", end="2026-11-26T11:30:00Z", source=SOURCE)])
        code, fresh = await post_report(h)
        assert code == 200 and fresh["cached"] is False
        assert len(fake.requests) == 2
        assert "day 7 (Thu): total 26500" in fake.requests[1].json()["messages"][0]["content"]

        # Cost tracking: every call's tokens, stored and in /metrics.
        assert usage_rows(h) == [("ok", MODEL, INPUT_TOKENS, OUTPUT_TOKENS)] * 2
        assert await metric_value(h, "vigil_ai_tokens_total", 'direction="input"') == 2 * INPUT_TOKENS
        assert await metric_value(h, "vigil_ai_tokens_total", 'direction="output"') == 2 * OUTPUT_TOKENS
        assert await metric_value(h, "vigil_ai_calls_total", 'outcome="ok"') == 2

        # PHI redaction, checked on everything the provider received.
        for recorded in fake.requests:
            raw = recorded.raw.decode()
            for value in FORBIDDEN:
                assert value not in raw, f"{value!r} reached the provider"
        # The user's own data would be readable by them; another user's report is a different cache entry.
        assert h.db.scalar("SELECT count(*) FROM ai_reports WHERE user_id = ?", USER) == 1


# Heart rate around the session (Tuesday 24 November, 15:00-15:30 in Paris: day 5): before avg 65, during avg
# 110, after avg 80.
AROUND_SESSION = [sample(f"s-hr-{i}", metric="heart_rate", value=v, unit="bpm", start=at, source=SOURCE)
                  for i, (at, v) in enumerate([("2026-11-24T13:10:00Z", 60.0), ("2026-11-24T13:50:00Z", 70.0),
                                               ("2026-11-24T14:00:00Z", 100.0), ("2026-11-24T14:20:00Z", 120.0),
                                               ("2026-11-24T15:00:00Z", 80.0)])]


def session_data(end: str = "2026-11-24T14:30:00Z") -> dict[str, Any]:
    return {"status": "ended", "count": 1, "productId": PRODUCT, "startAt": "2026-11-24T14:00:00Z", "endAt": end}


async def test_sessions_are_in_the_report_without_their_ids_and_a_sync_change_makes_a_new_report(
        tmp_path: Path, fake: FakeAnthropic) -> None:
    async with app_with(tmp_path, ai_config(fake.url)) as h:
        code, _ = await h.put_settings(USER, allowHealthDataUpload=True, blockedMetrics=[], timezone="Europe/Paris",
                                       sourcePriority=[SOURCE])
        assert code == 200
        phone = Device(h.client, USER, DEVICE)
        await upload_and_project(h, week_of_samples() + AROUND_SESSION)
        (pushed,) = await phone.push(op("consumption_session", SESSION_ID, data=session_data()))
        assert pushed["status"] == "applied", pushed
        await read_models_fresh(h)

        code, body = await post_report(h)
        assert code == 200 and body["cached"] is False, body
        prompt = fake.requests[0].json()["messages"][0]["content"]
        assert ("  day 5 (Tue): product A, ended, 30 min; avg before 65, during 110, after 80; delta during +45, "
                "after +15") in prompt.splitlines()
        assert prompt.splitlines()[-1] == \
            "  product A: 1 session, mean delta during +45 (from 1), mean delta after +15 (from 1)"

        code, again = await post_report(h)  # nothing changed: the cached report
        assert code == 200 and again == {**body, "cached": True}
        assert len(fake.requests) == 1

        # A sync change to the session (no sample changes: the sample watermark stays): a new report.
        (pushed,) = await phone.push(op("consumption_session", SESSION_ID, "update", 1,
                                        session_data(end="2026-11-24T14:40:00Z")))
        assert pushed["status"] == "applied", pushed
        await read_models_fresh(h)
        code, fresh = await post_report(h)
        assert code == 200 and fresh["cached"] is False
        assert len(fake.requests) == 2
        assert "  day 5 (Tue): product A, ended, 40 min; avg before 65, during 110, after 80; delta during +45, " \
            "after +15" in fake.requests[1].json()["messages"][0]["content"]
        code, again = await post_report(h)
        assert code == 200 and again == {**fresh, "cached": True} and len(fake.requests) == 2

        for recorded in fake.requests:
            raw = recorded.raw.decode()
            for value in FORBIDDEN:
                assert value not in raw, f"{value!r} reached the provider"



async def test_a_report_made_while_the_session_read_model_is_not_fresh_is_not_cached(
        tmp_path: Path, fake: FakeAnthropic) -> None:
    projections = [PoisonedSessionImpacts() if isinstance(p, SessionImpacts) else p for p in default_projections()]
    async with app_with(tmp_path, ai_config(fake.url), projections=projections) as h:
        await upload_and_project(h, week_of_samples(), sessions=False)
        with trio.fail_after(20):
            while True:
                code, view = await h.get("/v1/health/product-impact", user=USER)
                assert code == 200, view
                if view["freshness"]["status"] == "failed":
                    break
                await trio.sleep(0.02)
        for _ in range(2):
            code, body = await post_report(h)
            assert code == 200 and body["cached"] is False, body
        assert len(fake.requests) == 2
        assert "day 7 (Thu): total 26000" in fake.requests[1].json()["messages"][0]["content"]
        assert h.db.scalar("SELECT count(*) FROM ai_reports") == 0


async def test_another_users_report_is_their_own(tmp_path: Path, fake: FakeAnthropic) -> None:
    async with app_with(tmp_path, ai_config(fake.url)) as h:
        await upload_and_project(h, week_of_samples())
        code, _ = await post_report(h)
        assert code == 200
        code, body = await post_report(h, user="bob")
        assert code == 200 and body["cached"] is False
        assert len(fake.requests) == 2
        bob_prompt = fake.requests[1].json()["messages"][0]["content"]
        assert "Daily rollups: none recorded." in bob_prompt and "Sleep: no nights recorded." in bob_prompt


async def test_an_injected_breaker_is_the_one_used_and_a_cached_report_is_served_while_it_is_open(
        tmp_path: Path, fake: FakeAnthropic) -> None:
    breaker = CircuitBreaker("anthropic", ANTHROPIC_BREAKER)  # as a shared per-dependency registry would supply
    async with app_with(tmp_path, ai_config(fake.url), ai_breaker=breaker) as h:
        await upload_and_project(h, week_of_samples())
        code, first = await post_report(h)
        assert code == 200 and len(fake.requests) == 1
        for _ in range(ANTHROPIC_BREAKER.consecutive_failures):  # another user of the dependency saw it fail
            breaker.record_failure()
        assert breaker.snapshot().state == "open"

        code, body = await post_report(h)
        assert code == 200 and body == {**first, "cached": True}

        await upload_and_project(h, [sample("r-more", metric="steps", value=10.0, unit="count",
                                            start="2026-11-26T10:00:00Z", source=SOURCE)])
        code, body = await post_report(h)
        err = error_of(code, body, "AI_UNAVAILABLE", 503)
        assert err["details"] == {"reason": "breaker_open"} and 29_000 <= err["retryAfterMs"] <= 30_000
        assert len(fake.requests) == 1


async def test_concurrent_requests_of_one_user_make_one_provider_call(tmp_path: Path, fake: FakeAnthropic) -> None:
    async with app_with(tmp_path, ai_config(fake.url)) as h:
        await upload_and_project(h, week_of_samples())
        answers: list[tuple[int, Any]] = []

        async def one() -> None:
            answers.append(await post_report(h))

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(one)
        assert [code for code, _ in answers] == [200] * 4
        assert sorted(body["cached"] for _, body in answers) == [False, True, True, True]
        assert len(fake.requests) == 1


# -- failures ------------------------------------------------------------------------------------------------
async def test_not_configured_is_503_ai_unavailable(tmp_path: Path, fake: FakeAnthropic) -> None:
    async with app_with(tmp_path, AiConfig()) as h:
        code, body = await post_report(h)
        err = error_of(code, body, "AI_UNAVAILABLE", 503)
        assert err["retryable"] is True and err["retryAfterMs"] == 60_000
        assert err["details"] == {"reason": "not_configured"}
        assert fake.requests == []


async def test_5xx_are_retried_then_open_the_breaker_and_an_open_breaker_answers_503_fast(
        tmp_path: Path, fake: FakeAnthropic) -> None:
    fake.always = Reply(status=500)
    async with app_with(tmp_path, ai_config(fake.url)) as h:
        code, body = await post_report(h)  # 3 attempts, all 500
        err = error_of(code, body, "AI_UNAVAILABLE", 503)
        assert err["details"] == {"reason": "upstream_error"}
        assert len(fake.requests) == 3
        code, body = await post_report(h)  # 2 more failures: 5 in a row open the breaker; no third attempt
        err = error_of(code, body, "AI_UNAVAILABLE", 503)
        assert err["details"] == {"reason": "breaker_open"}
        assert len(fake.requests) == 5
        assert 29_000 <= err["retryAfterMs"] <= 30_000

        with trio.fail_after(1.0):  # open: refused without a request
            code, body = await post_report(h)
        err = error_of(code, body, "AI_UNAVAILABLE", 503)
        assert err["details"] == {"reason": "breaker_open"} and err["retryAfterMs"] > 0
        assert len(fake.requests) == 5
        assert await metric_value(h, "vigil_ai_breaker_state", "") == 2
        response = await h.client.get("/health")
        health = await response.get_json()
        assert health["circuitBreakers"]["anthropic"]["state"] == "open" and health["status"] == "degraded"
        assert await metric_value(h, "vigil_ai_calls_total", 'outcome="server_error"') == 5
        assert await metric_value(h, "vigil_ai_calls_total", 'outcome="breaker_open"') == 2
        assert [r[0] for r in usage_rows(h)] == ["server_error"] * 5


async def test_after_open_for_a_successful_probe_closes_the_breaker(tmp_path: Path, fake: FakeAnthropic) -> None:
    fake.script = [Reply(status=503)] * 5
    quick = replace(ANTHROPIC_BREAKER, open_for=0.3)
    async with app_with(tmp_path, ai_config(fake.url, breaker=quick, retry=fast_retry(1))) as h:
        for _ in range(5):
            code, body = await post_report(h)
            assert error_of(code, body, "AI_UNAVAILABLE", 503)["details"] == {"reason": "upstream_error"}
        code, body = await post_report(h)
        assert error_of(code, body, "AI_UNAVAILABLE", 503)["details"] == {"reason": "breaker_open"}
        assert len(fake.requests) == 5
        await trio.sleep(0.3)
        code, body = await post_report(h)  # the probe succeeds (the script is spent)
        assert code == 200 and body["report"] == REPORT_TEXT
        assert len(fake.requests) == 6
        assert await metric_value(h, "vigil_ai_breaker_state", "") == 0


async def test_429_is_retried_no_sooner_than_retry_after(tmp_path: Path, fake: FakeAnthropic) -> None:
    fake.script = [Reply(status=429, headers={"retry-after": "1"})]
    async with app_with(tmp_path, ai_config(fake.url)) as h:
        code, body = await post_report(h)
        assert code == 200 and body["report"] == REPORT_TEXT
        assert len(fake.requests) == 2
        assert fake.requests[1].at - fake.requests[0].at >= 1.0  # the jittered backoff alone is <= 0.01 s
        assert [r[0] for r in usage_rows(h)] == ["rate_limited", "ok"]


async def test_a_429_asking_for_longer_than_the_deadline_fails_now(tmp_path: Path, fake: FakeAnthropic) -> None:
    fake.script = [Reply(status=429, headers={"retry-after": "120"})]
    async with app_with(tmp_path, ai_config(fake.url)) as h:
        with trio.fail_after(5.0):
            code, body = await post_report(h)
        err = error_of(code, body, "AI_UNAVAILABLE", 503)
        assert err["details"] == {"reason": "upstream_error"} and err["retryAfterMs"] == 120_000
        assert len(fake.requests) == 1


async def test_other_4xx_are_not_retried_and_do_not_trip_the_breaker(tmp_path: Path, fake: FakeAnthropic) -> None:
    fake.always = Reply(status=400)
    async with app_with(tmp_path, ai_config(fake.url)) as h:
        for expected in range(1, 7):
            code, body = await post_report(h)
            assert error_of(code, body, "AI_UNAVAILABLE", 503)["details"] == {"reason": "upstream_error"}
            assert len(fake.requests) == expected  # one attempt each, and never refused by the breaker
        assert await metric_value(h, "vigil_ai_breaker_state", "") == 0


async def test_a_hanging_provider_times_out_each_attempt_within_the_deadline(tmp_path: Path,
                                                                             fake: FakeAnthropic) -> None:
    fake.always = Reply(hang=True)
    async with app_with(tmp_path, ai_config(fake.url, timeout=0.3, deadline=5.0, retry=fast_retry(2))) as h:
        with trio.fail_after(4.0):
            code, body = await post_report(h)
        err = error_of(code, body, "AI_UNAVAILABLE", 503)
        assert err["details"] == {"reason": "timeout"}
        assert len(fake.requests) == 2
        assert [r[0] for r in usage_rows(h)] == ["timeout", "timeout"]


async def test_the_overall_deadline_bounds_a_slow_provider(tmp_path: Path, fake: FakeAnthropic) -> None:
    fake.always = Reply(hang=True)
    async with app_with(tmp_path, ai_config(fake.url, timeout=10.0, deadline=0.5)) as h:
        with trio.fail_after(4.0):
            code, body = await post_report(h)
        assert error_of(code, body, "AI_UNAVAILABLE", 503)["details"] == {"reason": "timeout"}
        assert len(fake.requests) == 1


async def test_connection_errors_are_retried(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with app_with(tmp_path, ai_config(closed)) as h:
        code, body = await post_report(h)
        assert error_of(code, body, "AI_UNAVAILABLE", 503)["details"] == {"reason": "upstream_error"}
        assert [r[0] for r in usage_rows(h)] == ["connection_error"] * 3
