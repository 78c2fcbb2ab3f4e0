"""The maintenance domain's errors."""

from __future__ import annotations


class MaintenanceError(Exception):
    """Base of the maintenance domain's errors."""


class UnknownReaper(MaintenanceError, LookupError):
    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(f"no reaper named {name!r} runs here (known: {', '.join(known) or 'none'})")
        self.name = name


__all__ = ["MaintenanceError", "UnknownReaper"]
