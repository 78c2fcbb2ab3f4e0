"""The sync domain's wiring and its facade.

    sync (one_for_one)
     ├── committer-0..n-1                   Committer: group commit of the devices' units of work (a user's
     │                                      units always go to the same one)
     └── devices (keyed by (user, device))   DeviceSync: a device's pushes and pulls, one at a time

``SyncDomain`` builds the subtree before the system starts; ``service(system, publisher=...)`` gives the
``SyncService`` the HTTP layer (and the stale-session reaper) calls. The facade admits a bounded number of
pushes at once (beyond it ``SyncBusy`` with a jittered retry delay) and, after each commit, publishes
``sync.changed`` for every applied change to the user's other devices (``publisher``: the realtime service).
"""

from __future__ import annotations

import base64
import binascii
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from kernel import ActorSystem, ChildSpec, KeyedRef, Supervisor
from storage import Change, Conflict, Store, SyncEntity

from ._apply import Applied, PullPage, PushOutcome, Resolved
from ._committer import Committer
from ._device import DeviceSync
from ._errors import InvalidResolution, InvalidSyncCursor, SyncBusy, SyncError
from ._merge import ClientChange, OpKind
from ._messages import ListConflicts, Pull, Push, PushOp, Resolve, ServerWrite
from ._policy import DEFAULT_POLICIES, Policies, validate_data

