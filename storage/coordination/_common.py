"""Pieces shared by both implementations, so they accept and reject the same inputs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from ._config import BusConfig
from ._errors import CoordinationClosed
from ._fanout import FanoutCounters, Subscription, unique

__all__ = ["Lifecycle", "check_hits", "check_key", "check_rate", "check_ttl", "new_subscription", "to_bytes"]


class Lifecycle:
    """Shared "has the context exited" flag: use after exit fails loudly, not oddly."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed = False

    def check(self) -> None:
        if self.closed:
            raise CoordinationClosed("coordination context has exited")


def check_key(what: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty str, got {value!r}")


def check_rate(key: str, limit: int, window: float) -> None:
    check_key("key", key)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an int >= 1, got {limit!r}")
    # Sub-millisecond windows would round to nothing in Redis' PEXPIRE.
    if not (math.isfinite(window) and window >= 0.001):
        raise ValueError(f"window must be a finite number of seconds >= 0.001, got {window!r}")


def check_hits(hits: Sequence[tuple[str, int]], window: float) -> None:
    if not hits:
        raise ValueError("hit_all needs at least one (key, limit)")
    for key, limit in hits:
        check_rate(key, limit, window)
    if len({key for key, _ in hits}) != len(hits):
        raise ValueError(f"hit_all got a key twice: {[key for key, _ in hits]}")


def check_ttl(name: str, owner: str, ttl: float) -> None:
    check_key("name", name)
    check_key("owner", owner)
    if not (math.isfinite(ttl) and ttl >= 0.001):
        raise ValueError(f"ttl must be a finite number of seconds >= 0.001, got {ttl!r}")


def to_bytes(message: bytes | str) -> bytes:
    if isinstance(message, str):
        return message.encode()
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    raise TypeError(f"message must be bytes or str, got {type(message).__name__}")


def new_subscription(
    channels: Iterable[str],
    patterns: Iterable[str],
    buffer: int | None,
    config: BusConfig,
    counters: FanoutCounters,
) -> Subscription:
    chans = unique(channels, "channel")
    pats = unique(patterns, "pattern")
    if not chans and not pats:
        raise ValueError("subscribe() needs at least one channel or pattern")
    size = config.subscriber_buffer if buffer is None else buffer
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"buffer must be an int >= 1, got {buffer!r}")
    return Subscription(chans, pats, size, counters)
