"""The actor system: the root of a running tree, its clock, randomness, telemetry and dead letters."""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import trio

from ._cell import Cell
from ._errors import NoSuchActor, SupervisorGaveUp
from ._keyed import KeyedNode
from ._node import Node
from ._refs import ActorRef, EntityRef
from ._snapshot import NodeSnapshot
from ._spec import ChildSpec, Supervisor
from ._supervisor import SupervisorNode
from ._telemetry import DeadLettered, Telemetry, TelemetryEvent
from ._timers import TimerService


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A message that will never be handled, and why."""

    path: str
    message: Any
    reason: str
    error_type: str | None
    error_message: str | None
    at: float


class DeadLetters:
    """Counts every dead letter and keeps the most recent ones for inspection."""

    def __init__(self, system: ActorSystem, keep: int = 1000) -> None:
        self._system = system
        self.count = 0
        self.recent: deque[DeadLetter] = deque(maxlen=keep)

    def record(self, path: str, message: Any, reason: str, error: BaseException | None = None) -> None:
        self.count += 1
        at = trio.current_time()
        letter = DeadLetter(
            path=path,
            message=message,
            reason=reason,
            error_type=type(error).__name__ if error is not None else None,
            error_message=str(error) if error is not None else None,
            at=at,
        )
        self.recent.append(letter)
        telemetry = self._system.telemetry
        if telemetry.listening:
            telemetry.publish(DeadLettered(
                path=path, at=at, detail=reason, error_type=letter.error_type, error_message=letter.error_message,
            ))


class ActorSystem:
    """A running supervision tree. Build one with ``async with ActorSystem.start(tree) as system``."""

    def __init__(self, tree: Supervisor, *, seed: int | None = None) -> None:
        if not isinstance(tree, Supervisor):
            raise TypeError(f"the root of an actor system must be a Supervisor, got {type(tree).__name__}")
        self.seed = seed
        self._rng = random.Random(seed)
        self.telemetry = Telemetry()
        self.dead_letters = DeadLetters(self)
        self.timers = TimerService()
        self.root = SupervisorNode(self, None, tree, tree.name)
        self._failure: SupervisorGaveUp | None = None
        self._nursery: trio.Nursery | None = None
        self._wall_anchor = 0.0
        self._stopped = trio.Event()
        self._root_up = trio.Event()

    # -- lifecycle ----------------------------------------------------------------------------------
    @classmethod
    @asynccontextmanager
    async def start(cls, tree: Supervisor, *, seed: int | None = None) -> AsyncIterator[ActorSystem]:
        """Run ``tree`` inside the caller's task tree; leaving the block stops it gracefully.

        If the root supervisor gives up, the block is cancelled and ``SupervisorGaveUp`` is raised.
        """
        system = cls(tree, seed=seed)
        system._wall_anchor = time.time() - trio.current_time()
        system.timers.clock = trio.lowlevel.current_clock()
        try:
            async with trio.open_nursery() as nursery:
                system._nursery = nursery
                services = trio.CancelScope()
                nursery.start_soon(system._run_services, services)
                system.root.start(nursery, 0.0)
                # Yield a running system: spawn() and refs work from the first line of the block.
                await system._root_up.wait()
                try:
                    yield system
                    await system.stop()
                finally:
                    services.cancel()
        except BaseException as exc:
            if system._failure is not None:
                # The root gave up: that is the news, whatever the teardown made the block raise.
                raise system._failure from exc
            if isinstance(exc, BaseExceptionGroup):
                raise _sole_exception(exc) from None
            raise
        finally:
            system._nursery = None
            if system.root.alive:
                # A forced teardown (the block raised or was cancelled): fail what is still queued,
                # so no asker outside the system waits for an answer that cannot come.
                system.root.finalize("system torn down")
        if system._failure is not None:
            raise system._failure

    async def _run_services(self, scope: trio.CancelScope) -> None:
        with scope:
            await self.timers.run()

    async def stop(self) -> None:
        """Stop every actor in reverse start order, each draining its mailbox within its timeout."""
        root = self.root
        if root.active:
            root.stop_by_parent = True
            root.request_stop(drain=True)
            await root.wait_stopped()
        if root.alive:
            root.finalize("system stopped")
        self._stopped.set()

    def _root_exited(self, root: Node) -> None:
        if root.stop_by_parent:
            return
        if root.exit_reason == "crash":
            error = root.exit_error
            self._failure = error if isinstance(error, SupervisorGaveUp) else SupervisorGaveUp(
                root.path, 0, 0.0, error
            )
        # Cancel first, so the block sees Cancelled rather than the errors finalizing causes.
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        root.finalize("root supervisor gave up" if root.exit_reason == "crash" else "root exited")

    # -- addressing ---------------------------------------------------------------------------------
    def _resolve(self, path: str) -> tuple[Node, Any]:
        node: Node = self.root
        if path == node.name:
            return node, None  # spawns under the root: the common case
        parts = path.strip("/").split("/")
        if parts[0] != node.name:
            raise NoSuchActor(path, f"paths start at the root supervisor {node.name!r}")
        for index, part in enumerate(parts[1:], start=1):
            if isinstance(node, KeyedNode):
                return node, "/".join(parts[index:])
            if not isinstance(node, SupervisorNode):
                raise NoSuchActor(path, f"{node.path!r} is an actor and has no children")
            child = node.child(part)
            if child is None:
                names = ", ".join(c.name for c in node.children) or "none"
                raise NoSuchActor(path, f"{node.path!r} has no child {part!r} (its children: {names})")
            node = child
        return node, None

    def ref(self, path: str) -> ActorRef:
        """The ref of the actor (or keyed group, or one key of it) at ``path``, e.g. ``"root/ingest/hot"``."""
        node, key = self._resolve(path)
        if isinstance(node, KeyedNode):
            return node.ref if key is None else EntityRef(node, key)
        if isinstance(node, Cell):
            return node.ref
        raise NoSuchActor(path, f"{node.path!r} is a supervisor; it takes no messages (address one of its children)")

    def node(self, path: str) -> Node:
        node, key = self._resolve(path)
        if key is not None:
            assert isinstance(node, KeyedNode)
            entity = node.entities.get(key)
            if entity is None:
                raise NoSuchActor(path, "that key has no live actor")
            return entity
        return node

    async def spawn(self, supervisor_path: str, spec: ChildSpec) -> ActorRef:
        """Start a child under a supervisor; returns its ref at once (messages queue meanwhile).

        Into a running supervisor it does not yield (like ``tell`` with room, it only checks for
        cancellation): the child starts at the caller's next checkpoint, so a loop of spawns costs
        no scheduler pass per child. A supervisor that is starting or waiting out a restart delay is
        waited for; one that has stopped, is shutting down or gave up meanwhile makes the spawn fail
        with a ``RuntimeError``.
        """
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"spawn takes a ChildSpec, got {type(spec).__name__}")
        node, _ = self._resolve(supervisor_path)
        if not isinstance(node, SupervisorNode):
            raise NoSuchActor(supervisor_path, f"{node.path!r} is not a supervisor; spawn under a supervisor")
        await trio.lowlevel.checkpoint_if_cancelled()
        if not node.takes_children():
            await node.wait_takes_children()
        child = node.add_child(spec)
        if isinstance(child, KeyedNode):
            return child.ref
        assert isinstance(child, Cell)
        return child.ref

    # -- observation --------------------------------------------------------------------------------
    def tree(self) -> NodeSnapshot:
        """The live tree as typed snapshots (transport renders ``GET /v1/ops/supervision`` from it)."""
        return self.root.snapshot()

    def wall_time(self, at: float) -> str:
        """An RFC 3339 UTC timestamp for a trio-clock instant."""
        moment = datetime.fromtimestamp(self._wall_anchor + at, tz=UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def publish(
        self,
        event_type: type[TelemetryEvent],
        path: str,
        *,
        attempt: int | None = None,
        delay: float | None = None,
        error: BaseException | None = None,
        detail: str | None = None,
    ) -> None:
        telemetry = self.telemetry
        if not telemetry.listening:
            return
        telemetry.publish(event_type(
            path=path,
            at=trio.current_time(),
            attempt=attempt,
            delay=delay,
            error_type=type(error).__name__ if error is not None else None,
            error_message=str(error) if error is not None else None,
            detail=detail,
        ))

    def jitter(self) -> float:
        """The backoff jitter factor in [0.8, 1.2], from the system's one seedable RNG."""
        return self._rng.uniform(0.8, 1.2)

    @property
    def random(self) -> random.Random:
        """The system's seedable randomness, for actors that need some."""
        return self._rng

    def inject_crash(self, path: str, error: BaseException | None = None) -> None:
        """Crash the actor at ``path`` as if ``receive`` had raised ``error`` (between two messages)."""
        from ._cell import InjectedCrash

        node = self.node(path)
        if not isinstance(node, Cell):
            raise NoSuchActor(path, f"{node.path!r} is a {node.kind}; only actors can be crashed")
        node.inject(error if error is not None else InjectedCrash(f"crash injected into {path}"))


def _sole_exception(group: BaseExceptionGroup[Any]) -> BaseException:
    """Unwrap a group holding one real exception (Cancelled aside), so callers see what happened."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, trio.Cancelled):
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else group
