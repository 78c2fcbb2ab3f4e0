"""Messages of the AI domain's actors and what each one answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class MakeWeeklyReport:
    """To a user's reporter. Reply: ``WeeklyReport``; the ask raises ``AiUnavailable`` when there is none (an
    answer, not a crash: an unavailable provider is an expected outcome)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WeeklyReport:
    report: str
    model: str
    generated_at: datetime
    cached: bool


__all__ = ["MakeWeeklyReport", "WeeklyReport"]
