"""The weekly report's prompt: pure functions from the user's read models to the text that leaves.

PHI redaction is by construction: the prompt is written from an allowlist, not scrubbed from data. Only
numbers, metric names and units from the metric registry, sleep stage names from the sleep projection's
vocabulary, and day labels relative to the window ("day 3 (Thu)") are written. The user id, source and record
ids, device ids, calendar dates, free text (sample metadata, journal text) and settings never reach it, because
the read models it reads do not carry them into the text and nothing else is read. ``check_redacted`` is the
last gate (fail closed): text that looks like an email address, a phone number or an identifier is never sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from actors.ingest import REGISTRY
from actors.projection import CUMULATIVE, STAGE_NAMES
from storage import DailyRollup, SleepNight

WINDOW_DAYS = 7
_STAGES = frozenset(STAGE_NAMES.values())

SYSTEM_PROMPT = (
    "You write a short, friendly weekly wellbeing summary for one person from aggregated wearable data. "
    "Days are numbered 1 (oldest) to 7 (today) in the person's local time. Point out trends and notable "
    "days across activity, heart and sleep, and end with two practical suggestions. Do not diagnose, do not "
    "give medical advice, and say so when data is missing. Plain text, at most 250 words."
)


def report_window(today: date) -> tuple[date, date]:
    """The last ``WINDOW_DAYS`` local days, today included."""
    return today - timedelta(days=WINDOW_DAYS - 1), today


def iso_week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


@dataclass(frozen=True, slots=True, kw_only=True)
class WeekData:
    """What a report is made from: read models of one user's window (never raw samples)."""

    start: date
    end: date
    rollups: tuple[DailyRollup, ...]
    nights: tuple[SleepNight, ...]


def _day(start: date, day: date) -> str:
    return f"day {(day - start).days + 1} ({day.strftime('%a')})"


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".") if abs(value) < 1e12 else f"{value:.3g}"


def _rollup_lines(data: WeekData) -> list[str]:
    by_metric: dict[str, list[DailyRollup]] = {}
    for r in data.rollups:
        if r.metric in REGISTRY and data.start <= r.local_date <= data.end and r.count > 0:
            by_metric.setdefault(r.metric, []).append(r)
    lines: list[str] = []
    for metric in sorted(by_metric):
        unit = REGISTRY[metric].unit
        lines.append(f"{metric} ({unit}):")
        for r in sorted(by_metric[metric], key=lambda r: r.local_date):
            if metric in CUMULATIVE:
                lines.append(f"  {_day(data.start, r.local_date)}: total {_num(r.sum)}")
            else:
                avg = r.sum / r.count
                lines.append(f"  {_day(data.start, r.local_date)}: avg {_num(avg)}, min {_num(r.min)}, "
                             f"max {_num(r.max)}, readings {r.count}")
    return lines


def _stages(stages: Mapping[str, object]) -> str:
    parts = [f"{name} {_num(float(minutes))}" for name, minutes in sorted(stages.items())
             if name in _STAGES and isinstance(minutes, int | float)]
    return "; stages (min): " + ", ".join(parts) if parts else ""


def _night_lines(data: WeekData) -> list[str]:
    return [f"  night of {_day(data.start, n.night_date)}: asleep {_num(n.asleep_minutes)} min, awake "
            f"{_num(n.awake_minutes)} min{_stages(n.stages)}"
            for n in sorted(data.nights, key=lambda n: n.night_date) if data.start <= n.night_date <= data.end]


def build_prompt(data: WeekData) -> str:
    """The user message: the window's daily rollups and sleep nights, redacted by construction."""
    rollups, nights = _rollup_lines(data), _night_lines(data)
    parts = [f"Aggregated data for the last {WINDOW_DAYS} days (day 1 = {data.start.strftime('%a')}, "
             f"day {WINDOW_DAYS} = today, {data.end.strftime('%a')})."]
    parts += ["Daily rollups:", *rollups] if rollups else ["Daily rollups: none recorded."]
    parts += ["Sleep:", *nights] if nights else ["Sleep: no nights recorded."]
    text = "\n".join(parts)
    check_redacted(text)
    return text


class RedactionError(ValueError):
    """The text to send looks like it carries an identifier or contact detail: it is not sent."""


_LEAKS = (
    ("an email address", re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")),
    ("a phone number", re.compile(r"\+?\(?\d{2,4}\)?[\s.-]?\d{3,4}[\s.-]?\d{3,4}")),
    ("a uuid", re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")),
    ("a calendar date", re.compile(r"\d{4}-\d{2}-\d{2}")),
    # 12+ characters of letters, digits, '-' or '_' with both letters and digits: a serial, a key, a record id
    ("an identifier", re.compile(r"(?<![A-Za-z0-9_-])(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])"
                                 r"[A-Za-z0-9_-]{12,}")),
)


def check_redacted(text: str, *, forbidden: Iterable[str] = ()) -> None:
    """Raise ``RedactionError`` if ``text`` contains any of ``forbidden`` or looks like it carries an email
    address, a phone number, a uuid, a date or an identifier-like token."""
    for value in forbidden:
        if value and value in text:
            raise RedactionError("the prompt contains a value that must not leave")
    for what, pattern in _LEAKS:
        if pattern.search(text):
            raise RedactionError(f"the prompt looks like it contains {what}")


__all__ = ["SYSTEM_PROMPT", "WINDOW_DAYS", "RedactionError", "WeekData", "build_prompt", "check_redacted",
           "iso_week", "report_window"]
