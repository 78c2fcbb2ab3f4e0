"""The maintenance reapers' messages: frozen, slotted, keyword-only."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class ReapNow:
    """Ask: run one pass now (subject to the lease); the reply is how many rows it reaped."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReapedSoFar:
    """Ask: how many rows this incarnation reaped, ticks and ReapNow together. Answered in mailbox order, so
    the reply also says that every pass queued before it has finished."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    """The periodic pass; re-armed after each one, so a slow pass never lets ticks pile up."""


__all__ = ["ReapNow", "ReapedSoFar", "Tick"]
