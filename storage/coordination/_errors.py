"""Exception hierarchy of the coordination adapter (see the package docstring)."""

from __future__ import annotations

__all__ = ["CoordinationCircuitOpen", "CoordinationClosed", "CoordinationError", "CoordinationUnavailable"]


class CoordinationError(Exception):
    """Base class: the coordination backend failed to do what was asked.

    Raised as-is for unexpected backend replies (a script error, a wrong-type key):
    those are bugs or misconfiguration, not outages, so retrying will not help.
    """


class CoordinationUnavailable(CoordinationError):
    """The backend could not be reached or did not answer in time.

    Transient by nature: callers may retry, degrade (e.g. fail open on a rate limit)
    or report unhealthy. Never raised for an invalid argument (that is ValueError).
    """


class CoordinationCircuitOpen(CoordinationUnavailable):
    """The Redis breaker is open: refused at once, without touching the network; ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CoordinationClosed(CoordinationError):
    """The coordination context has already exited; the object must not be used."""
