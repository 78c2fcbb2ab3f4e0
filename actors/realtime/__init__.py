"""Realtime: envelopes to users' WebSocket connections, in this process and (Redis) the others.

``RealtimeService`` is the facade: ``connect`` a user's device, ``publish`` envelopes (never
waits), ``projection_updated`` and ``sync_changed`` for the domains that cause them. Its errors
(``RealtimeError`` and below) are drawn in ``_errors``.
"""

from ._bridge import BridgeState, RedisBridge
from ._envelope import (
    DEVICE_ID,
    PROJECTION_UPDATED,
    SYNC_CHANGED,
    Envelope,
    check_device_id,
    projection_updated,
    sync_changed,
)
from ._errors import HubUnavailable, InvalidDeviceId, RealtimeError
from ._hub import RealtimeHub
from ._messages import HubStats, Publish
from ._rooms import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_SLOW_CONSUMER, Connection, Rooms, RoomStats
from ._service import RealtimeConfig, RealtimeDomain, RealtimeService, RealtimeStatus

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_NORMAL",
    "CLOSE_SLOW_CONSUMER",
    "DEVICE_ID",
    "PROJECTION_UPDATED",
    "SYNC_CHANGED",
    "BridgeState",
    "Connection",
    "Envelope",
    "HubStats",
    "HubUnavailable",
    "InvalidDeviceId",
    "Publish",
    "RealtimeConfig",
    "RealtimeDomain",
    "RealtimeError",
    "RealtimeHub",
    "RealtimeService",
    "RealtimeStatus",
    "RedisBridge",
    "RoomStats",
    "Rooms",
    "check_device_id",
    "projection_updated",
    "sync_changed",
]
