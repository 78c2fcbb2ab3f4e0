"""The projection domain's errors.

    ProjectionError
     ├── NoRollup            the metric has no daily rollup (sleep_stage: read nights) or is not a known metric
     ├── UnknownDeadLetter   no dead letter with that id (replay, discard)
     └── NoSession           no consumption session with that id for this user (session impact)

Storage's own errors (an unavailable database) pass through; transport maps all of them to HTTP once.
"""

from __future__ import annotations


class ProjectionError(Exception):
    """Base of the projection domain's errors."""


class NoRollup(ProjectionError):
    def __init__(self, metric: str, reason: str) -> None:
        super().__init__(f"no daily rollup for {metric!r}: {reason}")
        self.metric = metric


class UnknownDeadLetter(ProjectionError):
    def __init__(self, event_id: int) -> None:
        super().__init__(f"no dead letter with id {event_id}")
        self.event_id = event_id


class NoSession(ProjectionError):
    def __init__(self, session_id: str) -> None:
        super().__init__(f"no consumption session {session_id!r}")
        self.session_id = session_id


__all__ = ["NoRollup", "NoSession", "ProjectionError", "UnknownDeadLetter"]
