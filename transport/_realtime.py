"""``GET /v1/ws`` (API.md "Realtime"): a user's envelopes as JSON text frames, ping/pong.

Handlers translate only: the device id is checked and the connection registered by
``RealtimeService``; this module moves envelopes out and client frames in. What to answer a client
frame is a pure function (``client_reply``). Errors are close codes: 4401 (credentials, by the
route registry), 4400 (a bad device id), 4408 (too slow: the buffer of envelopes overflowed),
1001 (shutting down).
"""

from __future__ import annotations

import json
from typing import Any

import trio
from pydantic import Field
from quart import websocket as current_websocket

from actors.realtime import (
    CLOSE_GOING_AWAY,
    CLOSE_SLOW_CONSUMER,
    DEVICE_ID,
    Connection,
    HubUnavailable,
    InvalidDeviceId,
)

from ._context import app_context, domains
from ._routes import ApiBlueprint, ApiModel

WS_BAD_REQUEST = 4400
# A send stuck on a client that stopped reading would hold a closed connection open forever.
STUCK_SEND_GRACE = 10.0
_MAX_REASON = 120  # a close frame's reason is at most 123 bytes


class RealtimeQuery(ApiModel):
    """Documentation of ``/v1/ws``'s query (the handler checks it, answering with close codes)."""

    device_id: str | None = Field(default=None, pattern=f"^{DEVICE_ID.pattern}$",
                                  description="the device (else X-Device-ID; neither: a device of its own)")


def client_reply(frame: str | bytes) -> dict[str, Any]:
    """What to answer a client's frame: ``pong`` to a ping, an error frame to anything else."""
    try:
        message = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        return _error("INVALID_FRAME", "frames are JSON objects such as {\"type\": \"ping\"}")
    if not isinstance(message, dict):
        return _error("INVALID_FRAME", "frames are JSON objects such as {\"type\": \"ping\"}")
    kind = message.get("type")
    if kind == "ping":
        return {"type": "pong"}
    return _error("UNKNOWN_TYPE", f"unknown frame type {str(kind)[:64]!r}; clients may send: ping")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": message}}


realtime = ApiBlueprint("realtime", tags=["realtime"])


@realtime.websocket("/v1/ws", query=RealtimeQuery,
                    summary="The user's realtime envelopes (JSON text frames); send {\"type\":\"ping\"} for a pong",
                    close_codes={WS_BAD_REQUEST: "invalid deviceId / X-Device-ID",
                                 CLOSE_SLOW_CONSUMER: "slow consumer: envelopes arrived faster than it read"})
async def ws(*, user_id: str) -> None:
    device_id = current_websocket.args.get("deviceId")
    if device_id is None:
        device_id = current_websocket.headers.get("X-Device-ID")
    try:
        async with domains().realtime.connect(user_id, device_id) as conn:
            code, reason = await _serve(conn)
    except InvalidDeviceId as exc:
        code, reason = WS_BAD_REQUEST, str(exc)
    except HubUnavailable:
        code, reason = CLOSE_GOING_AWAY, "server shutting down"
    with trio.move_on_after(STUCK_SEND_GRACE):
        await current_websocket.close(code, reason[:_MAX_REASON])


async def _serve(conn: Connection) -> tuple[int, str]:
    """Until the hub closes ``conn`` or the server drains (the client leaving cancels us):
    the close code and reason to send."""
    draining = app_context().draining
    sending = trio.Lock()  # envelopes and pongs share the socket
    result = (CLOSE_GOING_AWAY, "server shutting down")

    async def send(text: str) -> None:
        async with sending:
            await current_websocket.send(text)

    async with trio.open_nursery() as nursery:

        async def envelopes() -> None:
            nonlocal result
            async for envelope in conn:
                await send(envelope.to_json())
            result = (conn.close_code or CLOSE_GOING_AWAY, conn.close_reason)
            nursery.cancel_scope.cancel()

        async def give_up_on_stuck_send() -> None:
            await conn.wait_closed()
            await trio.sleep(STUCK_SEND_GRACE)
            nonlocal result
            result = (conn.close_code or CLOSE_GOING_AWAY, conn.close_reason)
            nursery.cancel_scope.cancel()

        async def client_frames() -> None:
            while True:
                frame = await current_websocket.receive()
                await send(json.dumps(client_reply(frame), separators=(",", ":")))

        async def close_on_drain() -> None:
            await draining.wait()
            nursery.cancel_scope.cancel()

        for task in (envelopes, give_up_on_stuck_send, client_frames, close_on_drain):
            nursery.start_soon(task)
    return result


__all__ = ["RealtimeQuery", "WS_BAD_REQUEST", "client_reply", "realtime"]
