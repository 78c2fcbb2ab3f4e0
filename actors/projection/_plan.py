"""The dispatcher's decisions, pure: which handlers an event is for, which have nothing to do for it (skips),
which run it in memory, wait there for a dependency or become pending checkpoints (``plan_dispatch``), and the
order dependencies impose. ``_dispatcher`` is the trio shell around them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from storage import CheckpointIn, OutboxEvent

from ._work import EventDigest, UserWork, event_work
from ._worker import HandlerGate


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """A handler as the dispatcher sees it; ``worker`` is the worker's path relative to the dispatcher's
    supervisor (refs exist only once the system runs)."""

    name: str
    depends_on: str | None
    subscribes: Callable[[str], bool]
    worker: str
    gate: HandlerGate
    # ``Projection.concerns``: False when an event cannot change the read model (None: every event can).
    concerns: Callable[[UserWork], bool] | None = None


def watermark_range(payload: Any) -> tuple[int | None, int | None]:
    """The (from, to] watermark range an event's payload names, or (None, None)."""
    mark = payload.get("watermark") if isinstance(payload, Mapping) else None
    if isinstance(mark, Mapping) and isinstance(mark.get("from"), int) and isinstance(mark.get("to"), int):
        return int(mark["from"]), int(mark["to"])
    return None, None


def dependency_order(routes: Sequence[Route]) -> tuple[Route, ...]:
    """``routes`` with every dependency before its dependents (stable otherwise); a cycle is refused."""
    by_name = {r.name: r for r in routes}
    ordered: list[Route] = []
    placed: set[str] = set()

    def place(route: Route, path: tuple[str, ...]) -> None:
        if route.name in placed:
            return
        if route.name in path:
            raise ValueError(f"projection handlers depend on each other in a cycle: {' -> '.join(path + (route.name,))}")
        dep = by_name.get(route.depends_on) if route.depends_on else None
        if dep is not None:
            place(dep, path + (route.name,))
        placed.add(route.name)
        ordered.append(route)

    for route in routes:
        place(route, ())
    return tuple(ordered)


@dataclass(frozen=True, slots=True, kw_only=True)
class Skip:
    """An event a handler has nothing to do for: done once the handler's watermark is advanced over ``wm``
    (None: the event carries no range, so it is done as it stands)."""

    event_id: int
    handler: str
    user_id: str
    wm: tuple[int, int] | None
    correlation_id: str | None


def find_skips(events: Sequence[OutboxEvent], routes: Sequence[Route]) -> list[Skip]:
    """The subscribed (event, handler) pairs whose handler says the event cannot change its read model
    (``Route.concerns``). Pure."""
    found: list[Skip] = []
    judged = [route for route in routes if route.concerns is not None]
    if not judged:
        return found
    for event in events:
        asks: UserWork | None = None
        wm: tuple[int, int] | None = None
        for route in judged:
            if not route.subscribes(event.type):
                continue
            if asks is None:
                asks = event_work(EventDigest(event_id=event.id, type=event.type, payload=event.payload),
                                  event.user_id)
                wm_from, wm_to = watermark_range(event.payload)
                wm = (wm_from, wm_to) if wm_from is not None and wm_to is not None and wm_to > wm_from else None
            assert route.concerns is not None
            if not route.concerns(asks):
                found.append(Skip(event_id=event.id, handler=route.name, user_id=event.user_id, wm=wm,
                                  correlation_id=event.correlation_id))
    return found


def skip_ranges(skips: Sequence[Skip]) -> dict[str, dict[str, list[tuple[int, int]]]]:
    """handler -> user -> the watermark ranges to advance over. Pure."""
    ranges: dict[str, dict[str, list[tuple[int, int]]]] = {}
    for skip in skips:
        if skip.wm is not None:
            ranges.setdefault(skip.handler, {}).setdefault(skip.user_id, []).append(skip.wm)
    return ranges


def chunk_ranges(ranges: Mapping[str, Mapping[str, list[tuple[int, int]]]], size: int
                 ) -> list[dict[str, dict[str, list[tuple[int, int]]]]]:
    """``ranges`` (handler -> user -> ranges) in pieces of at most ``size`` (handler, user) pairs. Pure."""
    pieces: list[dict[str, dict[str, list[tuple[int, int]]]]] = [{}]
    count = 0
    for handler, users in ranges.items():
        for user, pairs in users.items():
            if count == size:
                pieces.append({})
                count = 0
            pieces[-1].setdefault(handler, {})[user] = pairs
            count += 1
    return [p for p in pieces if p]


@dataclass(frozen=True, slots=True)
class Plan:
    """What a round does with the events it claimed (see ``plan_dispatch``)."""

    run: dict[str, list[CheckpointIn]]  # per handler: run in memory now
    hold: dict[int, dict[str, list[CheckpointIn]]]  # per event, per dependency running in memory: dependents' rows
    store: list[CheckpointIn]  # checkpoints to create pending
    finished: list[int]  # events nothing runs in memory: complete them in the round's transaction


def plan_dispatch(events: Sequence[OutboxEvent], routes: Sequence[Route], ready: frozenset[str],
                  skipped: frozenset[tuple[int, str]] = frozenset()) -> Plan:
    """Each event's work per subscribed handler (``routes`` in ``dependency_order``). Pure.

    A (event, handler) pair in ``skipped`` has nothing to do (``find_skips``): done as far as its dependents
    go. A handler in ``ready`` whose
    dependency is none or skipped runs in memory; a dependent whose dependency runs in memory waits for it in
    memory (handed over or stored when it reports); anything else becomes a pending checkpoint, with its
    ``depends_on`` when the dependency is stored too."""
    run: dict[str, list[CheckpointIn]] = {}
    hold: dict[int, dict[str, list[CheckpointIn]]] = {}
    store: list[CheckpointIn] = []
    finished: list[int] = []
    for event in events:
        wm_from, wm_to = watermark_range(event.payload)
        in_memory: set[str] = set()
        done: set[str] = set()
        for route in routes:
            if not route.subscribes(event.type):
                continue
            if (event.id, route.name) in skipped:
                done.add(route.name)
                continue
            dependency = route.depends_on if route.depends_on not in done else None
            row = CheckpointIn(event_id=event.id, handler=route.name, user_id=event.user_id, event_type=event.type,
                               depends_on=dependency, wm_from=wm_from, wm_to=wm_to,
                               correlation_id=event.correlation_id)
            if dependency is not None and dependency in in_memory:
                hold.setdefault(event.id, {}).setdefault(dependency, []).append(row)
                in_memory.add(route.name)
            elif dependency is None and route.name in ready:
                run.setdefault(route.name, []).append(row)
                in_memory.add(route.name)
            else:
                store.append(row)
        if not in_memory:
            finished.append(event.id)
    return Plan(run=run, hold=hold, store=store, finished=finished)


__all__ = ["Plan", "Route", "Skip", "chunk_ranges", "dependency_order", "find_skips", "plan_dispatch", "skip_ranges",
           "watermark_range"]
