"""The sync domain's errors.

    SyncError
     ├── SyncBusy            too many pushes in flight in this process (429 SYNC_BUSY, jittered retryAfterMs)
     ├── InvalidSyncCursor   a malformed cursor, one ahead of the log, or one older than the device acknowledged
     ├── UnknownConflict     no such conflict for this user (also another user's: 404, never 403)
     ├── ConflictResolved    the conflict was already resolved (409)
     └── InvalidResolution   custom data that the entity type refuses (400, with each problem)

Storage's own errors (an unavailable database) pass through; transport maps all of them to HTTP once.
"""

from __future__ import annotations


class SyncError(Exception):
    """Base of the sync domain's errors."""


class SyncBusy(SyncError):
    def __init__(self, retry_after_ms: int, in_flight: int) -> None:
        super().__init__(f"too many sync pushes in flight ({in_flight}); retry in {retry_after_ms} ms")
        self.retry_after_ms = retry_after_ms


class InvalidSyncCursor(SyncError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid cursor: {reason}")
        self.reason = reason


class UnknownConflict(SyncError):
    def __init__(self, conflict_id: str) -> None:
        super().__init__(f"no conflict {conflict_id!r}")


class ConflictResolved(SyncError):
    def __init__(self, conflict_id: str) -> None:
        super().__init__(f"conflict {conflict_id!r} is already resolved")


class InvalidResolution(SyncError):
    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("the resolution's data is invalid")
        self.problems = problems


__all__ = ["ConflictResolved", "InvalidResolution", "InvalidSyncCursor", "SyncBusy", "SyncError", "UnknownConflict"]
