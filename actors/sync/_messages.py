"""Messages of the device actor and what each one answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ._merge import ClientChange


@dataclass(frozen=True, slots=True, kw_only=True)
class PushOp:
    """One operation of a push: validated, or refused up front (``problems``: rejected, nothing read)."""

    op_id: str
    entity_type: str
    entity_id: str
    change: ClientChange
    problems: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Push:
    """Reply: ``PushOutcome``."""

    ops: tuple[PushOp, ...]
    correlation_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerWrite:
    """A change the server makes (a conflict's resolution, the stale-session reaper): applied on top of the
    current version whatever it is. Reply: ``PushOutcome``."""

    entity_type: str
    entity_id: str
    data: dict[str, Any]
    deleted: bool = False
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Pull:
    """Reply: ``PullPage``."""

    after: int | None  # None: from the start, without acknowledging
    limit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ListConflicts:
    """Reply: ``list[storage.Conflict]``."""

    limit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolve:
    """Reply: ``Resolved``."""

    conflict_id: str
    resolution: Literal["server", "client", "custom"]
    data: dict[str, Any] | None
    correlation_id: str | None


__all__ = ["ListConflicts", "Pull", "Push", "PushOp", "Resolve", "ServerWrite"]
