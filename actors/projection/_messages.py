"""Messages of the projection domain's actors and what each one answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from storage import Checkpoint

from ._work import EventDigest


# -- to a handler's worker --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Work:
    """Checkpoints the dispatcher created already leased to this process, with their events."""

    items: tuple[tuple[Checkpoint, EventDigest | None], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    """Claim what is due (retries, expired leases, dependents whose dependency completed)."""


# -- to the dispatcher --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Wake:
    """An outbox event committed (a local commit, or PostgreSQL's NOTIFY): dispatch now."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Dispatch:
    """The dispatcher's own poll (the fallback when no wake-up arrives)."""


# -- to a user's reader -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class ReadRollups:
    """Reply: ``RollupsView``."""

    metric: str
    start: date
    end: date


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadNights:
    """Reply: ``NightsView``."""

    start: date
    end: date


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadSessionImpact:
    """Reply: ``SessionImpactView``; None when the user has no such (undeleted) session."""

    session_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadProductImpact:
    """Reply: ``ProductImpactView``."""


__all__ = ["Dispatch", "ReadNights", "ReadProductImpact", "ReadRollups", "ReadSessionImpact", "Tick", "Wake", "Work"]
