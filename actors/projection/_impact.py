"""Session and product impact, and when a session is stale: pure (API.md "Sync", session read models).

A ``consumption_session``'s ``data`` names its ``status``, ``startAt``, ``endAt`` and ``productId``. Its impact is
heart rate ``{avg, min, max, count}`` in three windows, a sample belonging to the window its start falls in:
before ``[startAt - 1 h, startAt)``, during ``[startAt, endAt]``, after ``(endAt, endAt + 1 h]``. Every
heart-rate sample counts (no source ranking, as for the heart-rate rollups). ``deltaDuring`` is avg during − avg
before, ``deltaAfter`` avg after − avg before; null when either side has no samples. A session without a
readable ``startAt`` has no impact; without ``endAt`` only ``before`` has figures.

A product's impact is over its ended sessions: each window's ``avg`` is the mean of the sessions' averages
(sessions without samples there do not count), ``min``/``max`` the extremes, ``count`` the samples; each delta
the mean of the sessions' deltas that are not null.

A session still ``active`` ``STALE_AFTER`` (an hour) past its ``endAt`` is stale: the server ends it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from storage import ProductImpact, SessionImpact

from ._rollups import RollupSample

SESSION = "consumption_session"
WINDOW = timedelta(hours=1)
STALE_AFTER = timedelta(hours=1)
WINDOWS = ("before", "during", "after")
ENDED = "ended"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionFacts:
    """What the read models read of a session's ``data`` (anything unreadable is None)."""

    session_id: str
    status: str | None
    product_id: str | None
    start_at: datetime | None
    end_at: datetime | None

    @property
    def span(self) -> tuple[datetime, datetime] | None:
        """[from, to] of the heart-rate samples the impact reads; None without a start."""
        if self.start_at is None:
            return None
        if self.end_at is None or self.end_at < self.start_at:  # no (sensible) end: only "before" has figures
            return self.start_at - WINDOW, self.start_at
        return self.start_at - WINDOW, self.end_at + WINDOW


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.utcoffset() is not None else None  # a naive time names no instant


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def session_facts(session_id: str, data: Any) -> SessionFacts:
    """The session's facts from its entity ``data`` (a JSON object; anything else reads as empty)."""
    data = data if isinstance(data, Mapping) else {}
    return SessionFacts(session_id=session_id, status=_text(data.get("status")),
                        product_id=_text(data.get("productId")), start_at=_instant(data.get("startAt")),
                        end_at=_instant(data.get("endAt")))


def window_stats(values: Sequence[float]) -> dict[str, Any]:
    """``{avg, min, max, count}`` of ``values``; the figures are null without values."""
    if not values:
        return {"avg": None, "min": None, "max": None, "count": 0}
    return {"avg": math.fsum(values) / len(values), "min": min(values), "max": max(values), "count": len(values)}


def delta(later: Mapping[str, Any], earlier: Mapping[str, Any]) -> float | None:
    a, b = later.get("avg"), earlier.get("avg")
    return None if a is None or b is None else float(a) - float(b)


def _window_of(start: datetime, facts: SessionFacts) -> str | None:
    s, e = facts.start_at, facts.end_at
    assert s is not None
    if s - WINDOW <= start < s:
        return "before"
    if e is None or e < s:
        return None
    if s <= start <= e:
        return "during"
    if e < start <= e + WINDOW:
        return "after"
    return None


def session_impact(user_id: str, facts: SessionFacts, samples: Iterable[RollupSample]) -> SessionImpact | None:
    """The session's impact from the heart-rate samples around it (any superset of its span will do);
    None when it has no start."""
    span = facts.span
    if span is None or facts.start_at is None:
        return None
    values: dict[str, list[float]] = {name: [] for name in WINDOWS}
    for sample in sorted(samples, key=lambda s: (s.start_at, s.end_at, s.source_id, s.value)):
        window = _window_of(sample.start_at, facts)
        if window is not None:
            values[window].append(sample.value)
    stats = {name: window_stats(values[name]) for name in WINDOWS}
    return SessionImpact(user_id, facts.session_id, facts.product_id, facts.status or "unknown", facts.start_at,
                         facts.end_at, span[0], span[1], stats, delta(stats["during"], stats["before"]),
                         delta(stats["after"], stats["before"]))


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _averaged(windows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    present = [w for w in windows if w.get("count")]
    if not present:
        return {"avg": None, "min": None, "max": None, "count": 0}
    return {"avg": _mean([float(w["avg"]) for w in present]), "min": min(float(w["min"]) for w in present),
            "max": max(float(w["max"]) for w in present), "count": sum(int(w["count"]) for w in present)}


def product_impacts(user_id: str, sessions: Iterable[SessionImpact]) -> list[ProductImpact]:
    """Per product (by id) over its ended sessions; sessions of no product or not ended do not count."""
    by_product: dict[str, list[SessionImpact]] = {}
    for impact in sessions:
        if impact.status == ENDED and impact.product_id is not None:
            by_product.setdefault(impact.product_id, []).append(impact)
    out = []
    for product, mine in sorted(by_product.items()):
        stats = {name: _averaged([s.stats.get(name, {}) for s in mine]) for name in WINDOWS}
        out.append(ProductImpact(user_id, product, len(mine), stats,
                                 _mean([s.delta_during for s in mine if s.delta_during is not None]),
                                 _mean([s.delta_after for s in mine if s.delta_after is not None])))
    return out


def is_stale(data: Any, now: datetime, *, grace: timedelta = STALE_AFTER) -> bool:
    """A session still ``active`` ``grace`` past its ``endAt`` (one without a readable ``endAt`` never is)."""
    facts = session_facts("", data)
    return facts.status == "active" and facts.end_at is not None and now >= facts.end_at + grace


def ended(data: Any) -> dict[str, Any]:
    """The data of a session the server ends: the same, with ``status`` ended."""
    return {**(data if isinstance(data, Mapping) else {}), "status": ENDED}


__all__ = ["ENDED", "SESSION", "STALE_AFTER", "WINDOW", "WINDOWS", "SessionFacts", "delta", "ended", "is_stale",
           "product_impacts", "session_facts", "session_impact", "window_stats"]
