"""What a projection handler is given to do, grouped per user: pure.

A handler takes leased checkpoints — one per (outbox event, handler) — and brings each user's read model up to
date for all of that user's events at once (coalescing: two uploads touching the same day recompute it once).
From the events it learns which keys changed (``health.samples.changed`` names (metric, local date) pairs) or
that everything must be recomputed (``user.settings.changed``: a new timezone or source priority moves every
day); from the checkpoints, which watermark ranges the work reflects once committed. ``sync.entity.changed``
(an applied sync change) names the entity it changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from storage import Checkpoint, CheckpointIn, CheckpointKey

SAMPLES_CHANGED = "health.samples.changed"
# A synced entity changed (actors/sync: a device push, a conflict resolution or a server change); payload
# {"entityType", "entityId", "version", "op", "deleted", "deviceId", "data"}.
SYNC_ENTITY_CHANGED = "sync.entity.changed"
SETTINGS_CHANGED = "user.settings.changed"


# A piece of work: a stored checkpoint, or the same fields of one the dispatcher holds in memory (no row yet).
Job = Checkpoint | CheckpointIn


@dataclass(frozen=True, slots=True, kw_only=True)
class EventDigest:
    """The part of an outbox event a handler reads."""

    event_id: int
    type: str
    payload: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class UserWork:
    """One user's share of a batch: the checkpoints to complete and what their events changed."""

    user_id: str
    checkpoints: tuple[Job, ...]
    # (metric, local date) pairs the events name; empty when ``full``.
    keys: frozenset[tuple[str, date]]
    # Recompute everything this handler keeps for the user (settings changed, or an event named no keys).
    full: bool
    # (entity type, entity id) of the synced entities the events changed; empty when ``full``.
    entities: frozenset[tuple[str, str]] = frozenset()

    @property
    def ranges(self) -> list[tuple[int, int]]:
        """The watermark ranges (from, to] these checkpoints cover."""
        return sorted({(c.wm_from, c.wm_to) for c in self.checkpoints
                       if c.wm_from is not None and c.wm_to is not None})

    @property
    def keys_of_checkpoints(self) -> list[CheckpointKey]:
        return [CheckpointKey(c.event_id, c.handler) for c in self.checkpoints]

    def dates_of(self, metric: str) -> list[date]:
        return sorted(d for m, d in self.keys if m == metric)


def _event_keys(payload: Any) -> set[tuple[str, date]] | None:
    """The (metric, date) keys an upload's event names; None when it names none we can read."""
    if not isinstance(payload, Mapping):
        return None
    raw = payload.get("keys")
    if not isinstance(raw, list):
        return None
    keys: set[tuple[str, date]] = set()
    for item in raw:
        try:
            keys.add((str(item["metric"]), date.fromisoformat(item["date"])))
        except (KeyError, TypeError, ValueError):
            return None  # a malformed key: recompute everything rather than guess
    return keys


def _event_entity(payload: Any) -> tuple[str, str] | None:
    """The (entity type, entity id) a sync change names; None when it names none we can read."""
    if not isinstance(payload, Mapping):
        return None
    kind, ident = payload.get("entityType"), payload.get("entityId")
    return (kind, ident) if isinstance(kind, str) and isinstance(ident, str) else None


def _named(event: EventDigest | None) -> tuple[set[tuple[str, date]], set[tuple[str, str]]] | None:
    """What an event names: (sample keys, sync entities); None when it names nothing readable (recompute all)."""
    if event is None:
        return None
    if event.type == SAMPLES_CHANGED:
        keys = _event_keys(event.payload)
        return None if keys is None else (keys, set())
    if event.type == SYNC_ENTITY_CHANGED:
        entity = _event_entity(event.payload)
        return None if entity is None else (set(), {entity})
    return None


def event_work(event: EventDigest, user_id: str) -> UserWork:
    """What one event asks of a handler for its user, before any checkpoint exists (the dispatcher's question
    "has this handler anything to do for it?", ``Projection.concerns``)."""
    named = _named(event)
    if named is None:
        return UserWork(user_id=user_id, checkpoints=(), keys=frozenset(), full=True)
    return UserWork(user_id=user_id, checkpoints=(), keys=frozenset(named[0]), full=False,
                    entities=frozenset(named[1]))


def group_work(checkpoints: Iterable[Job], events: Mapping[int, EventDigest]) -> list[UserWork]:
    """The checkpoints grouped per user (users sorted: one lock order everywhere), with their keys."""
    by_user: dict[str, list[Job]] = {}
    for checkpoint in checkpoints:
        by_user.setdefault(checkpoint.user_id, []).append(checkpoint)
    work = []
    for user in sorted(by_user):
        mine = by_user[user]
        keys: set[tuple[str, date]] = set()
        entities: set[tuple[str, str]] = set()
        full = False
        for checkpoint in mine:
            named = _named(events.get(checkpoint.event_id))
            if named is None:
                full = True
            else:
                keys |= named[0]
                entities |= named[1]
        work.append(UserWork(user_id=user, checkpoints=tuple(mine), keys=frozenset() if full else frozenset(keys),
                             full=full, entities=frozenset() if full else frozenset(entities)))
    return work


def split(work: Sequence[UserWork]) -> list[list[UserWork]]:
    """A failed batch is retried one user at a time: one user's bad data must not hold back the others."""
    return [[one] for one in work]


__all__ = ["SAMPLES_CHANGED", "SETTINGS_CHANGED", "SYNC_ENTITY_CHANGED", "EventDigest", "Job", "UserWork", "event_work",
           "group_work", "split"]
