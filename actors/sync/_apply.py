"""The sync domain's units of work, each one transaction script (one crossing): a device's push, a change the
server makes, a conflict's resolution, a pull. The decisions are ``_merge``'s; this module only reads the state
they need and writes their outcome.

The scripts run inside the committer's group commit (``_committer``), which has taken their locks first: the
transaction-scoped advisory lock on (user, device), so a device's pushes serialize across processes, and the
user's change-log counter (``changes.lock_user``), so entity versions and change seqs follow commit order and a
pull never skips a change. Every applied change appends to the change log and enqueues one
``sync.entity.changed`` outbox event, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from actors.projection import SYNC_ENTITY_CHANGED
from storage import Change, ChangeIn, Conflict, Op, SyncEntity, Transaction

from ._errors import InvalidResolution
from ._merge import OpKind, Outcome, State, decide
from ._messages import PushOp, ServerWrite
from ._policy import Policies, validate_data

Script = Generator[Op[Any], Any, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    """A change that committed: the entity after it, its change-log seq and its outbox event."""

    entity: SyncEntity
    op: OpKind
    seq: int
    event_id: int
    device_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PushOutcome:
    results: tuple[dict[str, Any], ...]  # one per operation, in order (API.md push result)
    applied: tuple[Applied, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    conflict: Conflict
    entity: SyncEntity | None
    applied: tuple[Applied, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PullPage:
    changes: tuple[Change, ...]  # parents before children
    last_seq: int  # the position after this page
    has_more: bool


def entity_json(e: SyncEntity) -> dict[str, Any]:
    return {"entityType": e.entity_type, "entityId": e.entity_id, "version": e.version, "data": e.data,
            "deleted": e.deleted}


def _state(e: SyncEntity | None) -> State | None:
    if e is None:
        return None
    return State(version=e.version, data=e.data if isinstance(e.data, dict) else {}, deleted=e.deleted,
                 client_ts=e.client_ts)


def _commit_writes(tx: Transaction, user_id: str, writes: Sequence[tuple[SyncEntity, OpKind, str | None]],
                   correlation_id: str | None) -> Generator[Op[Any], Any, tuple[Applied, ...]]:
    """Store the entities' new states, append their changes, enqueue their events."""
    if not writes:
        return ()
    final = {(e.entity_type, e.entity_id): e for e, _, _ in writes}
    yield tx.entities.put_many(list(final.values()))
    seqs = yield tx.changes.append_many(user_id, [
        ChangeIn(e.entity_type, e.entity_id, op, e.version, e.data, e.deleted, device_id=device)
        for e, op, device in writes])
    applied = []
    for (e, op, device), seq in zip(writes, seqs, strict=True):
        event = yield tx.outbox.enqueue(user_id, SYNC_ENTITY_CHANGED, {
            "entityType": e.entity_type, "entityId": e.entity_id, "version": e.version, "op": op,
            "deleted": e.deleted, "deviceId": device, "data": e.data}, correlation_id=correlation_id)
        applied.append(Applied(entity=e, op=op, seq=seq, event_id=event.id, device_id=device))
    return tuple(applied)


def _result(op: PushOp, outcome: Outcome, entity: SyncEntity | None, *, strategy: str,
            conflict_id: str | None, server_version: int | None) -> dict[str, Any]:
    conflict = None
    if outcome.resolution is not None:
        conflict = {"id": conflict_id, "strategy": strategy, "resolution": outcome.resolution,
                    "baseVersion": op.change.base_version, "serverVersion": server_version}
    error = None
    if outcome.error is not None:
        code, message = outcome.error
        error = {"code": code, "message": message, "details": list(op.problems) or None}
    return {"clientSyncOperationId": op.op_id, "status": outcome.status,
            "entity": None if entity is None else entity_json(entity), "conflict": conflict, "error": error}


