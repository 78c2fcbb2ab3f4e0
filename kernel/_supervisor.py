"""The supervisor runtime: starts children in order, decides restarts, stops in reverse order.

Decisions come from ``_policy`` (pure); this module is the thin shell that applies them. The
supervisor handles one child exit at a time, in the order they happened, like OTP's supervisor.
Like OTP's ``start_link``, a supervisor reports itself running only once each of its initial
children is running (a nested supervisor: once its own children are).
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING

import trio

from ._cell import Cell
from ._errors import SupervisorGaveUp
from ._keyed import KeyedNode
from ._node import Node
from ._policy import ExitReason, RestartType, decide_restart, restart_group
from ._snapshot import NodeSnapshot
from ._spec import ChildSpec, Supervisor
from ._telemetry import GaveUp, Restarted, Started, Stopped

if TYPE_CHECKING:
    from ._system import ActorSystem


def restart_type_of(node: Node) -> RestartType:
    spec = getattr(node, "spec", None)
    if isinstance(spec, ChildSpec | Supervisor):
        return spec.restart
    return "permanent"


def build_node(system: ActorSystem, parent: SupervisorNode | None, spec: ChildSpec | Supervisor, path: str) -> Node:
    if isinstance(spec, Supervisor):
        return SupervisorNode(system, parent, spec, path)
    if spec.keyed:
        return KeyedNode(system, parent, spec, path)
    return Cell(system, parent, spec.name, path, spec)


class SupervisorNode(Node):
    kind = "supervisor"

    def __init__(self, system: ActorSystem, parent: SupervisorNode | None, spec: Supervisor, path: str) -> None:
        super().__init__(system, parent, spec.name, path)
        self.spec = spec
        self.children: list[Node] = [build_node(system, self, child, f"{path}/{child.name}") for child in spec.children]
        self.by_name: dict[str, Node] = {node.name: node for node in self.children}
        self.dynamic: set[str] = set()
        self.history: tuple[float, ...] = ()
        self.exits: deque[Node] = deque()
        self.nursery: trio.Nursery | None = None
        self.stop_requested = False
        self.drain_on_stop = True
        self._wakeup = trio.Event()
        # The initial children of this incarnation not yet running: it runs once there are none.
        self.coming_up: set[Node] = set()
        # Set (and replaced) whenever this supervisor comes up, ends an incarnation or retires: a spawn
        # waiting for it to take children looks again then.
        self._changed = trio.Event()

    # -- what children and the parent call ----------------------------------------------------------
    def child_exited(self, child: Node) -> None:
        if child.stop_by_parent:
            return  # the stop was ours: the code that asked for it is waiting on wait_stopped()
        self.exits.append(child)
        self._wakeup.set()

    def child_up(self, child: Node) -> None:
        coming_up = self.coming_up
        if coming_up:
            coming_up.discard(child)
            if not coming_up and self.state == "starting":
                self._up()

    def _up(self) -> None:
        self.state = "running"
        self.system.publish(Started, self.path, attempt=self.restarts or None)
        self._notify()
        self._came_up()

    def takes_children(self) -> bool:
        """Running (or starting, for a spawn from inside it): a new child can start now."""
        if self.nursery is None or self.stop_requested:
            return False
        if self.state == "running":
            return True
        # Starting: a spawn from inside this supervisor (say, a child's started() hook) goes ahead,
        # since the supervisor is waiting for that very child and waiting for it back would hang.
        nursery: trio.Nursery | None = trio.lowlevel.current_task().parent_nursery
        while nursery is not None:
            if nursery is self.nursery:
                return True
            nursery = nursery.parent_task.parent_nursery
        return False

    def _notify(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def request_stop(self, *, drain: bool) -> None:
        if self.nursery is None and self.scope is not None:
            self.scope.cancel()  # still waiting out a restart delay: nothing runs yet
            return
        self.stop_requested = True
        self.drain_on_stop = drain
        self._wakeup.set()

    def child(self, name: str) -> Node | None:
        return self.by_name.get(name)

    async def wait_takes_children(self) -> None:
        """Wait while this supervisor is starting or between restarts; raise if it stops or gives up."""
        while not self.takes_children():
            if not self.alive:
                raise RuntimeError(f"cannot spawn under {self.path!r}: the supervisor has stopped")
            if self.nursery is not None and self.stop_requested:
                raise RuntimeError(f"cannot spawn under {self.path!r}: the supervisor is shutting down")
            if self.state == "failed":
                cause = self.last_failure.message if self.last_failure else "restart intensity exceeded"
                raise RuntimeError(f"cannot spawn under {self.path!r}: the supervisor gave up ({cause})")
            await self._changed.wait()

    def add_child(self, spec: ChildSpec | Supervisor) -> Node:
        """Start a child now; the caller made sure this supervisor ``takes_children()``."""
        assert self.nursery is not None, "add_child() before the supervisor takes children"
        existing = self.child(spec.name)
        if existing is not None and existing.alive:
            raise ValueError(f"{self.path!r} already has a child named {spec.name!r}")
        if existing is not None:
            self.children.remove(existing)
        node = build_node(self.system, self, spec, f"{self.path}/{spec.name}")
        self.children.append(node)
        self.by_name[node.name] = node
        self.dynamic.add(spec.name)
        node.start(self.nursery, 0.0)
        return node

    # -- the incarnation --------------------------------------------------------------------------
    async def _incarnation(self) -> tuple[ExitReason, BaseException | None]:
        self.started_at = trio.current_time()
        self.state = "starting"  # until every initial child runs (it was "restarting" during a delay)
        self.stop_requested = False
        self.exits.clear()
        # A new incarnation is a new supervisor (as in OTP): its failed predecessor's restarts don't count.
        self.history = ()
        outcome: tuple[ExitReason, BaseException | None] = ("normal", None)
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self.coming_up = set(self.children)
                for node in self.children:
                    node.revive()
                    node.start(nursery, 0.0)
                if not self.coming_up:
                    self._up()
                outcome = await self._supervise()
        finally:
            self.nursery = None
            self.coming_up = set()
            self._notify()
        return outcome

    async def _supervise(self) -> tuple[ExitReason, BaseException | None]:
        while True:
            if self.stop_requested:
                self.state = "stopping"
                await self._stop_children(list(self.children), drain=self.drain_on_stop, finalize=self.drain_on_stop)
                return "normal", None
            if self.exits:
                gave_up = await self._handle_exit(self.exits.popleft())
                if gave_up is not None:
                    return "crash", gave_up
                continue
            self._wakeup = trio.Event()
            await self._wakeup.wait()

    async def _handle_exit(self, child: Node) -> SupervisorGaveUp | None:
        reason, error = child.exit_reason, child.exit_error
        if reason == "crash" and error is not None and child.last_failure is None:
            child.record_failure(error)
        restart = restart_type_of(child)
        now = trio.current_time()
        decision = decide_restart(restart, reason, history=self.history, now=now, ran_for=now - child.started_at,
                                  consecutive=child.consecutive, limits=self.spec, jitter=self.system.jitter())
        if decision.action == "retire":
            self._retire(child, "normal exit" if reason == "normal" else f"crashed ({restart}: not restarted)")
            return None
        self.history = decision.history
        if decision.action == "give_up":
            return await self._give_up(error)
        child.consecutive = decision.consecutive
        if self.spec.strategy == "one_for_one":
            members = [child]  # the common case stays O(1) however many siblings there are
        else:
            live = [node for node in self.children if node.alive]
            group = set(restart_group(self.spec.strategy, [node.name for node in live], child.name))
            members = [node for node in live if node.name in group]
        # KERNEL.md: a group restart cancels the other members (no draining, no stopping()); their
        # mailboxes survive, so what was queued goes to the next incarnation.
        for node in reversed(members):
            if node is not child:
                await self._cancel_child(node)
        assert self.nursery is not None
        for node in members:
            if node is not child and restart_type_of(node) == "temporary":
                self._retire(node, "stopped by a group restart (temporary: not restarted)")
                continue
            node.restarts += 1
            self.system.publish(Restarted, node.path, attempt=decision.attempt, delay=decision.delay)
            node.start(self.nursery, decision.delay)
        return None

    async def _give_up(self, error: BaseException | None) -> SupervisorGaveUp:
        spec = self.spec
        failure = SupervisorGaveUp(self.path, spec.max_restarts, spec.within, error)
        if error is not None:
            failure.__cause__ = error
        self.state = "stopping"
        await self._stop_children(list(self.children), drain=False, finalize=False)
        self.record_failure(failure)
        self.state = "failed"
        self.system.publish(GaveUp, self.path, error=failure)
        return failure

    def _retire(self, child: Node, detail: str) -> None:
        child.finalize(detail)
        self.child_up(child)  # it will not come up: starting no longer waits for it
        if child.name in self.dynamic:
            self.children.remove(child)
            self.dynamic.discard(child.name)
            if self.by_name.get(child.name) is child:
                del self.by_name[child.name]

    async def _stop_children(self, nodes: list[Node], *, drain: bool, finalize: bool) -> None:
        """Stop ``nodes`` one by one in reverse start order, each within its shutdown timeout."""
        for node in reversed(nodes):
            await self._stop_child(node, drain=drain)
            if finalize and node.alive:
                node.finalize("supervisor shut down")

    async def _cancel_child(self, node: Node) -> None:
        if node in self.exits:
            self.exits.remove(node)
        if not node.active:
            return
        node.stop_by_parent = True
        if node.scope is not None:
            node.scope.cancel()
        await node.wait_stopped()

    async def _stop_child(self, node: Node, *, drain: bool) -> None:
        if node in self.exits:
            self.exits.remove(node)  # its exit report is superseded by this stop
        if not node.active:
            return
        node.stop_by_parent = True
        node.request_stop(drain=drain)
        with trio.move_on_after(node.shutdown_timeout):
            await node.wait_stopped()
        if node.active:
            if node.scope is not None:
                node.scope.cancel()
            await node.wait_stopped()

    # -- lifecycle of the node itself --------------------------------------------------------------
    def finalize(self, detail: str) -> None:
        for node in self.children:
            if node.alive:
                node.finalize(detail)
        failed = self.state == "failed"
        super().finalize(detail)
        if failed:
            self.state = "failed"
        self.system.publish(Stopped, self.path, detail=detail)
        self._notify()

    def revive(self) -> None:
        super().revive()
        self.stop_requested = False

    def snapshot(self) -> NodeSnapshot:
        return replace(super().snapshot(), children=tuple(child.snapshot() for child in self.children),
                       strategy=self.spec.strategy)
