"""The AI weekly report (API.md "AI and exports").

The handler translates only: ``AiService.weekly_report`` called, its answer rendered. Errors (503
AI_UNAVAILABLE with retryAfterMs) are mapped in ``_errors``.
"""

from __future__ import annotations

from datetime import datetime

from actors.ai import WeeklyReport

from ._context import domains, refuse_while_draining
from ._routes import ApiBlueprint, ApiModel


class WeeklyReportOut(ApiModel):
    report: str
    model: str
    generated_at: datetime
    cached: bool


def _report_out(report: WeeklyReport) -> WeeklyReportOut:
    return WeeklyReportOut(report=report.report, model=report.model, generated_at=report.generated_at,
                           cached=report.cached)


ai = ApiBlueprint("ai", url_prefix="/v1/ai", tags=["ai"])


@ai.post("/weekly-report", response=WeeklyReportOut, errors=[503],
         summary="A summary of the user's last 7 days of read models (identifiers and free text redacted), "
                 "cached while their data has not changed")
async def weekly_report(*, user_id: str) -> WeeklyReportOut:
    refuse_while_draining()
    return _report_out(await domains().ai.weekly_report(user_id))


__all__ = ["ai"]
