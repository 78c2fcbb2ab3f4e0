"""Values that cross the storage boundary. Timestamps are timezone-aware (UTC on the way out).

Past ~600 lines on purpose: plain frozen value types only, one short section per aggregate, and callers
import them from one place (``storage``); splitting per aggregate would add import edges, not clarity.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, ClassVar, Generic, Literal, NamedTuple, TypeVar

from ._config import Limits
from ._errors import InvalidData
from ._time import from_micros, to_micros

__all__ = [
    "AiReport",
    "AiUsage",
    "AiUsageTotal",
    "Change",
    "ChangeIn",
    "Checkpoint",
    "CHECKPOINT_STATUSES",
    "CheckpointIn",
    "CheckpointKey",
    "CheckpointStatus",
    "Conflict",
    "DailyRollup",
    "DeadLetter",
    "DeadLetterItem",
    "Discarded",
    "DeletedSamples",
    "DeviceState",
    "Enqueued",
    "EXPORT_STATUSES",
    "ExportJob",
    "ExportStatus",
    "HandlerLag",
    "HealthSample",
    "IngestBegin",
    "IngestRequest",
    "IngestStatus",
    "Json",
    "OUTBOX_STATUSES",
    "OutboxEvent",
    "OutboxStats",
    "OutboxStatus",
    "Page",
    "PreparedSamples",
    "ProductImpact",
    "ProjectionState",
    "SampleCursor",
    "SampleIn",
    "SampleKey",
    "SampleRecord",
    "SessionImpact",
    "SleepNight",
    "SyncEntity",
    "UpsertCounts",
    "UserSettings",
    "UserWatermarks",
]

T = TypeVar("T")

# Any JSON-serializable value (dict, list, str, int, finite float, bool, None).
Json = Any

IngestStatus = Literal["processing", "completed", "failed"]
# The read side's one vocabulary. Outbox: pending → processing → completed | dead. Checkpoints add
# 'failed': waiting for its retry after backoff (next_attempt_at in the future).
OutboxStatus = Literal["pending", "processing", "completed", "dead"]
CheckpointStatus = Literal["pending", "processing", "completed", "failed", "dead"]
OUTBOX_STATUSES: tuple[OutboxStatus, ...] = ("pending", "processing", "completed", "dead")
CHECKPOINT_STATUSES: tuple[CheckpointStatus, ...] = ("pending", "processing", "completed", "failed", "dead")
ConflictStatus = Literal["open", "resolved"]


# --- users -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserSettings:
    """Privacy and locale settings; the defaults are those of a user who never saved any."""

    allow_health_data_upload: bool = True
    blocked_metrics: tuple[str, ...] = ()
    timezone: str = "UTC"
    # The user's source ids, most trusted first (at most 64, no repeats); unnamed sources follow.
    source_priority: tuple[str, ...] = ()


# --- health samples ----------------------------------------------------------------------


class SampleIn(NamedTuple):
    """One sample to upsert; identity is (user, source_id, source_record_id, start_at).

    ``value`` in the metric's canonical ``unit`` (conversion happens before storage).
    """

    source_id: str
    source_record_id: str
    metric: str
    value: float
    unit: str
    start_at: datetime
    end_at: datetime
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True, eq=False)
class PreparedSamples:
    """Samples already checked and converted for one store (``Store.prepare_samples``), so the
    unit of work that writes them does no per-row work on its own critical path.

    Made by the store and only to be given back to it: ``upsert_many`` refuses one made by a
    store of another backend or with other limits.
    """

    rows: tuple[tuple[Any, ...], ...]
    backend: str
    limits: Limits

    def __len__(self) -> int:
        return len(self.rows)


class SampleKey(NamedTuple):
    """The natural key of a sample within one user (what a deletion names)."""

    source_id: str
    source_record_id: str
    start_at: datetime


@dataclass(frozen=True, slots=True)
class HealthSample:
    id: int
    user_id: str
    source_id: str
    source_record_id: str
    metric: str
    value: float
    unit: str
    start_at: datetime
    end_at: datetime
    metadata: dict[str, Any]
    revision: int  # 1 on insert, +1 on every update or deletion
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class SampleRecord(NamedTuple):
    """A live sample as plain values (``Samples.dump``): times in µs since the epoch, metadata as JSON text."""

    id: int
    source_id: str
    source_record_id: str
    metric: str
    value: float
    unit: str
    start_us: int
    end_us: int
    metadata_json: str
    revision: int
    updated_us: int


@dataclass(frozen=True, slots=True)
class UpsertCounts:
    """What an upsert wrote. ``refused``: the indices (into the rows as given, ascending) of rows
    whose identity is deleted — a tombstone or a deleted sample — and that therefore stayed deleted."""

    inserted: int
    updated: int
    refused: tuple[int, ...] = ()

    @property
    def total(self) -> int:
        return self.inserted + self.updated


@dataclass(frozen=True, slots=True)
class DeletedSamples:
    """Samples newly marked deleted, with what projections need to know what to recompute.
    ``tombstones``: keys with no row yet, now held as tombstones (no sample changed, nothing to
    recompute, so they are in neither ``deleted`` nor ``touched``)."""

    deleted: int
    touched: tuple[tuple[str, datetime], ...] = ()  # (metric, start_at) of each deleted sample
    tombstones: int = 0


@dataclass(frozen=True, slots=True)
class SampleCursor:
    """Keyset position after a sample: (start_at, id). ``encode`` gives ``"<µs since the epoch>.<id>"``.

    Every string of that shape (``PATTERN``, published as the query parameter's pattern) is a valid
    position — one past every representable instant reads as the end, one before them as the start —
    so a cursor is either malformed (refused by the pattern) or names a place to go on from.
    """

    # 18 digits of µs cover years 1..9999 either side of the epoch; ids are bigint row ids.
    PATTERN: ClassVar[str] = r"^-?[0-9]{1,18}\.[0-9]{1,19}$"

    start_at: datetime
    id: int

    def encode(self) -> str:
        return f"{to_micros(self.start_at, 'cursor')}.{self.id}"

    @classmethod
    def decode(cls, token: str) -> SampleCursor:
        """Parse a token of ``PATTERN``; anything else raises InvalidData."""
        if not isinstance(token, str) or not _CURSOR.fullmatch(token):
            raise InvalidData("cursor", "not a valid cursor")
        micros, ident = token.split(".")
        return cls(from_micros(min(max(int(micros), _FIRST_MICROS), _LAST_MICROS)), min(int(ident), _LAST_ID))


_CURSOR = re.compile(SampleCursor.PATTERN.strip("^$"))
_FIRST_MICROS = to_micros(datetime.min.replace(tzinfo=UTC))
_LAST_MICROS = to_micros(datetime.max.replace(tzinfo=UTC))
_LAST_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: SampleCursor | None


# --- ingest requests ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngestRequest:
    user_id: str
    request_id: str
    payload_hash: str
    lane: str | None
    status: IngestStatus
    result: Json | None
    error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class IngestBegin:
    """Outcome of ``ingest.begin``: ``acquired`` means this caller must process the request.

    Otherwise ``request`` is the existing row: the caller compares its hash and status
    (completed → replay the stored result, processing → in progress, other hash → mismatch).
    """

    request: IngestRequest
    acquired: bool


# --- outbox and projections --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: int
    user_id: str
    type: str
    payload: Json
    event_hash: str
    dedupe_key: str | None
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Enqueued:
    id: int
    # False: an event with the same dedupe key, or the same content still unfinished, already
    # existed (``id`` is its id).
    created: bool


@dataclass(frozen=True, slots=True)
class PoolStats:
    """The store's connections now: ``in_use`` by a unit of work, ``open`` (idle or busy) and ``max_size``,
    the most it will open (PostgreSQL: the main pool; SQLite: the writer and the reader connection)."""

    in_use: int
    open: int
    max_size: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Events per status, and how long the oldest pending one has waited (None: none pending)."""

    pending: int
    processing: int
    completed: int
    dead: int
    oldest_pending_age_seconds: float | None



class Discarded(NamedTuple):
    """What discarding a dead letter removed: its dead checkpoints, and whether the dead outbox event went."""

    checkpoints: list[Checkpoint]
    event: bool


class CheckpointKey(NamedTuple):
    event_id: int
    handler: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointIn:
    """One checkpoint to create: ``handler``'s work on outbox event ``event_id``.

    ``depends_on`` names the handler that must complete the same event first; (``wm_from``,
    ``wm_to``] is the watermark range the event covers (both None when it covers none).
    """

    event_id: int
    handler: str
    user_id: str
    event_type: str
    depends_on: str | None = None
    wm_from: int | None = None
    wm_to: int | None = None
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    event_id: int
    handler: str
    user_id: str
    event_type: str
    depends_on: str | None
    wm_from: int | None
    wm_to: int | None
    correlation_id: str | None
    status: CheckpointStatus
    attempts: int
    next_attempt_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def key(self) -> CheckpointKey:
        return CheckpointKey(self.event_id, self.handler)


@dataclass(frozen=True, slots=True)
class DeadLetterItem:
    """A dead checkpoint, or a dead outbox event (``handler`` None)."""

    event_id: int
    type: str
    user_id: str
    handler: str | None
    attempts: int
    last_error: str | None
    created_at: datetime
    correlation_id: str | None


@dataclass(frozen=True, slots=True)
class HandlerLag:
    """A handler's unfinished checkpoints; the age is that of the oldest not completed nor dead."""

    handler: str
    pending: int
    processing: int
    failed: int
    dead: int
    oldest_age_seconds: float | None


@dataclass(frozen=True, slots=True)
class ProjectionState:
    """What a read needs to judge its freshness: any dead checkpoint, any retry waiting for its
    backoff, and how many are not completed."""

    has_dead: bool
    retry_waiting: bool
    unfinished: int


@dataclass(frozen=True, slots=True)
class DailyRollup:
    user_id: str
    metric: str
    local_date: date  # in the user's timezone
    unit: str
    count: int
    sum: float
    min: float
    max: float

    @property
    def avg(self) -> float | None:
        return self.sum / self.count if self.count else None


@dataclass(frozen=True, slots=True)
class SleepNight:
    user_id: str
    night_date: date
    start_at: datetime
    end_at: datetime
    asleep_minutes: float
    awake_minutes: float
    stages: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SessionImpact:
    """Heart rate around one consumption session (API.md "Sync", session read models). ``stats`` maps
    ``before``/``during``/``after`` to ``{"avg", "min", "max", "count"}``; [``window_from``, ``window_to``] is
    the span whose heart-rate samples it reads (a sample change there recomputes it)."""

    user_id: str
    session_id: str
    product_id: str | None
    status: str
    start_at: datetime
    end_at: datetime | None
    window_from: datetime
    window_to: datetime
    stats: Mapping[str, Any]
    delta_during: float | None
    delta_after: float | None


@dataclass(frozen=True, slots=True)
class ProductImpact:
    """Session impacts of one product, averaged over its ended sessions."""

    user_id: str
    product_id: str
    sessions: int
    stats: Mapping[str, Any]
    delta_during: float | None
    delta_after: float | None


@dataclass(frozen=True, slots=True)
class UserWatermarks:
    """``watermark`` counts committed sample changes; ``projected`` maps handler → caught-up mark."""

    user_id: str
    watermark: int
    projected: Mapping[str, int]


# --- sync --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncEntity:
    """A synced entity; ``updated_at`` is set by the store (ignored on input)."""

    user_id: str
    entity_type: str
    entity_id: str
    version: int
    data: Json
    deleted: bool = False
    updated_at: datetime | None = None
    client_ts: datetime | None = None  # the client's clock of the last write (LAST_WRITE_WINS)


@dataclass(frozen=True, slots=True)
class ChangeIn:
    """One entry to append to a user's change log."""

    entity_type: str
    entity_id: str
    op: Literal["create", "update", "delete"]
    version: int
    data: Json
    deleted: bool = False
    device_id: str | None = None  # the device whose push caused the change


@dataclass(frozen=True, slots=True)
class Change:
    seq: int  # strictly increasing per user, in commit order
    user_id: str
    entity_type: str
    entity_id: str
    op: str
    version: int
    data: Json
    deleted: bool
    device_id: str | None
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class DeviceState:
    user_id: str
    device_id: str
    acked_seq: int  # the highest change-log cursor this device acknowledged
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Conflict:
    id: str
    user_id: str
    device_id: str | None
    entity_type: str
    entity_id: str
    server_version: int
    base_version: int | None
    server_data: Json
    client_data: Json
    status: ConflictStatus
    resolution: str | None
    resolved_data: Json | None
    created_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    source: str
    user_id: str | None
    key: str | None
    payload: Json
    error: str
    created_at: datetime


# --- export jobs -------------------------------------------------------------------------

ExportStatus = Literal["pending", "running", "completed", "failed"]
EXPORT_STATUSES: tuple[ExportStatus, ...] = ("pending", "running", "completed", "failed")


@dataclass(frozen=True, slots=True)
class ExportJob:
    """A user's export: leased to one worker while ``running``; ``object_key`` once completed,
    ``error`` (the reason) once failed."""

    id: str
    user_id: str
    status: ExportStatus
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    object_key: str | None
    rows: int | None
    bytes: int | None
    error: str | None
    created_at: datetime
    updated_at: datetime


# --- AI reports ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AiReport:
    """A generated weekly report, cached per (user, ISO week); valid while the data mark (``watermark``: the
    reporter's, see actors/ai/_reporter.py) and the model are the ones it was made from."""

    user_id: str
    iso_week: str  # "2026-W48"
    watermark: int
    model: str
    report: str
    generated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class AiUsage:
    """One call to the AI provider: the tokens it cost and how it ended (``at`` is set by the store)."""

    user_id: str
    model: str
    outcome: str  # ok, rate_limited, server_error, client_error, timeout, connection_error
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class AiUsageTotal:
    model: str
    outcome: str
    calls: int
    input_tokens: int
    output_tokens: int
