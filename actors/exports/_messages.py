"""Messages of the exports domain's actors and what each one answers."""

from __future__ import annotations

from dataclasses import dataclass


# -- to the desk (reads and writes of job rows for the HTTP layer) ------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class CreateExport:
    """Reply: the new ``ExportJob`` (pending)."""

    user_id: str
    export_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadExport:
    """Reply: ``ExportView`` or None (no such export of this user)."""

    user_id: str
    export_id: str


# -- to the worker ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    """Claim and run what is due (new jobs, a crashed worker's expired leases)."""


__all__ = ["CreateExport", "ReadExport", "Tick"]
