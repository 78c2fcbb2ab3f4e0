"""The AI tables' storage contract (cached weekly reports, provider usage), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from storage import AiReport, AiUsage, AiUsageTotal, InvalidData, Store, StoreConfig, open_store
from storage.testing import ManualClock

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def clocked(store_url: str, store_config: StoreConfig, clock: ManualClock) -> AsyncIterator[Store]:
    async with open_store(store_url, config=replace(store_config, clock=clock)) as opened:
        yield opened


def report(user: str = "u1", week: str = "2026-W49", watermark: int = 3, text: str = "a good week",
           model: str = "claude-x") -> AiReport:
    return AiReport(user_id=user, iso_week=week, watermark=watermark, model=model, report=text,
                    generated_at=T0 + timedelta(minutes=watermark))


async def test_a_report_is_cached_per_user_and_week_and_replaced_by_a_newer_one(store: Store) -> None:
    async with store.transaction() as tx:
        (missing,) = await tx.run(tx.ai_reports.get("u1", "2026-W49"))
        assert missing is None
        await tx.commit(tx.ai_reports.put(report()), tx.ai_reports.put(report(user="u2", text="other")),
                        tx.ai_reports.put(report(week="2026-W48", text="last week")))
    async with store.transaction(readonly=True) as tx:
        got, other, last = await tx.run(tx.ai_reports.get("u1", "2026-W49"), tx.ai_reports.get("u2", "2026-W49"),
                                         tx.ai_reports.get("u1", "2026-W48"))
    assert got == report()
    assert other is not None and other.report == "other"
    assert last is not None and last.report == "last week"

    async with store.transaction() as tx:
        await tx.commit(tx.ai_reports.put(report(watermark=9, text="with new data", model="claude-y")))
    async with store.transaction(readonly=True) as tx:
        (got,) = await tx.run(tx.ai_reports.get("u1", "2026-W49"))
    assert got == report(watermark=9, text="with new data", model="claude-y")


async def test_bad_reports_are_refused_before_anything_is_written(store: Store) -> None:
    async with store.transaction() as tx:
        with pytest.raises(InvalidData):
            tx.ai_reports.put(replace(report(), generated_at=datetime(2026, 11, 30)))  # naive
        with pytest.raises(InvalidData):
            tx.ai_reports.put(replace(report(), watermark=-1))
        with pytest.raises(InvalidData):
            tx.ai_reports.put(replace(report(), report="x" * (64 * 1024 + 1)))


async def test_usage_totals_per_model_and_outcome_since_a_time_and_per_user(clocked: Store,
                                                                            clock: ManualClock) -> None:
    async with clocked.transaction() as tx:
        (n,) = await tx.commit(tx.ai_usage.record_many([
            AiUsage(user_id="u1", model="m", outcome="ok", input_tokens=100, output_tokens=20),
            AiUsage(user_id="u1", model="m", outcome="server_error"),
            AiUsage(user_id="u2", model="m", outcome="ok", input_tokens=50, output_tokens=5),
        ]))
    assert n == 3
    clock.advance(3600)
    async with clocked.transaction() as tx:
        await tx.commit(tx.ai_usage.record_many([AiUsage(user_id="u1", model="m2", outcome="ok", input_tokens=7,
                                                         output_tokens=1)]),
                        tx.ai_usage.record_many([]))
    async with clocked.transaction(readonly=True) as tx:
        everyone, mine, recent = await tx.run(tx.ai_usage.totals(since=T0), tx.ai_usage.totals(since=T0, user_id="u1"),
                                              tx.ai_usage.totals(since=T0 + timedelta(minutes=30)))
    assert everyone == [AiUsageTotal(model="m", outcome="ok", calls=2, input_tokens=150, output_tokens=25),
                        AiUsageTotal(model="m", outcome="server_error", calls=1, input_tokens=0, output_tokens=0),
                        AiUsageTotal(model="m2", outcome="ok", calls=1, input_tokens=7, output_tokens=1)]
    assert mine == [AiUsageTotal(model="m", outcome="ok", calls=1, input_tokens=100, output_tokens=20),
                    AiUsageTotal(model="m", outcome="server_error", calls=1, input_tokens=0, output_tokens=0),
                    AiUsageTotal(model="m2", outcome="ok", calls=1, input_tokens=7, output_tokens=1)]
    assert recent == [AiUsageTotal(model="m2", outcome="ok", calls=1, input_tokens=7, output_tokens=1)]


async def test_bad_usage_rows_are_refused(store: Store) -> None:
    async with store.transaction() as tx:
        with pytest.raises(InvalidData):
            tx.ai_usage.record_many([AiUsage(user_id="u1", model="m", outcome="ok", input_tokens=-1)])
        with pytest.raises(InvalidData):
            tx.ai_usage.record_many(["not usage"])  # type: ignore[list-item]
