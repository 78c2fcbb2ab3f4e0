"""The weekly report's prompt: pure functions from the user's read models to the text that leaves.

PHI redaction is by construction: the prompt is written from an allowlist, not scrubbed from data. Only
numbers, metric names and units from the metric registry, sleep stage names from the sleep projection's
vocabulary, session statuses from the sync vocabulary, day labels relative to the window ("day 3 (Thu)") and
product labels local to the prompt ("product A", in order of first appearance) are written. The user id, source
and record ids, device ids, session and product ids (client-chosen: they may be names, emails, free text),
calendar dates, free text (sample metadata, journal text) and settings never reach it, because the read models
it reads do not carry them into the text and nothing else is read. ``check_redacted`` is the
last gate (fail closed): text that looks like an email address, a phone number or an identifier is never sent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from actors.ingest import REGISTRY
from actors.projection import CUMULATIVE, STAGE_NAMES
from storage import DailyRollup, SessionImpact, SleepNight

WINDOW_DAYS = 7
MAX_SESSIONS = 50  # the newest sessions of the window a prompt shows (the reporter reads one more: "of more")
_STAGES = frozenset(STAGE_NAMES.values())
_STATUSES = frozenset({"active", "paused", "ended"})  # a consumption_session's status (API.md "Sync")
_WINDOWS = ("before", "during", "after")

SYSTEM_PROMPT = (
    "You write a short, friendly weekly wellbeing summary for one person from aggregated wearable data. "
    "Days are numbered 1 (oldest) to 7 (today) in the person's local time. Point out trends and notable "
    "days across activity, heart and sleep, and end with two practical suggestions. Sessions are the "
    "person's consumption sessions with their average heart rate in the hour before, during and in the hour "
    "after each one; products are labelled A, B, ... because their names are withheld. Do not diagnose, do not "
    "give medical advice, and say so when data is missing. Plain text, at most 250 words."
)


def report_window(today: date) -> tuple[date, date]:
    """The last ``WINDOW_DAYS`` local days, today included."""
    return today - timedelta(days=WINDOW_DAYS - 1), today


def window_span(start: date, end: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """[from, to) in UTC of the local days ``start`` .. ``end`` in ``tz``: local midnight of ``start`` to local
    midnight after ``end`` (a DST day is 23 or 25 hours long)."""
    first = datetime.combine(start, time(), tzinfo=tz).astimezone(UTC)
    last = datetime.combine(end + timedelta(days=1), time(), tzinfo=tz).astimezone(UTC)
    return first, last


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
    sessions: tuple[SessionImpact, ...] = ()  # the window's session impacts (any order)
    tz: tzinfo = UTC  # the user's timezone: which local day a session started on


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


def _letters(n: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA, ...: a product's label by order of first appearance."""
    out = ""
    n += 1
    while n:
        n, rest = divmod(n - 1, 26)
        out = chr(ord("A") + rest) + out
    return out


def _figure(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _avg(stats: Mapping[str, object], window: str) -> float | None:
    figures = stats.get(window)
    return _figure(figures.get("avg")) if isinstance(figures, Mapping) else None


def _signed(value: float | None) -> str:
    return "n/a" if value is None else ("+" if value > 0 else "") + _num(value)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _session_line(data: WeekData, day: date, s: SessionImpact, product: str) -> str:
    status = s.status if s.status in _STATUSES else "status unknown"
    minutes = ""
    if s.status == "ended" and s.end_at is not None and s.end_at >= s.start_at:
        minutes = f", {_num((s.end_at - s.start_at).total_seconds() / 60)} min"
    avgs = ", ".join(f"{w} {'no data' if (a := _avg(s.stats, w)) is None else _num(a)}" for w in _WINDOWS)
    return (f"  {_day(data.start, day)}: {product}, {status}{minutes}; avg {avgs}; "
            f"delta during {_signed(_figure(s.delta_during))}, after {_signed(_figure(s.delta_after))}")


def _product_line(label: str, sessions: Sequence[SessionImpact]) -> str:
    during = [d for s in sessions if (d := _figure(s.delta_during)) is not None]
    after = [d for s in sessions if (d := _figure(s.delta_after)) is not None]
    plural = "s" if len(sessions) != 1 else ""
    return (f"  {label}: {len(sessions)} session{plural}, mean delta during {_signed(_mean(during))} (from "
            f"{len(during)}), mean delta after {_signed(_mean(after))} (from {len(after)})")


def _session_lines(data: WeekData) -> list[str]:
    """Each session of the window, oldest first (the newest ``MAX_SESSIONS``), then each product's sessions
    summed up; product ids become "product A", "product B", ... in order of first appearance."""
    local = [(s.start_at.astimezone(data.tz).date(), s) for s in data.sessions]
    shown = sorted(((day, s) for day, s in local if data.start <= day <= data.end), key=lambda p: p[1].start_at)
    if not shown:
        return []
    more = len(shown) > MAX_SESSIONS
    labels: dict[str, str] = {}
    by_product: dict[str, list[SessionImpact]] = {}
    lines = [(f"Sessions (the {MAX_SESSIONS} most recent of more; " if more else "Sessions (")
             + "heart rate in bpm: avg the hour before, during, and the hour after; delta = avg minus avg before):"]
    for day, s in shown[-MAX_SESSIONS:]:
        product = "no product"
        if s.product_id is not None:
            product = labels.setdefault(s.product_id, f"product {_letters(len(labels))}")
            by_product.setdefault(product, []).append(s)
        lines.append(_session_line(data, day, s, product))
    if by_product:
        lines += ["Per product (the sessions above):", *(_product_line(k, v) for k, v in by_product.items())]
    return lines


def build_prompt(data: WeekData) -> str:
    """The user message: the window's daily rollups, sleep nights and sessions, redacted by construction."""
    rollups, nights, sessions = _rollup_lines(data), _night_lines(data), _session_lines(data)
    parts = [f"Aggregated data for the last {WINDOW_DAYS} days (day 1 = {data.start.strftime('%a')}, "
             f"day {WINDOW_DAYS} = today, {data.end.strftime('%a')})."]
    parts += ["Daily rollups:", *rollups] if rollups else ["Daily rollups: none recorded."]
    parts += ["Sleep:", *nights] if nights else ["Sleep: no nights recorded."]
    parts += sessions or ["Sessions: none recorded."]
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


__all__ = ["MAX_SESSIONS", "SYSTEM_PROMPT", "WINDOW_DAYS", "RedactionError", "WeekData", "build_prompt",
           "check_redacted", "iso_week", "report_window", "window_span"]
