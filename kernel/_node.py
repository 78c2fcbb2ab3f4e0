"""What every node of the supervision tree shares: actors, keyed groups and supervisors.

A node outlives its incarnations: restarting replaces the running instance, never the node, so
refs and mailboxes stay valid across restarts. The parent supervisor drives a node only through
``start`` (run one incarnation, after a delay), ``request_stop`` and ``wait_stopped``; the node
tells it ``child_up`` once an incarnation is running and ``child_exited`` when it ends.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Literal

import trio

from ._policy import ExitReason
from ._snapshot import FailureSnapshot, NodeSnapshot

if TYPE_CHECKING:
    from ._supervisor import SupervisorNode
    from ._system import ActorSystem

NodeState = Literal[
    "new", "starting", "running", "restarting", "stopping", "stopped", "crashed", "failed", "idle"
]


class Node(ABC):
    __slots__ = (
        "system", "parent", "name", "path", "state", "restarts", "crashes", "last_failure", "consecutive",
        "started_at", "scope", "_stopped_event", "stop_by_parent", "exit_reason", "exit_error",
        "retired", "delay_scope",
    )
    kind: str = "node"

    def __init__(self, system: ActorSystem, parent: SupervisorNode | None, name: str, path: str) -> None:
        self.system = system
        self.parent = parent
        self.name = name
        self.path = path
        self.state: NodeState = "new"
        self.restarts = 0
        self.crashes = 0
        self.last_failure: FailureSnapshot | None = None
        # Consecutive restarts: the backoff exponent, reset after a long enough run.
        self.consecutive = 0
        self.started_at = 0.0
        # The scope of the incarnation that is scheduled or running (None: none is).
        self.scope: trio.CancelScope | None = None
        # Whoever waits for the incarnation's end gets an Event, made only then: most nodes are never
        # waited for, and an Event per start would cost each spawn.
        self._stopped_event: trio.Event | None = None
        # Set by the parent while it stops this node on purpose: the exit is then not a failure
        # to act on, the parent is already waiting for it.
        self.stop_by_parent = False
        self.exit_reason: ExitReason = "normal"
        self.exit_error: BaseException | None = None
        self.retired = False
        # The restart delay in progress, so a draining stop can cut it short.
        self.delay_scope: trio.CancelScope | None = None

    # -- what the parent calls ------------------------------------------------------------------
    def start(self, nursery: trio.Nursery, delay: float) -> None:
        self.stop_by_parent = False
        self.scope = trio.CancelScope()
        self.state = "restarting" if delay > 0 else "starting"
        nursery.start_soon(self._run_incarnation, delay, self.scope, name=self.path)

    @abstractmethod
    def request_stop(self, *, drain: bool) -> None:
        """Ask the running incarnation to end: after draining the mailbox, or after the current message."""

    @property
    def active(self) -> bool:
        """An incarnation is scheduled or running."""
        return self.scope is not None

    async def wait_stopped(self) -> None:
        """Return once no incarnation runs (at once if none does)."""
        if not self.active:
            return
        if self._stopped_event is None:
            self._stopped_event = trio.Event()
        await self._stopped_event.wait()

    @property
    def shutdown_timeout(self) -> float:
        return math.inf

    @property
    def alive(self) -> bool:
        """Not stopped for good: it may run again (after a restart) and keeps its mailbox."""
        return not self.retired

    def finalize(self, detail: str) -> None:
        """Stopped for good: nothing will run again under this node."""
        self.retired = True
        self.state = "stopped"

    def revive(self) -> None:
        """A restarted supervisor brings its static children back, as OTP restarts them from their specs."""
        self.retired = False

    # -- the incarnation --------------------------------------------------------------------------
    async def _run_incarnation(self, delay: float, scope: trio.CancelScope) -> None:
        reason: ExitReason = "normal"
        error: BaseException | None = None
        try:
            with scope:
                if delay > 0:
                    with trio.CancelScope() as self.delay_scope:
                        await trio.sleep(delay)
                    self.delay_scope = None
                reason, error = await self._incarnation()
            if scope.cancelled_caught:
                reason, error = "normal", None
        except Exception as exc:  # a bug in the runtime itself: report it like a crash
            reason, error = "crash", exc
            self.record_failure(exc)
        finally:
            self.exit_reason, self.exit_error = reason, error
            if self.state in ("running", "starting", "restarting", "stopping"):
                self.state = "crashed" if reason == "crash" else "stopped"
            self.scope = None
            event, self._stopped_event = self._stopped_event, None
            if event is not None:
                event.set()
        if self.parent is not None:
            self.parent.child_exited(self)
        else:
            self.system._root_exited(self)

    @abstractmethod
    async def _incarnation(self) -> tuple[ExitReason, BaseException | None]:
        """Run one incarnation to its end; crashes are returned, never raised."""

    def _came_up(self) -> None:
        """This incarnation runs: the parent may be waiting for it to report up (start, like OTP's)."""
        if self.parent is not None:
            self.parent.child_up(self)
        else:
            self.system._root_up.set()

    def record_failure(self, error: BaseException) -> None:
        self.crashes += 1
        self.last_failure = FailureSnapshot(type=type(error).__name__, message=str(error), at=trio.current_time())

    def snapshot(self) -> NodeSnapshot:
        """This node as a typed value (``system.tree()`` is the root's)."""
        return NodeSnapshot(
            name=self.name, path=self.path, kind=self.kind, state=self.state, restarts=self.restarts,
            crashes=self.crashes, last_failure=self.last_failure, mailbox=None, processed=0, dead_letters=0,
        )
