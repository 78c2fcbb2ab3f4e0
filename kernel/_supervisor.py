"""The supervisor runtime: starts children in order, decides restarts, stops in reverse order.

Decisions come from ``_policy`` (pure); this module is the thin shell that applies them. The
supervisor handles one child exit at a time, in the order they happened, like OTP's supervisor.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import trio

from ._errors import SupervisorGaveUp
from ._node import Node
from ._policy import (
    ExitReason,
    RestartType,
    backoff_delay,
    consecutive_restarts,
    record_restart,
    restart_group,
    should_restart,
)
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
    from ._cell import Cell
    from ._keyed import KeyedNode

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

    # -- what children and the parent call ----------------------------------------------------------
    def child_exited(self, child: Node) -> None:
        if child.stop_by_parent:
            return  # the stop was ours: the code that asked for it is waiting on child.done
        self.exits.append(child)
        self._wakeup.set()

    def request_stop(self, *, drain: bool) -> None:
        if self.nursery is None and self.scope is not None:
            self.scope.cancel()  # still waiting out a restart delay: nothing runs yet
            return
        self.stop_requested = True
        self.drain_on_stop = drain
        self._wakeup.set()

    def child(self, name: str) -> Node | None:
        return self.by_name.get(name)

    def add_child(self, spec: ChildSpec | Supervisor) -> Node:
        if self.nursery is None or self.stop_requested:
            raise RuntimeError(
                f"cannot spawn under {self.path!r}: the supervisor is {self.state}, not running"
            )
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
        self.stop_requested = False
        self.exits.clear()
        # A new incarnation is a new supervisor (as in OTP): its failed predecessor's restarts don't count.
        self.history = ()
        outcome: tuple[ExitReason, BaseException | None] = ("normal", None)
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                for node in self.children:
                    node.revive()
                    node.start(nursery, 0.0)
                self.state = "running"
                self.system.publish(Started, self.path, attempt=self.restarts or None)
                if self.parent is None:
                    self.system._root_up.set()
                outcome = await self._supervise()
        finally:
            self.nursery = None
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
        if not should_restart(restart, reason):
            self._retire(child, "normal exit" if reason == "normal" else f"crashed ({restart}: not restarted)")
            return None
        now = trio.current_time()
        spec = self.spec
        self.history, exceeded = record_restart(self.history, now, max_restarts=spec.max_restarts, within=spec.within)
        if exceeded:
            return await self._give_up(error)
        attempt = consecutive_restarts(child.consecutive, now - child.started_at, spec.reset_after)
        delay = backoff_delay(
            attempt, base_delay=spec.base_delay, max_delay=spec.max_delay, jitter=self.system.jitter()
        )
        child.consecutive = attempt + 1
        if spec.strategy == "one_for_one":
            members = [child]  # the common case stays O(1) however many siblings there are
        else:
            live = [node for node in self.children if node.alive]
            group = set(restart_group(spec.strategy, [node.name for node in live], child.name))
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
            self.system.publish(Restarted, node.path, attempt=attempt + 1, delay=delay)
            node.start(self.nursery, delay)
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
        if node.done.is_set():
            return
        node.stop_by_parent = True
        if node.scope is not None:
            node.scope.cancel()
        await node.done.wait()

    async def _stop_child(self, node: Node, *, drain: bool) -> None:
        if node in self.exits:
            self.exits.remove(node)  # its exit report is superseded by this stop
        if node.done.is_set():
            return
        node.stop_by_parent = True
        node.request_stop(drain=drain)
        with trio.move_on_after(node.shutdown_timeout):
            await node.done.wait()
        if not node.done.is_set():
            if node.scope is not None:
                node.scope.cancel()
            await node.done.wait()

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

    def revive(self) -> None:
        super().revive()
        self.stop_requested = False

    def tree(self) -> dict[str, Any]:
        node = super().tree()
        node["children"] = [child.tree() for child in self.children]
        node["strategy"] = self.spec.strategy
        return node
