"""Connections and the rooms that hold them: the hub's state and its delivery rule.

Everything here is synchronous and never waits, so delivering to one connection cannot delay
another: a connection's buffer is bounded, and one that is full when an event arrives is closed
with ``CLOSE_SLOW_CONSUMER`` (its queued envelopes are discarded) instead of holding anyone up.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import trio

from ._envelope import Envelope

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # the server is shutting down
CLOSE_SLOW_CONSUMER = 4408  # the connection's send buffer was full when an event arrived


class Connection:
    """One client connection of one user's device. Iterate it for the envelopes meant for it;
    iteration ends when it is closed, and ``close_code`` then says why."""

    __slots__ = ("user_id", "device_id", "close_code", "close_reason", "duplicates",
                 "_send", "_recv", "_seen", "_seen_order", "_remember", "_closed")

    def __init__(self, *, user_id: str, device_id: str, buffer: int, remember: int) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.close_code: int | None = None
        self.close_reason = ""
        self.duplicates = 0
        self._send, self._recv = trio.open_memory_channel[Envelope](buffer)
        # The last ``remember`` event ids sent here: a redelivered event is dropped, not sent twice.
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._remember = remember
        self._closed = trio.Event()

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def offer(self, envelope: Envelope) -> bool:
        """Queue ``envelope`` unless it is a repeat. False: the buffer is full (the caller closes us)."""
        if self.closed:
            return True
        if envelope.event_id in self._seen:
            self.duplicates += 1
            return True
        try:
            self._send.send_nowait(envelope)
        except trio.WouldBlock:
            return False
        self._seen.add(envelope.event_id)
        self._seen_order.append(envelope.event_id)
        if len(self._seen_order) > self._remember:
            self._seen.discard(self._seen_order.popleft())
        return True

    def close(self, code: int, reason: str) -> None:
        """Idempotent; the first code wins."""
        if self.closed:
            return
        self.close_code = code
        self.close_reason = reason
        self._send.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def __aiter__(self) -> Connection:
        return self

    async def __anext__(self) -> Envelope:
        if self.closed:
            raise StopAsyncIteration
        try:
            envelope = await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None
        if self.closed:  # closed while this one waited in the buffer: the rest is dropped
            raise StopAsyncIteration
        return envelope


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomStats:
    users: int
    connections: int
    delivered: int  # envelopes queued to a connection
    duplicates: int  # repeats a connection had already been sent
    slow: int  # connections closed with CLOSE_SLOW_CONSUMER


class Rooms:
    """Every live connection, by user."""

    def __init__(self, *, buffer: int, remember: int) -> None:
        if buffer < 1 or remember < 1:
            raise ValueError("Rooms: buffer and remember must be >= 1")
        self._buffer = buffer
        self._remember = remember
        self._rooms: dict[str, list[Connection]] = {}
        self._delivered = 0
        self._slow = 0
        self._duplicates_closed = 0  # duplicates counted by connections that have gone
        self.shut = False  # set by close_all: the hub stopped for good

    def register(self, user_id: str, device_id: str) -> Connection:
        conn = Connection(user_id=user_id, device_id=device_id, buffer=self._buffer, remember=self._remember)
        self._rooms.setdefault(user_id, []).append(conn)
        return conn

    def unregister(self, conn: Connection) -> None:
        room = self._rooms.get(conn.user_id)
        if room is None or conn not in room:
            return
        room.remove(conn)
        self._duplicates_closed += conn.duplicates
        if not room:
            del self._rooms[conn.user_id]

    def deliver(self, envelope: Envelope) -> list[Connection]:
        """Queue ``envelope`` to its user's connections but the origin device's; the connections
        that were too slow for it are closed, unregistered and returned."""
        room = self._rooms.get(envelope.user_id)
        if not room:
            return []
        slow: list[Connection] = []
        for conn in room:
            if envelope.origin_device is not None and conn.device_id == envelope.origin_device:
                continue
            if conn.offer(envelope):
                self._delivered += 1
            else:
                conn.close(CLOSE_SLOW_CONSUMER, "slow consumer")
                slow.append(conn)
        for conn in slow:
            self.unregister(conn)
        self._slow += len(slow)
        return slow

    def close_all(self, code: int, reason: str) -> None:
        self.shut = True
        for room in list(self._rooms.values()):
            for conn in list(room):
                conn.close(code, reason)
                self.unregister(conn)

    def connections(self, user_id: str) -> tuple[Connection, ...]:
        return tuple(self._rooms.get(user_id, ()))

    def stats(self) -> RoomStats:
        live = [conn for room in self._rooms.values() for conn in room]
        return RoomStats(users=len(self._rooms), connections=len(live), delivered=self._delivered,
                         duplicates=self._duplicates_closed + sum(conn.duplicates for conn in live), slow=self._slow)


__all__ = ["CLOSE_GOING_AWAY", "CLOSE_NORMAL", "CLOSE_SLOW_CONSUMER", "Connection", "RoomStats", "Rooms"]
