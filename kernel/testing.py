"""Deterministic testing of actor systems under ``trio.testing.MockClock``.

    async def test_restart(autojump_clock):              # pytest-trio's MockClock(autojump_threshold=0)
        async with open_test_system(tree, seed=1) as system:
            probe = TestProbe(system)
            probe.watch(system.ref("root/worker"))
            inject_crash(system, "root/worker")
            await probe.expect_no_message_for(10.0)       # ten virtual seconds, instantly

Time only moves when every task is blocked, so "nothing arrived for 10 s" is a fact about the
program, not a race.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
import trio.testing

from ._cell import Cell, Terminated, watch
from ._refs import _Ask
from ._spec import ChildSpec, Supervisor
from ._system import ActorSystem

__all__ = ["TestProbe", "inject_crash", "open_test_system", "run"]

T = TypeVar("T")
_probe_ids = itertools.count(1)


def _require_mock_clock(what: str) -> trio.testing.MockClock:
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, trio.testing.MockClock):
        raise RuntimeError(
            f"{what} needs trio's MockClock so that time is virtual: use pytest-trio's `autojump_clock` "
            "fixture, or kernel.testing.run(...)"
        )
    return clock


def run(async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``trio.run`` under ``MockClock(autojump_threshold=0)``: sleeps take no real time."""
    return trio.run(async_fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


@asynccontextmanager
async def open_test_system(tree: Supervisor, *, seed: int = 0) -> AsyncIterator[ActorSystem]:
    """``ActorSystem.start`` with a fixed seed, refusing to run on the real clock."""
    _require_mock_clock("open_test_system")
    async with ActorSystem.start(tree, seed=seed) as system:
        yield system


def inject_crash(system: ActorSystem, path: str, error: BaseException | None = None) -> None:
    """Crash the actor at ``path`` between two messages, as if ``receive`` raised ``error``."""
    system.inject_crash(path, error)


class _ProbeActorPlaceholder:
    """Probes have a mailbox but no actor: the test itself reads it."""


class TestProbe:
    """A mailbox the test reads: give ``probe.ref`` to actors, then expect what they send."""

    __test__ = False  # not a pytest test class

    def __init__(self, system: ActorSystem, name: str | None = None, *, mailbox: int = 10_000) -> None:
        label = name or f"probe-{next(_probe_ids)}"
        spec = ChildSpec(label, _ProbeActorPlaceholder, mailbox=mailbox, overflow="reject")
        self._cell = Cell(system, None, label, f"probe/{label}", spec)
        self._cell.state = "running"
        self.ref = self._cell.ref
        self._last_ask: _Ask | None = None

    def watch(self, ref: Any) -> None:
        """Receive ``Terminated`` when ``ref``'s actor stops for good."""
        watch(self._cell, ref)

    async def receive(self, *, timeout: float = 3.0) -> Any:
        """The next message (an ask's message; answer it with ``reply``)."""
        cell = self._cell
        with trio.move_on_after(timeout):
            while not cell.q:
                await cell._park()
            item = cell.q.popleft()
            cell.processed += 1
            if type(item) is _Ask:
                self._last_ask = item
                return item.msg
            return item
        raise AssertionError(f"{cell.path}: no message within {timeout:g} s (virtual)")

    def reply(self, value: Any) -> None:
        """Answer the last ask this probe received."""
        import outcome

        if self._last_ask is None:
            raise RuntimeError("reply(): this probe has not received an ask")
        self._last_ask.settle(outcome.Value(value))
        self._last_ask = None

    async def expect_message(self, expected: Any = None, *, timeout: float = 3.0) -> Any:
        """The next message, checked against ``expected``: a value, a type, or a predicate."""
        msg = await self.receive(timeout=timeout)
        if expected is None:
            return msg
        if isinstance(expected, type):
            ok = isinstance(msg, expected)
        elif callable(expected):
            ok = bool(expected(msg))
        else:
            ok = msg == expected
        if not ok:
            raise AssertionError(f"{self._cell.path}: expected {expected!r}, got {msg!r}")
        return msg

    async def expect_terminated(self, path: str, *, timeout: float = 3.0) -> Terminated:
        msg = await self.expect_message(Terminated, timeout=timeout)
        assert isinstance(msg, Terminated)
        if msg.path != path:
            raise AssertionError(f"expected Terminated for {path!r}, got one for {msg.path!r}")
        return msg

    async def expect_no_message_for(self, duration: float) -> None:
        """Assert that nothing arrives for ``duration`` seconds of (virtual) time."""
        _require_mock_clock("expect_no_message_for")
        cell = self._cell
        with trio.move_on_after(duration):
            while not cell.q:
                await cell._park()
        if cell.q:
            raise AssertionError(f"{cell.path}: expected no message for {duration:g} s, got {cell.q[0]!r}")

    @property
    def pending(self) -> int:
        return len(self._cell.q)
