"""Messages of the ingestion lanes and what they answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._samples import DeletionLike, PreparedUpload, Rejection, SampleLike

Lane = Literal["hot", "cold", "change"]
LANES: tuple[Lane, ...] = ("hot", "cold", "change")

OutcomeKind = Literal["completed", "replay", "in_progress", "hash_mismatch", "upload_disabled"]


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestBatch:
    """One upload request, already authenticated and hash-checked, for its lane to commit."""

    user_id: str
    request_id: str
    payload_hash: str
    lane: Lane
    samples: Sequence[SampleLike] = ()
    deletions: Sequence[DeletionLike] = ()
    # ``samples`` judged and store-checked on the way in (``preparing_upload``); the lane
    # prepares them itself when this is None or was made without the user's blocked metrics.
    prepared: PreparedUpload | None = None
    # The HTTP request's X-Request-ID: the outbox event and what it causes later carry it.
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadResult:
    """What an accepted upload did. ``replayed``: the stored result of an earlier request with the
    same requestId and payload, returned again (nothing was written this time)."""

    request_id: str
    inserted: int
    updated: int
    deleted: int
    rejected: tuple[Rejection, ...] = ()
    replayed: bool = False

    def to_record(self) -> dict[str, Any]:
        """The form stored with the request (for replays); rows written before this type existed
        have the same shape."""
        return {"requestId": self.request_id, "status": "completed", "inserted": self.inserted,
                "updated": self.updated, "deleted": self.deleted,
                "rejected": [{"index": r.index, "code": r.code, "message": r.message} for r in self.rejected]}

    @classmethod
    def from_record(cls, record: Any, *, replayed: bool) -> UploadResult:
        if not isinstance(record, dict):
            raise TypeError(f"a stored upload result is a JSON object, got {type(record).__name__}")
        return cls(request_id=record["requestId"], inserted=record["inserted"], updated=record["updated"],
                   deleted=record["deleted"],
                   rejected=tuple(Rejection(index=r["index"], code=r["code"], message=r["message"])
                                  for r in record["rejected"]),
                   replayed=replayed)


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestOutcome:
    """``completed`` and ``replay`` carry the result; the others become the domain's errors."""

    kind: OutcomeKind
    result: UploadResult | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class LaneStatus:
    """Ask message: reply is a ``LaneReport``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LaneReport:
    lane: Lane
    requests: int
    samples: int
    transactions: int
    drain_per_second: float
    extra: dict[str, Any] = field(default_factory=dict)