SERVER_DEVICE = ""  # the device key of changes the server makes (no advisory device lock, deviceId null)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncConfig:
    max_in_flight: int = 256  # pushes admitted at once per process; beyond: SYNC_BUSY
    busy_retry_ms: int = 500  # SYNC_BUSY's retryAfterMs is drawn from [busy_retry_ms, 3 * busy_retry_ms)
    device_idle_timeout: float = 60.0  # a device actor is passivated after this long without messages
    device_max_live: int = 100_000
    commit_batch: int = 64  # units of work (pushes, pulls, ...) committed in one transaction at most
    committers: int | None = None  # group commits running at once; None: 1 on SQLite (one writer), 4 on PostgreSQL
    ask_timeout: float = 30.0
    max_pull: int = 1000
    seed: int | None = None  # the jitter's random source (tests)
    policies: Policies = field(default_factory=lambda: DEFAULT_POLICIES)

    def __post_init__(self) -> None:
        if min(self.max_in_flight, self.busy_retry_ms, self.commit_batch, self.committers or 1) < 1:
            raise ValueError("SyncConfig: max_in_flight, busy_retry_ms, commit_batch and committers must be >= 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One operation of a push, as the client sent it (API.md "Sync")."""

    op_id: str
    entity_type: str
    entity_id: str
    op: OpKind
    base_version: int
    data: Any = None
    client_timestamp: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PullResult:
    changes: tuple[Change, ...]
    next_cursor: str
    has_more: bool


class Publishes(Protocol):
    def sync_changed(self, *, event_id: str, user_id: str, entity_type: str, entity_id: str, version: int,
                     payload: dict[str, Any], origin_device: str | None, correlation_id: str | None) -> None: ...


_NO_NUL = "^[^\x00]+$"  # storage refuses NUL in ids (and PostgreSQL in JSON text)


class OperationIn(BaseModel):
    """The wire form of one push operation (API.md); each one is checked alone, so one bad operation is
    ``rejected`` and the rest of the push still applies."""

    model_config = ConfigDict(extra="ignore", strict=True)
    clientSyncOperationId: str = Field(min_length=1, max_length=128, pattern=_NO_NUL)
    entityType: str = Field(min_length=1, max_length=64, pattern=_NO_NUL)
    entityId: str = Field(min_length=1, max_length=128, pattern=_NO_NUL)
    op: Literal["create", "update", "delete"]
    baseVersion: int = Field(ge=0)
    data: Any = None
    clientTimestamp: AwareDatetime | None = Field(default=None, strict=False)


def parse_operation(raw: Any) -> Operation | dict[str, Any]:
    """An ``Operation``, or the ``rejected`` result of one that cannot even be read (it is not stored)."""
    try:
        o = OperationIn.model_validate(raw)
    except ValidationError as exc:
        op_id = raw.get("clientSyncOperationId") if isinstance(raw, dict) else None
        problems = [{"path": ".".join(str(p) for p in err["loc"]), "problem": err["msg"]}
                    for err in exc.errors(include_url=False, include_input=False, include_context=False)]
        return {"clientSyncOperationId": op_id if isinstance(op_id, str) else None, "status": "rejected",
                "entity": None, "conflict": None,
                "error": {"code": "VALIDATION_ERROR", "message": "the operation is invalid", "details": problems}}
    return Operation(op_id=o.clientSyncOperationId, entity_type=o.entityType, entity_id=o.entityId, op=o.op,
                     base_version=o.baseVersion, data=o.data, client_timestamp=o.clientTimestamp)


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"vigil.sync:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidSyncCursor("malformed") from None
    prefix, _, seq = text.partition(":")
    if prefix != "vigil.sync" or not seq.isdigit() or len(seq) > 18:
        raise InvalidSyncCursor("malformed")
    return int(seq)


class SyncDomain:
    name = "sync"

    def __init__(self, store: Store, config: SyncConfig | None = None) -> None:
        self.store = store
        self.config = config or SyncConfig()

    def subtree(self, *, under: str = "root") -> Supervisor:
        cfg = self.config
        count = cfg.committers or (1 if self.store.backend == "sqlite" else 4)
        names = tuple(f"committer-{i}" for i in range(count))
        committers: list[ChildSpec | Supervisor] = [
            ChildSpec(name, Committer, kwargs={"store": self.store, "max_batch": cfg.commit_batch},
                      mailbox=max(cfg.max_in_flight, cfg.commit_batch) * 2) for name in names]
        return Supervisor(self.name, strategy="one_for_one", max_restarts=20, within=60.0, base_delay=0.1,
                          max_delay=5.0, children=[*committers, ChildSpec("devices", DeviceSync, kwargs={
                              "store": self.store, "policies": cfg.policies,
                              "committers": tuple(f"{under}/{self.name}/{name}" for name in names),
                              "timeout": cfg.ask_timeout}, keyed=True, idle_timeout=cfg.device_idle_timeout,
                              max_live=cfg.device_max_live, mailbox=64)])

    def service(self, system: ActorSystem, *, under: str = "root", publisher: Publishes | None = None) -> SyncService:
        devices = system.ref(f"{under}/{self.name}/devices")
        if not isinstance(devices, KeyedRef):
            raise TypeError(f"{devices.path!r} is not the keyed devices child this domain builds")
        return SyncService(devices=devices, config=self.config, publisher=publisher)


class SyncService:
    """Push, pull and conflicts for a user's device; changes the server makes."""

    def __init__(self, *, devices: KeyedRef, config: SyncConfig, publisher: Publishes | None) -> None:
        self._devices = devices
        self._config = config
        self._policies = config.policies
        self._publisher = publisher
        self._rng = random.Random(config.seed)
        self.in_flight = 0
        self.busy = 0  # pushes refused with SYNC_BUSY since start

    async def _ask(self, user_id: str, device_id: str, msg: Any) -> Any:
        answer = await self._devices.key((user_id, device_id)).ask(msg, timeout=self._config.ask_timeout)
        if isinstance(answer, SyncError):
            raise answer
        return answer

    def _prepare(self, o: Operation) -> PushOp:
        policy = self._policies.get(o.entity_type)
        data: dict[str, Any] | None = None
        problems: list[dict[str, str]] = []
        if policy is not None and o.op != "delete":
            data, problems = validate_data(policy, o.data)
            if data is not None and "\\u0000" in json.dumps(data):
                data, problems = None, [{"path": "data", "problem": "contains a NUL character"}]
        change = ClientChange(op=o.op, base_version=o.base_version, data=data, client_ts=o.client_timestamp)
        return PushOp(op_id=o.op_id, entity_type=o.entity_type, entity_id=o.entity_id, change=change,
                      problems=tuple(problems))

    async def push(self, user_id: str, device_id: str, operations: Sequence[Operation | Any], *,
                   correlation_id: str | None = None) -> tuple[dict[str, Any], ...]:
        """Apply a device's operations in order; one result per operation (API.md push result). Each item is an
        ``Operation`` or its wire form (a JSON object; unreadable ones come back ``rejected``). Raises
        SyncBusy when ``max_in_flight`` pushes are already under way in this process."""
        if self.in_flight >= self._config.max_in_flight:
            self.busy += 1
            base = self._config.busy_retry_ms
            raise SyncBusy(base + int(self._rng.random() * 2 * base), self.in_flight)
        parsed = [o if isinstance(o, Operation) else parse_operation(o) for o in operations]
        ops = tuple(self._prepare(o) for o in parsed if isinstance(o, Operation))
        self.in_flight += 1
        try:
            outcome: PushOutcome = await self._ask(user_id, device_id, Push(ops=ops, correlation_id=correlation_id))
        finally:
            self.in_flight -= 1
        self._publish(user_id, outcome.applied, correlation_id)
        applied = iter(outcome.results)
        return tuple(next(applied) if isinstance(o, Operation) else o for o in parsed)

    async def pull(self, user_id: str, device_id: str, cursor: str | None, limit: int = 500) -> PullResult:
        """The changes after ``cursor`` (None: from the start), parents first; acknowledges ``cursor``."""
        after = None if cursor is None else decode_cursor(cursor)
        page: PullPage = await self._ask(user_id, device_id, Pull(after=after, limit=min(limit,
                                                                                         self._config.max_pull)))
        return PullResult(changes=page.changes, next_cursor=encode_cursor(page.last_seq), has_more=page.has_more)

    async def conflicts(self, user_id: str, device_id: str | None = None, *, limit: int = 100) -> list[Conflict]:
        result: list[Conflict] = await self._ask(user_id, device_id or SERVER_DEVICE, ListConflicts(limit=limit))
        return result

    async def resolve(self, user_id: str, device_id: str | None, conflict_id: str,
                      resolution: Literal["server", "client", "custom"], data: Any = None, *,
                      correlation_id: str | None = None) -> Resolved:
        """Close an open conflict: keep the server's state, take the client's, or store ``data`` (custom,
        validated as its entity type)."""
        if resolution == "custom":
            if not isinstance(data, dict):
                raise InvalidResolution([{"path": "data", "problem": "custom resolution needs data (an object)"}])
        done: Resolved = await self._ask(user_id, device_id or SERVER_DEVICE, Resolve(
            conflict_id=conflict_id, resolution=resolution, data=data, correlation_id=correlation_id))
        self._publish(user_id, done.applied, correlation_id)
        return done

    async def apply_server_change(self, user_id: str, entity_type: str, entity_id: str, data: dict[str, Any], *,
                                  deleted: bool = False, correlation_id: str | None = None) -> SyncEntity:
        """A change the server makes (e.g. the stale-session reaper ending a session): the next version of the
        entity, whatever its current one, with its change-log entry and ``sync.entity.changed`` event
        (``deviceId`` null) in one transaction; every device of the user hears ``sync.changed``."""
        applied: tuple[Applied, ...] = await self._ask(user_id, SERVER_DEVICE, ServerWrite(
            entity_type=entity_type, entity_id=entity_id, data=dict(data), deleted=deleted,
            correlation_id=correlation_id))
        self._publish(user_id, applied, correlation_id)
        return applied[0].entity

    def _publish(self, user_id: str, applied: Sequence[Applied], correlation_id: str | None) -> None:
        if self._publisher is None:
            return
        for a in applied:
            e = a.entity
            self._publisher.sync_changed(
                event_id=str(a.event_id), user_id=user_id, entity_type=e.entity_type, entity_id=e.entity_id,
                version=e.version, payload={"op": a.op, "deleted": e.deleted, "data": e.data, "seq": a.seq},
                origin_device=a.device_id, correlation_id=correlation_id)


__all__ = ["SERVER_DEVICE", "Operation", "OperationIn", "parse_operation", "PullResult", "Publishes", "SyncConfig", "SyncDomain", "SyncService",
           "decode_cursor", "encode_cursor"]
