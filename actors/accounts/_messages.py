"""Messages of the account actor (keyed by user id) and what each one answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from storage import SampleCursor, UserSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class GetSettings:
    """Reply: ``UserSettings``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PutSettings:
    """Reply: the stored ``UserSettings``."""

    settings: UserSettings
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class QuerySamples:
    """Reply: ``Page[HealthSample]``."""

    metric: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    after: SampleCursor | None = None
    limit: int = 100
