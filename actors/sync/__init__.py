"""Multi-device sync (API.md "Sync"): a keyed actor per (user, device) applies a device's pushes in order —
optimistic versions, conflicts resolved by the entity type's configured policy (``_policy``, the one place),
exactly-once client operation ids — and serves its pulls from the user's gap-free change log. Every applied
change commits with a ``sync.entity.changed`` outbox event; ``SyncService`` is the facade, and also what the
server uses to change an entity itself (``apply_server_change``).

Its errors (``SyncError`` and below) are drawn in ``_errors``; storage's own pass through.
"""

from actors.projection import SYNC_ENTITY_CHANGED

from ._apply import Applied, PullPage, PushOutcome, Resolved, entity_json
from ._errors import (
    ConflictResolved,
    InvalidResolution,
    InvalidSyncCursor,
    SyncBusy,
    SyncError,
    UnknownConflict,
)
from ._merge import ClientChange, Outcome, State, Write, decide, merge_fields, merge_value
from ._policy import (
    DEFAULT_POLICIES,
    FIELD_RULES,
    SESSION_STATUS,
    STRATEGIES,
    EntityPolicy,
    FieldPolicy,
    Parent,
    Policies,
    validate_data,
)
from ._service import (
    SERVER_DEVICE,
    Operation,
    OperationIn,
    Publishes,
    PullResult,
    SyncConfig,
    SyncDomain,
    SyncService,
    decode_cursor,
    encode_cursor,
    parse_operation,
)

__all__ = [
    "DEFAULT_POLICIES",
    "FIELD_RULES",
    "SERVER_DEVICE",
    "SESSION_STATUS",
    "STRATEGIES",
    "SYNC_ENTITY_CHANGED",
    "Applied",
    "ClientChange",
    "ConflictResolved",
    "EntityPolicy",
    "FieldPolicy",
    "InvalidResolution",
    "InvalidSyncCursor",
    "Operation",
    "OperationIn",
    "Outcome",
    "Parent",
    "Policies",
    "Publishes",
    "PullPage",
    "PullResult",
    "PushOutcome",
    "Resolved",
    "State",
    "SyncBusy",
    "SyncConfig",
    "SyncDomain",
    "SyncError",
    "SyncService",
    "UnknownConflict",
    "Write",
    "decide",
    "decode_cursor",
    "encode_cursor",
    "entity_json",
    "merge_fields",
    "merge_value",
    "parse_operation",
    "validate_data",
]
