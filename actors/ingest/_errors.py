"""The ingest domain's errors: what ``IngestService.accept_upload`` raises besides storage's own.

    IngestError
     ├── InvalidUpload          not a valid upload document; ``problems`` names each field and what is wrong
     ├── TooManyItems           more samples + deletions than one request may carry (``limit``)
     ├── PayloadHashMismatch    payloadHash does not match the body, or the requestId was used with another body
     ├── UploadDisabled         the user's settings disable health-data upload
     ├── RequestInProgress      a request with this requestId is still being processed
     ├── LaneFull               the lane's queue is full; ``retry_after_ms`` from its drain rate
     └── IngestUnavailable      the lanes cannot take requests now (stopping, restarting, a decode worker died)

Data a store refuses (``storage.InvalidData``) and an unavailable database (``storage.StoreUnavailable``)
pass through as storage's own errors. Transport maps all of them to HTTP in one place.

Uploads are decoded in worker processes too, so every error pickles with all its fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One thing wrong with an upload: where (a dotted field path; "" for the whole body) and what."""

    path: str
    problem: str
    kind: str  # a stable machine-readable tag: "missing", "string_pattern_mismatch", "json_invalid", ...


class IngestError(Exception):
    """Base of the ingest domain's errors."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in a decode worker, handled in the server: rebuilt with every field.
        return (_rebuild, (type(self), dict(self.__dict__)))


def _rebuild(cls: type[IngestError], state: dict[str, Any]) -> IngestError:
    error = cls.__new__(cls)
    Exception.__init__(error, state["message"])
    error.__dict__.update(state)
    return error


class InvalidUpload(IngestError):
    def __init__(self, message: str, problems: tuple[Problem, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class TooManyItems(IngestError):
    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} samples + deletions; at most {limit} per request")
        self.count = count
        self.limit = limit


class PayloadHashMismatch(IngestError):
    pass


class UploadDisabled(IngestError):
    def __init__(self) -> None:
        super().__init__("health data upload is disabled in your settings")


class RequestInProgress(IngestError):
    def __init__(self) -> None:
        super().__init__("a request with this requestId is still being processed")


class LaneFull(IngestError):
    def __init__(self, lane: str, retry_after_ms: int) -> None:
        super().__init__(f"the {lane} lane is full; retry later")
        self.lane = lane
        self.retry_after_ms = retry_after_ms


class IngestUnavailable(IngestError):
    pass


__all__ = [
    "IngestError",
    "IngestUnavailable",
    "InvalidUpload",
    "LaneFull",
    "PayloadHashMismatch",
    "Problem",
    "RequestInProgress",
    "TooManyItems",
    "UploadDisabled",
]
