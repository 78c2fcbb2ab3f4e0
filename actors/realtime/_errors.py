"""The realtime domain's errors.

    RealtimeError
     ├── InvalidDeviceId     a device id outside API.md's pattern (1-128 of ``[A-Za-z0-9._:-]``)
     └── HubUnavailable      the hub cannot take the event or the connection (stopped, or its mailbox full)

Delivery itself never raises at the publisher: a slow connection is closed (4408), Redis trouble is
logged and retried by the bridge.
"""

from __future__ import annotations


class RealtimeError(Exception):
    """Base of the realtime domain's errors."""


class InvalidDeviceId(RealtimeError):
    def __init__(self, device_id: str) -> None:
        super().__init__(f"a device id is 1-128 characters of [A-Za-z0-9._:-], got {device_id[:140]!r}")


class HubUnavailable(RealtimeError):
    pass


__all__ = ["HubUnavailable", "InvalidDeviceId", "RealtimeError"]
