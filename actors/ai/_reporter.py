"""A user's weekly report (one keyed actor per user, so one user's requests never call the provider twice at
once: the second waits and finds the first one's report cached), and the keeper of the provider's connections.

A report is cached per (user, ISO week of the user's today) with the data mark it was made from, and reused
only while the data it was made from is unchanged. The mark is the sum of two monotonic counters, so it changes
whenever either advances:

- the sample mark: the lowest of the user's watermark and the three read models' projected watermarks (daily
  rollups, sleep nights, session impact), i.e. the sample changes the report actually reflects;
- the user's sync change-log sequence (``latest_seq``): session changes come through sync, which the watermark
  does not count. Any other synced change (a journal entry) advances it too: a report made again, never stale.

A report made while the session read model has unfinished work for the user (its freshness, as the session
views compute it, is not ``fresh``: a sync change not yet dispatched or projected, heart rate not yet projected,
a dead letter) is answered but not cached: its rows may not reflect the sequence it would be stored under. The
marks are read before the freshness and the freshness before the rows (PostgreSQL's read committed gives each
statement its own snapshot), so the rows are at least as new as the mark: at worst a report is made again.

The same mark (and model) again is a cache hit and costs no request; new data, or the read models catching up
with it, make a new report. A cached report is served even while the provider's breaker is open.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import trio

from actors.projection import SESSION_IMPACT, impact_freshness, rollup_metrics
from kernel import Actor, CircuitOpen, Failed
from storage import AiReport, AiUsage, Op, Store

from ._errors import AiUnavailable
from ._gateway import AnthropicGateway, ProviderFailed, ProviderTimeout
from ._messages import MakeWeeklyReport, WeeklyReport
from ._prompt import MAX_SESSIONS, SYSTEM_PROMPT, WeekData, build_prompt, iso_week, report_window, window_span

ROLLUPS, NIGHTS = "daily_rollups", "sleep_nights"  # the read models' handler names (their projected marks)
READ_MODELS = (ROLLUPS, NIGHTS, SESSION_IMPACT)
# When the provider failed without saying when to come back: a short pause, or the breaker's own wait.
FAILED_RETRY_AFTER = 5.0


class WeeklyReporter(Actor):
    def __init__(self, user_id: str, *, store: Store, gateway: AnthropicGateway) -> None:
        self.user_id = user_id
        self.store = store
        self.gateway = gateway

    async def receive(self, msg: Any) -> Any:
        match msg:
            case MakeWeeklyReport():
                outcome = await self._report()
                # An unavailable provider is an expected answer, not a crash: the ask raises it.
                return Failed(outcome) if isinstance(outcome, AiUnavailable) else outcome
            case _:
                raise TypeError(f"weekly reporter: unexpected message {msg!r}")

    async def _report(self) -> WeeklyReport | AiUnavailable:
        model = self.gateway.config.model
        week, data_mark, cacheable, cached, data = await self._read()
        if cached is not None and cached.watermark == data_mark and cached.model == model:
            return WeeklyReport(report=cached.report, model=cached.model, generated_at=cached.generated_at,
                                cached=True)
        usage: list[AiUsage] = []
        outcome = await self._generate(build_prompt(data), usage)
        new_report = None
        if isinstance(outcome, WeeklyReport) and cacheable:
            new_report = AiReport(user_id=self.user_id, iso_week=week, watermark=data_mark, model=model,
                                  report=outcome.report, generated_at=outcome.generated_at)
        if usage or new_report is not None:
            async with self.store.transaction() as tx:
                ops: list[Op[Any]] = [tx.ai_usage.record_many(usage)] if usage else []
                if new_report is not None:
                    ops.append(tx.ai_reports.put(new_report))
                await tx.commit(*ops)
        return outcome

    async def _read(self) -> tuple[str, int, bool, AiReport | None, WeekData]:
        """In one read-only transaction: the user's ISO week, data mark, whether a report of it may be cached,
        the cached report and the read models (marks, then freshness, then rows: see the module's docstring)."""
        user = self.user_id
        async with self.store.transaction(readonly=True) as tx:
            settings, marks, seq = await tx.run(tx.users.get_settings(user), tx.watermarks.get(user),
                                                tx.changes.latest_seq(user))
            freshness = await impact_freshness(tx, user, [SESSION_IMPACT], {})
            tz = ZoneInfo(settings.timezone)
            today = self.store.config.clock().astimezone(tz).date()
            start, end = report_window(today)
            first, last = window_span(start, end, tz)
            sample_mark = min(marks.watermark, *(marks.projected.get(h, 0) for h in READ_MODELS))
            cached, nights, sessions, *rollups = await tx.run(
                tx.ai_reports.get(user, iso_week(today)), tx.sleep.read(user, start, end),
                tx.session_impacts.started_within(user, first, last, limit=MAX_SESSIONS + 1),
                *(tx.rollups.read(user, metric, start, end) for metric in sorted(rollup_metrics())))
        data = WeekData(start=start, end=end, rollups=tuple(r for day in rollups for r in day), nights=tuple(nights),
                        sessions=tuple(sessions), tz=tz)
        return iso_week(today), sample_mark + seq, freshness.status == "fresh", cached, data

    async def _generate(self, prompt: str, usage: list[AiUsage]) -> WeeklyReport | AiUnavailable:
        """The provider's report, or why there is none; ``usage`` gets every attempt."""
        try:
            completion = await self.gateway.complete(user_id=self.user_id, system=SYSTEM_PROMPT, prompt=prompt,
                                                     record=usage.append)
        except CircuitOpen as exc:
            return AiUnavailable("breaker_open", "the AI provider is failing; its circuit breaker is open",
                                 retry_after=exc.retry_after)
        except (trio.TooSlowError, ProviderTimeout):
            return AiUnavailable("timeout", "the AI provider did not answer in time",
                                 retry_after=self._retry_after(None))
        except ProviderFailed as exc:
            return AiUnavailable("upstream_error", str(exc), retry_after=self._retry_after(exc.retry_after))
        return WeeklyReport(report=completion.text, model=self.gateway.config.model,
                            generated_at=self.store.config.clock(), cached=False)

    def _retry_after(self, hint: float | None) -> float:
        return max(self.gateway.breaker.snapshot().retry_after, hint if hint is not None else FAILED_RETRY_AFTER)


class GatewayKeeper(Actor):
    """Owns the provider's connection pool: closes it when the domain stops (started before the reporters,
    so stopped after them)."""

    def __init__(self, *, gateway: AnthropicGateway) -> None:
        self.gateway = gateway

    async def stopping(self) -> None:
        await self.gateway.aclose()

    async def receive(self, msg: Any) -> Any:
        raise TypeError(f"gateway keeper: unexpected message {msg!r}")


__all__ = ["GatewayKeeper", "WeeklyReporter"]
