"""Messages of the projection domain's actors and what each one answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from storage import Checkpoint, CheckpointIn

from ._work import EventDigest

if TYPE_CHECKING:  # _plan needs the worker's gate, and the worker these messages
    from ._plan import Skip


# -- to a handler's worker --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Work:
    """Work with its events. ``in_memory``: fresh events the dispatcher holds leased, with no checkpoint rows
    (the items are ``CheckpointIn``; the worker reports each back with ``Handled``); otherwise checkpoints
    created already leased to this process."""

    items: tuple[tuple[Checkpoint | CheckpointIn, EventDigest | None], ...]
    in_memory: bool = False


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Flush:
    """To the outbox flusher: write what the dispatcher owes the store, in one transaction."""

    to_store: tuple[CheckpointIn, ...]
    to_complete: tuple[int, ...]
    to_skip: tuple[Skip, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Flushed:
    """The flusher's answer to the dispatcher: ``advanced`` (handler -> user -> new mark) when the flush committed,
    None when it failed (everything in ``flush`` is owed still)."""

    flush: Flush
    advanced: dict[str, dict[str, int]] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Settle:
    """The dispatcher's own reminder: completions or retried skips are owed and no claim came to carry them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Renew:
    """The dispatcher's heartbeat: extend the leases of the events it holds."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Handled:
    """A worker's report on in-memory work (event ids): ``done`` committed; ``stored`` now carried by a checkpoint
    row (failed with its backoff, or handed back pending); ``dropped`` nothing recorded (the event is left to its
    lease and redelivered)."""

    handler: str
    done: tuple[int, ...] = ()
    stored: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()


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


__all__ = ["Dispatch", "Flush", "Flushed", "Handled", "ReadNights", "ReadProductImpact", "ReadRollups", "ReadSessionImpact", "Renew", "Settle",
           "Tick", "Wake", "Work"]
