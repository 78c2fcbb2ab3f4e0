"""The exports domain's errors.

    ExportsError
     ├── ExportsUnavailable   no object storage configured (VIGIL_S3_*), or its breaker is open; ``retry_after``
     ├── UnknownExport        no export of that id for this user (another user's reads the same)
     └── BackupError          a backup or restore could not run
          └── DatabaseNotEmpty   restore refuses a database that already has tables

Storage's own errors pass through; transport maps all of them to HTTP once.
"""

from __future__ import annotations


class ExportsError(Exception):
    """Base of the exports domain's errors."""


class ExportsUnavailable(ExportsError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnknownExport(ExportsError):
    def __init__(self, export_id: str) -> None:
        super().__init__(f"no export {export_id!r}")
        self.export_id = export_id


class BackupError(ExportsError):
    """A backup or restore failed; the message says why."""


class DatabaseNotEmpty(BackupError):
    def __init__(self, tables: list[str]) -> None:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        super().__init__(f"refusing to restore into a database that is not empty ({len(tables)} tables: {shown}); "
                         "restore into a new, empty database")
        self.tables = tables


__all__ = ["BackupError", "DatabaseNotEmpty", "ExportsError", "ExportsUnavailable", "UnknownExport"]
