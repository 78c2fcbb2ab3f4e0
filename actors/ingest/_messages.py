"""Messages of the ingestion lanes and what they answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._samples import DeletionLike, PreparedUpload, SampleLike

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


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestOutcome:
    """``completed`` and ``replay`` carry the result body; the others map to typed HTTP errors."""

    kind: OutcomeKind
    result: dict[str, Any] | None = None
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
