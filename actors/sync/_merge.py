"""Pure decisions of a push: what one client operation does to the server's copy of its entity.

``decide(server, change, policy)`` reads nothing and writes nothing; the device actor applies its outcome.
``merge_fields`` is the MERGE strategy alone, property-tested per field policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ._policy import EntityPolicy, FieldPolicy, FieldRule

Status = Literal["applied", "merged", "conflict", "rejected"]
OpKind = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True, kw_only=True)
class State:
    """The server's copy of an entity (what a decision needs of it)."""

    version: int
    data: dict[str, Any]
    deleted: bool
    client_ts: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientChange:
    """One operation of a push, its ``data`` already validated (None for a delete)."""

    op: OpKind
    base_version: int
    data: dict[str, Any] | None
    client_ts: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Write:
    data: dict[str, Any]
    deleted: bool
    client_ts: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    status: Status
    write: Write | None = None  # the entity's next state (version + 1); None: unchanged
    resolution: Literal["client", "server", "merge", "manual"] | None = None  # set for a conflict
    error: tuple[str, str] | None = None  # (code, message) of a rejection


def _rejected(code: str, message: str) -> Outcome:
    return Outcome(status="rejected", error=(code, message))


def merge_value(rule: FieldPolicy | FieldRule, server: Any, client: Any) -> Any:
    """One field under its policy; values the rule cannot compare fall back to the incoming one."""
    policy = rule if isinstance(rule, FieldPolicy) else FieldPolicy(rule=rule)
    match policy.rule:
        case "MERGE_ARRAYS":
            if isinstance(server, list) and isinstance(client, list):
                out = list(server)
                out.extend(item for item in client if item not in server)
                return out
        case "MAX_VALUE":
            if _number(server) and _number(client):
                return server if server > client else client
        case "MONOTONIC":
            if server in policy.order and client in policy.order:
                return server if policy.order.index(server) > policy.order.index(client) else client
    return client


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def merge_fields(policy: EntityPolicy, server: dict[str, Any], client: dict[str, Any]) -> dict[str, Any]:
    """MERGE: the server's fields, each one the incoming change also has merged under its policy."""
    out = dict(server)
    for name, value in client.items():
        out[name] = merge_value(policy.fields.get(name, policy.default_field), server[name], value) \
            if name in server else value
    return out


def decide(server: State | None, change: ClientChange, policy: EntityPolicy) -> Outcome:
    """What ``change`` does to ``server`` (None: no such entity) under ``policy``."""
    if change.op == "create" and change.base_version != 0:
        return _rejected("INVALID_BASE_VERSION", "a create sends baseVersion 0")
    if server is None:
        if change.op != "create":
            return _rejected("NOT_FOUND", f"no {policy.entity_type} with this id")
        assert change.data is not None
        return Outcome(status="applied", write=Write(data=change.data, deleted=False, client_ts=change.client_ts))
    if change.base_version > server.version:
        return _rejected("INVALID_BASE_VERSION",
                         f"baseVersion {change.base_version} is ahead of the server's {server.version}")
    incoming = Write(data=server.data if change.data is None else change.data, deleted=change.op == "delete",
                     client_ts=change.client_ts)
    if change.base_version == server.version:
        if server.deleted and change.op == "delete":
            return Outcome(status="applied")  # already gone
        if server.deleted:
            return _rejected("ENTITY_DELETED", f"the {policy.entity_type} was deleted")
        return Outcome(status="applied", write=incoming)
    return _conflict(server, change, incoming, policy)


def _conflict(server: State, change: ClientChange, incoming: Write, policy: EntityPolicy) -> Outcome:
    match policy.strategy:
        case "CLIENT_WINS":
            return Outcome(status="merged", write=incoming, resolution="client")
        case "SERVER_WINS":
            return Outcome(status="merged", resolution="server")
        case "LAST_WRITE_WINS":
            later = server.client_ts is None or change.client_ts is None or change.client_ts >= server.client_ts
            return Outcome(status="merged", write=incoming, resolution="client") if later \
                else Outcome(status="merged", resolution="server")
        case "MERGE":
            if incoming.deleted or server.deleted:
                # A delete wins: a deleted entity stays deleted, and a delete is never undone by a merge.
                if server.deleted:
                    return Outcome(status="merged", resolution="server")
                return Outcome(status="merged", write=incoming, resolution="client")
            data = merge_fields(policy, server.data, incoming.data)
            if data == server.data:
                return Outcome(status="merged", resolution="merge")
            return Outcome(status="merged", resolution="merge",
                           write=Write(data=data, deleted=False, client_ts=change.client_ts))
    return Outcome(status="conflict", resolution="manual")


__all__ = ["ClientChange", "OpKind", "Outcome", "State", "Status", "Write", "decide", "merge_fields",
           "merge_value"]
