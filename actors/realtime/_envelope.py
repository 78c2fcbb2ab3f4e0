"""The server -> client envelope (API.md "Realtime") and its two encodings: the client's JSON
(without ``origin_device``) and the Redis wire form (with it, and the publishing process's id)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ._errors import InvalidDeviceId

ENVELOPE_VERSION = 1
DEVICE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

PROJECTION_UPDATED = "health.projection.updated"
SYNC_CHANGED = "sync.changed"


def check_device_id(device_id: str) -> str:
    if DEVICE_ID.fullmatch(device_id) is None:
        raise InvalidDeviceId(device_id)
    return device_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    event_id: str  # stable across outbox redelivery: what connections deduplicate on
    type: str
    user_id: str
    entity_type: str
    entity_id: str
    version: int
    payload: dict[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None
    origin_device: str | None = None  # its connections are skipped; never sent to clients
    v: int = ENVELOPE_VERSION

    def to_dict(self) -> dict[str, Any]:
        """What a client receives (camelCase; no ``originDevice``)."""
        return {"v": self.v, "eventId": self.event_id, "type": self.type, "userId": self.user_id,
                "entityType": self.entity_type, "entityId": self.entity_id, "version": self.version,
                "payload": self.payload, "correlationId": self.correlation_id}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), default=str)


def to_wire(envelope: Envelope, *, origin_process: str) -> bytes:
    """The Redis message: the client form plus ``originDevice`` and the publishing process."""
    body = {**envelope.to_dict(), "originDevice": envelope.origin_device, "originProcess": origin_process}
    return json.dumps(body, separators=(",", ":"), default=str).encode()


def from_wire(data: bytes) -> tuple[Envelope, str]:
    """``(envelope, origin process)``; ValueError (json's included) for a message not of this form."""
    body = json.loads(data)
    if not isinstance(body, dict) or body.get("v") != ENVELOPE_VERSION:
        raise ValueError("not a realtime envelope of version 1")
    try:
        envelope = Envelope(
            event_id=str(body["eventId"]), type=str(body["type"]), user_id=str(body["userId"]),
            entity_type=str(body["entityType"]), entity_id=str(body["entityId"]), version=int(body["version"]),
            payload=dict(body.get("payload") or {}), correlation_id=_optional(body.get("correlationId")),
            origin_device=_optional(body.get("originDevice")))
        return envelope, str(body["originProcess"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed realtime envelope: {exc!r}") from None


def _optional(value: Any) -> str | None:
    return None if value is None else str(value)


def projection_updated(*, user_id: str, handler: str, projected: int, correlation_id: str | None) -> Envelope:
    """``health.projection.updated``: the same (handler, user, watermark) is the same event."""
    return Envelope(event_id=f"{handler}:{user_id}:{projected}", type=PROJECTION_UPDATED, user_id=user_id,
                    entity_type="projection", entity_id=handler, version=projected,
                    payload={"handler": handler, "projectedWatermark": projected}, correlation_id=correlation_id)


def sync_changed(*, event_id: str, user_id: str, entity_type: str, entity_id: str, version: int,
                 payload: dict[str, Any], origin_device: str | None, correlation_id: str | None) -> Envelope:
    """``sync.changed``: ``event_id`` is the outbox event's, so a redelivery is the same event."""
    return Envelope(event_id=event_id, type=SYNC_CHANGED, user_id=user_id, entity_type=entity_type,
                    entity_id=entity_id, version=version, payload=payload, correlation_id=correlation_id,
                    origin_device=origin_device)


__all__ = ["DEVICE_ID", "ENVELOPE_VERSION", "PROJECTION_UPDATED", "SYNC_CHANGED", "Envelope", "check_device_id",
           "from_wire", "projection_updated", "sync_changed", "to_wire"]