def push(tx: Transaction, user_id: str, device_id: str, ops: Sequence[PushOp], correlation_id: str | None,
         policies: Policies) -> Callable[[], Script]:
    def script() -> Script:
        stored: dict[str, Any] = yield tx.sync_ops.get_for_user(user_id, [o.op_id for o in ops])
        keys = [(o.entity_type, o.entity_id) for o in ops]
        for o in ops:
            policy = policies.get(o.entity_type)
            if policy is not None and policy.parent is not None and o.change.data is not None:
                parent_id = o.change.data.get(policy.parent.field)
                if isinstance(parent_id, str) and parent_id:
                    keys.append((policy.parent.entity_type, parent_id))
        entities: dict[tuple[str, str], SyncEntity] = dict((yield tx.entities.get_many(user_id, keys)))
        results: list[dict[str, Any]] = []
        fresh: dict[str, dict[str, Any]] = {}
        writes: list[tuple[SyncEntity, OpKind, str | None]] = []
        for o in ops:
            if o.op_id in stored or o.op_id in fresh:
                results.append(stored.get(o.op_id) or fresh[o.op_id])
                continue
            key = (o.entity_type, o.entity_id)
            current = entities.get(key)
            policy = policies.get(o.entity_type)
            if policy is None or o.problems:
                code = "UNKNOWN_ENTITY_TYPE" if policy is None else "VALIDATION_ERROR"
                outcome = Outcome(status="rejected", error=(code, "the operation is invalid"))
                strategy = "" if policy is None else policy.strategy
            else:
                strategy = policy.strategy
                outcome = decide(_state(current), o.change, policy)
                parent = policy.parent
                if outcome.write is not None and not outcome.write.deleted and parent is not None:
                    found = entities.get((parent.entity_type, str(outcome.write.data.get(parent.field))))
                    if found is None or found.deleted:
                        outcome = Outcome(status="rejected", error=(
                            "PARENT_NOT_FOUND", f"no {parent.entity_type} {outcome.write.data.get(parent.field)!r}"))
            conflict_id = None
            if outcome.resolution == "manual" and current is not None and o.change.data is not None:
                opened = yield tx.conflicts.open(
                    user_id, entity_type=o.entity_type, entity_id=o.entity_id, server_version=current.version,
                    server_data=current.data, client_data=o.change.data, base_version=o.change.base_version,
                    device_id=device_id)
                conflict_id = opened.id
            elif outcome.resolution == "manual" and current is not None:
                # A delete under MANUAL: the open conflict carries the client's wish as {"deleted": true}.
                opened = yield tx.conflicts.open(
                    user_id, entity_type=o.entity_type, entity_id=o.entity_id, server_version=current.version,
                    server_data=current.data, client_data={"deleted": True}, base_version=o.change.base_version,
                    device_id=device_id)
                conflict_id = opened.id
            server_version = None if current is None else current.version
            if outcome.write is not None:
                w = outcome.write
                current = SyncEntity(user_id, o.entity_type, o.entity_id, (server_version or 0) + 1, w.data,
                                     w.deleted, client_ts=w.client_ts)
                entities[key] = current
                kind: OpKind = "delete" if w.deleted else ("create" if server_version is None else "update")
                writes.append((current, kind, device_id))
            result = _result(o, outcome, current, strategy=strategy, conflict_id=conflict_id,
                             server_version=server_version)
            fresh[o.op_id] = result
            results.append(result)
        applied = yield from _commit_writes(tx, user_id, writes, correlation_id)
        if fresh:
            yield tx.sync_ops.record_many(user_id, device_id, fresh)
        return PushOutcome(results=tuple(results), applied=applied)

    return script


def _server_write(tx: Transaction, user_id: str, write: ServerWrite,
                  device_id: str | None) -> Generator[Op[Any], Any, tuple[Applied, ...]]:
    current = yield tx.entities.get(user_id, write.entity_type, write.entity_id)
    version = 1 if current is None else current.version + 1
    entity = SyncEntity(user_id, write.entity_type, write.entity_id, version, write.data, write.deleted,
                        client_ts=None if current is None else current.client_ts)
    kind: OpKind = "delete" if write.deleted else ("create" if current is None else "update")
    return (yield from _commit_writes(tx, user_id, [(entity, kind, device_id)], write.correlation_id))


def server_change(tx: Transaction, user_id: str, write: ServerWrite) -> Callable[[], Script]:
    def script() -> Script:
        return (yield from _server_write(tx, user_id, write, None))

    return script


def resolve(tx: Transaction, user_id: str, device_id: str | None, conflict_id: str, resolution: str,
            data: dict[str, Any] | None, correlation_id: str | None, policies: Policies) -> Callable[[], Script]:
    """Reply of the script: a ``Resolved``, or None for an unknown conflict, the conflict if it was already
    resolved, or ``InvalidResolution`` for custom data its entity type refuses (the caller raises)."""

    def script() -> Script:
        conflict = yield tx.conflicts.get(user_id, conflict_id)
        if conflict is None or conflict.status != "open":
            return conflict
        policy = policies.get(conflict.entity_type)
        custom = data
        if resolution == "custom" and policy is not None:
            custom, problems = validate_data(policy, data)
            if problems:
                return InvalidResolution(problems)
        current = yield tx.entities.get(user_id, conflict.entity_type, conflict.entity_id)
        applied: tuple[Applied, ...] = ()
        if resolution == "server":
            chosen = None if current is None else current.data
        else:
            chosen = conflict.client_data if resolution == "client" else custom
            deleted = resolution == "client" and chosen == {"deleted": True}
            body = current.data if deleted and current is not None else chosen
            if not isinstance(body, dict):
                body = {}
            applied = yield from _server_write(tx, user_id, ServerWrite(
                entity_type=conflict.entity_type, entity_id=conflict.entity_id, data=body, deleted=deleted,
                correlation_id=correlation_id), device_id)
            current = applied[0].entity
        done = yield tx.conflicts.resolve(user_id, conflict_id, resolution=resolution, data=chosen)
        return Resolved(conflict=done, entity=current, applied=applied)

    return script


def pull(tx: Transaction, user_id: str, device_id: str, after: int | None, limit: int,
         policies: Policies) -> Callable[[], Script]:
    """Reply of the script: a ``PullPage``, or a string saying why the cursor is refused."""

    def script() -> Script:
        latest = yield tx.changes.latest_seq(user_id)
        start = 0 if after is None else after
        if start > latest:
            return "ahead of the change log"
        if after is not None:
            state = yield tx.devices.acknowledge(user_id, device_id, after)
            if state.acked_seq > after:
                return "older than the cursor this device already acknowledged"
        rows: list[Change] = yield tx.changes.read(user_id, after_seq=start, limit=limit + 1)
        page = rows[:limit]
        ordered = sorted(page, key=lambda c: policies.depth(c.entity_type))  # stable: seq order within a depth
        return PullPage(changes=tuple(ordered), last_seq=page[-1].seq if page else start,
                        has_more=len(rows) > limit)

    return script


__all__ = ["Applied", "PullPage", "PushOutcome", "Resolved", "entity_json", "pull", "push", "resolve",
           "server_change"]
