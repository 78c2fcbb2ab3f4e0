"""The realtime hub: delivers envelopes to the local connections of their user.

The rooms it delivers into are shared with the facade, which registers and unregisters
connections directly: that has to work while a WebSocket handler is being cancelled, so it cannot
wait on (or be lost in) a mailbox. The rooms outlive a crash of the hub, so a restart loses no
connection. A graceful stop closes every connection with 1001.
"""

from __future__ import annotations

import logging
from typing import Any

from kernel import Actor

from ._messages import HubStats, Publish
from ._rooms import CLOSE_GOING_AWAY, Rooms

log = logging.getLogger("vigil.realtime")


class RealtimeHub(Actor):
    max_batch = 256  # a burst of events is delivered in one turn

    def __init__(self, *, rooms: Rooms) -> None:
        self.rooms = rooms

    async def stopping(self) -> None:
        self.rooms.close_all(CLOSE_GOING_AWAY, "server shutting down")

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        return [self._handle(msg) for msg in messages]

    def _handle(self, msg: Any) -> Any:
        match msg:
            case Publish(envelope=envelope):
                for conn in self.rooms.deliver(envelope):
                    log.warning("realtime: closed a slow consumer", extra={"fields": {
                        "userId": conn.user_id, "deviceId": conn.device_id, "eventId": envelope.event_id}})
                return None
            case HubStats():
                return self.rooms.stats()
            case _:
                raise TypeError(f"realtime hub: unexpected message {msg!r}")


__all__ = ["RealtimeHub"]
