"""Shared scripted actors and helpers for the kernel tests.

Every actor here logs what happens to it with trio's clock, so a test asserts on exact virtual
times and orders. ``settle()`` lets every runnable task run without moving the clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import trio
import trio.testing

from kernel import Actor, ChildSpec, TelemetryEvent


class Boom(Exception):
    """What scripted actors raise when told to crash."""


async def settle() -> None:
    """Run every runnable task until all are blocked; the (mock) clock does not move."""
    await trio.testing.wait_all_tasks_blocked()


def tasks_living() -> int:
    return trio.lowlevel.current_statistics().tasks_living


@dataclass(frozen=True)
class Entry:
    at: float
    path: str
    event: str  # "started" | "stopping" | "recv" | "done"
    msg: Any = None


class Log(list[Entry]):
    """What scripted actors did, in order, with the trio time of each step."""

    def add(self, path: str, event: str, msg: Any = None) -> None:
        self.append(Entry(trio.current_time(), path, event, msg))

    def where(self, path: str | None = None, event: str | None = None) -> list[Entry]:
        return [e for e in self if (path is None or e.path == path) and (event is None or e.event == event)]

    def received(self, path: str) -> list[Any]:
        return [e.msg for e in self.where(path, "recv")]

    def count(self, path: str, event: str) -> int:
        return len(self.where(path, event))

    def times(self, path: str, event: str) -> list[float]:
        return [e.at for e in self.where(path, event)]

    def lifecycle(self, path: str | None = None) -> list[tuple[str, str]]:
        return [(e.path, e.event) for e in self if e.event in ("started", "stopping")
                and (path is None or e.path == path)]


class Worker(Actor):
    """A scriptable actor: the message says what to do.

    ``("crash", text)`` raises ``Boom(text)``; ``("sleep", s)`` or ``("sleep", s, tag)`` takes ``s`` seconds;
    ``("stop",)`` calls ``self.stop()``; ``("send_after", d, m)`` / ``("every", i, m)`` arm timers;
    ``("watch", ref)`` / ``("unwatch", ref)``; ``("tell", ref, m)`` forwards ``m``;
    anything else is just logged. The answer to an ask is ``("ok", msg)``.
    """

    def __init__(self, log: Log, *, stopping_delay: float = 0.0) -> None:
        self.log = log
        self.stopping_delay = stopping_delay
        self.timers: list[Any] = []

    async def started(self) -> None:
        self.log.add(self.path, "started")

    async def stopping(self) -> None:
        self.log.add(self.path, "stopping")
        if self.stopping_delay:
            await trio.sleep(self.stopping_delay)
            self.log.add(self.path, "stopped-hook-done")

    async def receive(self, msg: Any) -> Any:
        self.log.add(self.path, "recv", msg)
        match msg:
            case ("crash", text):
                raise Boom(text)
            case ("sleep", seconds) | ("sleep", seconds, _):
                await trio.sleep(seconds)
                self.log.add(self.path, "done", msg)
            case ("stop",):
                self.stop()
            case ("send_after", delay, m):
                self.timers.append(self.send_after(delay, m))
            case ("every", interval, m):
                self.timers.append(self.every(interval, m))
            case ("cancel_timers",):
                for timer in self.timers:
                    timer.cancel()
            case ("watch", ref):
                self.watch(ref)
            case ("unwatch", ref):
                self.unwatch(ref)
            case ("tell", ref, m):
                await ref.tell(m)
        return ("ok", msg)


def worker(name: str, log: Log, **spec: Any) -> ChildSpec:
    stopping_delay = spec.pop("stopping_delay", 0.0)
    return ChildSpec(name, Worker, kwargs={"log": log, "stopping_delay": stopping_delay}, **spec)


class Device(Actor):
    """A keyed actor: gets its key first, logs like ``Worker``, answers ``(key, n, msg)``."""

    def __init__(self, key: str, log: Log, *, stopping_delay: float = 0.0) -> None:
        self.key = key
        self.log = log
        self.n = 0
        self.stopping_delay = stopping_delay

    async def started(self) -> None:
        self.log.add(self.path, "started", self.key)

    async def stopping(self) -> None:
        self.log.add(self.path, "stopping")
        if self.stopping_delay:
            await trio.sleep(self.stopping_delay)
            self.log.add(self.path, "stopped-hook-done")

    async def receive(self, msg: Any) -> Any:
        self.log.add(self.path, "recv", msg)
        self.n += 1
        match msg:
            case ("crash", text):
                raise Boom(text)
            case ("sleep", seconds):
                await trio.sleep(seconds)
                self.log.add(self.path, "done", msg)
            case ("stop",):
                self.stop()
        return (self.key, self.n, msg)


def kinds(events: Iterable[TelemetryEvent]) -> list[tuple[str, str]]:
    return [(e.kind, e.path) for e in events]
