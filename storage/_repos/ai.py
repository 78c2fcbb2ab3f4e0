"""The AI weekly report's durable state: the cached reports and the provider's usage (cost tracking)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .. import _validate as v
from .._errors import InvalidData
from .._model import AiReport, AiUsage, AiUsageTotal
from .._sql import execute, fetch, fetchrow, many
from .._time import aware
from .._tx import Const, Op
from .base import Repo, Row

__all__ = ["AiReports", "AiUsageLog"]

_REPORT_COLS = "user_id, iso_week, watermark, model, report, generated_at"
_GET_REPORT = f"SELECT {_REPORT_COLS} FROM ai_reports WHERE user_id = $1 AND iso_week = $2"
# One report per (user, week): a newer one (new data, another model) replaces it.
_PUT_REPORT = (
    f"INSERT INTO ai_reports ({_REPORT_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"
    " ON CONFLICT (user_id, iso_week) DO UPDATE SET watermark = excluded.watermark, model = excluded.model,"
    " report = excluded.report, generated_at = excluded.generated_at"
)
_RECORD_USAGE = (
    "INSERT INTO ai_usage (user_id, model, outcome, input_tokens, output_tokens, at)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
)
_TOTALS = (
    "SELECT model, outcome, count(*) AS calls, sum(input_tokens) AS input_tokens,"
    " sum(output_tokens) AS output_tokens FROM ai_usage WHERE at >= $1"
    " GROUP BY model, outcome ORDER BY model, outcome"
)
_TOTALS_OF_USER = _TOTALS.replace("WHERE at >= $1", "WHERE at >= $1 AND user_id = $2")
_REPORT_CHARS = 64 * 1024


class AiReports(Repo):
    """Cached weekly reports, one per (user, ISO week)."""

    __slots__ = ()

    def _report(self, row: Row | None) -> AiReport | None:
        if row is None:
            return None
        return AiReport(user_id=row["user_id"], iso_week=row["iso_week"], watermark=int(row["watermark"]),
                        model=row["model"], report=row["report"], generated_at=self._d.ts_out(row["generated_at"]))

    def get(self, user_id: str, iso_week: str) -> Op[AiReport | None]:
        """The user's report of that week, or None."""
        return self._op(fetchrow(_GET_REPORT, self._id("user_id", user_id), self._name("iso_week", iso_week)),
                        post=self._report)

    def put(self, report: AiReport) -> Op[None]:
        """Store ``report`` as the user's report of its week (replacing an older one)."""
        if not isinstance(report, AiReport):
            raise InvalidData("report", "expected an AiReport")
        args = (self._id("report.user_id", report.user_id), self._name("report.iso_week", report.iso_week),
                v.integer("report.watermark", report.watermark), self._name("report.model", report.model),
                v.text("report.report", report.report, _REPORT_CHARS),
                self._d.ts(aware("report.generated_at", report.generated_at)))
        return self._op(execute(_PUT_REPORT, *args), post=lambda _: None)


class AiUsageLog(Repo):
    """One row per call to the AI provider: tokens in and out, model, outcome."""

    __slots__ = ()

    def record_many(self, rows: Sequence[AiUsage]) -> Op[int]:
        """Append the calls; returns how many were recorded."""
        v.batch("rows", rows, self._limits)
        now = self._d.ts(self._now())
        norm: list[tuple[Any, ...]] = []
        for i, r in enumerate(rows):
            if not isinstance(r, AiUsage):
                raise InvalidData(f"rows[{i}]", "expected an AiUsage")
            norm.append((self._id(f"rows[{i}].user_id", r.user_id), self._name(f"rows[{i}].model", r.model),
                         self._name(f"rows[{i}].outcome", r.outcome), v.integer(f"rows[{i}].input_tokens",
                                                                               r.input_tokens),
                         v.integer(f"rows[{i}].output_tokens", r.output_tokens), now))
        return self._op(many(_RECORD_USAGE, norm) if norm else Const(None), post=lambda _: len(norm))

    def totals(self, *, since: datetime, user_id: str | None = None) -> Op[list[AiUsageTotal]]:
        """Calls and tokens per (model, outcome) since ``since`` (of one user, or everyone's)."""
        start = self._d.ts(aware("since", since))
        cmd = fetch(_TOTALS, start) if user_id is None else fetch(_TOTALS_OF_USER, start, self._id("user_id", user_id))

        def post(rows: list[Row]) -> list[AiUsageTotal]:
            return [AiUsageTotal(model=r["model"], outcome=r["outcome"], calls=int(r["calls"]),
                                 input_tokens=int(r["input_tokens"] or 0), output_tokens=int(r["output_tokens"] or 0))
                    for r in rows]

        return self._op(cmd, post=post)
