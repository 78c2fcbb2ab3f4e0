"""How fresh a read model is (API.md "Health projections"): a pure decision over what the store says.

``watermark`` counts the user's committed sample changes; ``projected`` is the highest W such that every change
up to W is reflected in this read model. ``fresh`` only when they are equal; otherwise ``failed`` when a change of
this user is dead-lettered for this projection, ``stale`` while the projection is held back (a retry waiting for
its backoff, the handler's breaker open), and ``computing`` while the missing changes are being processed or are
still queued. Staleness is always explicit.

The session read models also follow sync changes, which the watermark does not count: for them ``fresh`` also
needs no unfinished checkpoint of the user (so an applied sync change not yet projected reads ``computing``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FreshnessStatus = Literal["fresh", "stale", "computing", "failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Freshness:
    status: FreshnessStatus
    watermark: int
    projected_watermark: int


def decide_freshness(*, watermark: int, projected: int, has_dead: bool, retry_waiting: bool,
                     held_back: bool, unfinished: int = 0) -> Freshness:
    """The status of one (user, projection) read model; ``projected`` is clamped to ``watermark``
    (a recompute may reflect changes newer than the ones it was asked for, but never claims them).

    ``unfinished``: checkpoints of the read model not completed yet. A read model fed by changes the watermark
    does not count (the session read models: sync changes) passes it, so one of those still queued is not
    ``fresh`` either."""
    projected = min(projected, watermark)
    if projected >= watermark and unfinished == 0:
        status: FreshnessStatus = "fresh"
    elif has_dead:
        status = "failed"
    elif retry_waiting or held_back:
        status = "stale"
    else:
        status = "computing"
    return Freshness(status=status, watermark=watermark, projected_watermark=projected)


__all__ = ["Freshness", "FreshnessStatus", "decide_freshness"]
