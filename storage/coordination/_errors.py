"""Exception hierarchy of the coordination adapter (see the package docstring)."""

from __future__ import annotations

__all__ = ["CoordinationClosed", "CoordinationError", "CoordinationUnavailable"]


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


class CoordinationClosed(CoordinationError):
    """The coordination context has already exited; the object must not be used."""
