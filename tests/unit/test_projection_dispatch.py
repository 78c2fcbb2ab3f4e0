"""How the dispatcher plans a round (pure): which handlers have nothing to do for an event (skips), which run it
in memory, which wait in memory for a dependency, which become pending checkpoints, and which events finish
without any handler's work."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from actors.projection import (
    HandlerConfig,
    HandlerGate,
    Route,
    chunk_ranges,
    default_projections,
    dependency_order,
    find_skips,
    plan_dispatch,
    skip_ranges,
)
from storage import OutboxEvent

T = datetime(2026, 11, 24, tzinfo=UTC)


def route(name: str, depends_on: str | None = None, types: tuple[str, ...] = ("health.samples.changed",)) -> Route:
    return Route(name=name, depends_on=depends_on, subscribes=lambda t: t in types, worker=f"workers/{name}",
                 gate=HandlerGate(name, HandlerConfig()))


def event(ident: int, type_: str = "health.samples.changed", user: str = "alice", **payload: object) -> OutboxEvent:
    body = {"watermark": {"from": ident - 1, "to": ident}, **payload}
    return OutboxEvent(ident, user, type_, body, f"h{ident}", None, "processing", 1, T, "me", T, None, T, T,
                       f"req-{ident}")


def keys(*metrics: str) -> list[dict[str, str]]:
    return [{"metric": m, "date": "2026-11-24"} for m in metrics]


ROUTES = dependency_order([route("impact_by_product", depends_on="impact"), route("rollups"), route("impact")])


def test_dependencies_come_first_and_a_cycle_is_refused() -> None:
    assert [r.name for r in ROUTES] == ["impact", "impact_by_product", "rollups"]
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        dependency_order([route("a", depends_on="b"), route("b", depends_on="a")])


def test_ready_handlers_run_in_memory_and_a_dependent_waits_there_for_its_dependency() -> None:
    plan = plan_dispatch([event(1), event(2)], ROUTES, frozenset({"rollups", "impact", "impact_by_product"}))
    assert {h: [r.event_id for r in rows] for h, rows in plan.run.items()} == {"impact": [1, 2], "rollups": [1, 2]}
    assert plan.store == [] and plan.finished == []
    waiting = plan.hold[1]["impact"]
    assert [(r.handler, r.depends_on, r.wm_from, r.wm_to, r.correlation_id) for r in waiting] == [
        ("impact_by_product", "impact", 0, 1, "req-1")]


def test_a_handler_that_is_not_ready_becomes_a_pending_checkpoint_with_its_dependents_behind_it() -> None:
    plan = plan_dispatch([event(1)], ROUTES, frozenset({"rollups", "impact_by_product"}))
    assert [r.event_id for r in plan.run["rollups"]] == [1] and "impact" not in plan.run
    # impact is stored, so its dependent waits for that row (depends_on kept), even though it is ready itself.
    assert [(r.handler, r.depends_on) for r in plan.store] == [("impact", None), ("impact_by_product", "impact")]
    assert plan.hold == {} and plan.finished == []


def test_an_event_nothing_runs_in_memory_is_finished_in_the_rounds_transaction() -> None:
    plan = plan_dispatch([event(1), event(2, "user.unknown")], ROUTES, frozenset())
    assert plan.run == {} and plan.hold == {}
    assert [(r.event_id, r.handler) for r in plan.store] == [(1, "impact"), (1, "impact_by_product"),
                                                             (1, "rollups")]
    assert plan.finished == [1, 2]  # event 2: no handler subscribes; event 1: all its work is stored


# --- skips: what the default projections have nothing to do for -------------------------------------------
DEFAULT = dependency_order([Route(name=p.name, depends_on=p.depends_on, subscribes=p.subscribes,
                                  worker=f"workers/{p.name}", gate=HandlerGate(p.name, HandlerConfig()),
                                  concerns=getattr(p, "concerns", None)) for p in default_projections()])


def skipped(*events: OutboxEvent) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {e.id: set() for e in events}
    for skip in find_skips(events, DEFAULT):
        out[skip.event_id].add(skip.handler)
    return out


def test_each_default_projection_skips_exactly_the_events_that_cannot_change_it() -> None:
    steps, sleep, heart = event(1, keys=keys("steps")), event(2, keys=keys("sleep_stage")), event(3, keys=keys("heart_rate"))
    assert skipped(steps, sleep, heart) == {
        1: {"sleep_nights", "session_impact", "product_impact"},
        2: {"daily_rollups", "session_impact", "product_impact"},  # sleep stages have nights, not rollups
        3: {"sleep_nights"},  # heart rate: a rollup, and the sessions around it
    }
    # Nothing named (a full recompute), a malformed key, a settings change: every handler has work.
    assert skipped(event(4), event(5, keys=[{"metric": "steps"}]), event(6, "user.settings.changed")) == {
        4: set(), 5: set(), 6: set()}
    # A session entity changed: only the session read models; another entity: none of them.
    session = event(7, "sync.entity.changed", entityType="consumption_session", entityId="s1")
    other = event(8, "sync.entity.changed", entityType="product", entityId="p1")
    assert skipped(session, other) == {7: set(), 8: {"session_impact", "product_impact"}}


def test_a_skip_carries_the_events_range_and_a_route_without_a_judgement_never_skips() -> None:
    first = find_skips([event(5, keys=keys("steps"))], DEFAULT)[0]
    assert (first.event_id, first.user_id, first.wm, first.correlation_id) == (5, "alice", (4, 5), "req-5")
    bare = OutboxEvent(9, "bob", "health.samples.changed", {"keys": keys("steps")}, "h9", None, "processing", 1, T,
                       "me", T, None, T, T, None)
    assert {k.wm for k in find_skips([bare], DEFAULT)} == {None}  # no range: done as it stands
    assert find_skips([event(1, keys=keys("steps"))], ROUTES) == []  # no ``concerns``: every event is theirs


def test_a_dependent_of_a_skipped_dependency_runs_in_memory_and_an_all_skipped_event_finishes() -> None:
    routes = dependency_order([route("impact_by_product", depends_on="impact"), route("impact")])
    plan = plan_dispatch([event(1), event(2)], routes, frozenset({"impact", "impact_by_product"}),
                         skipped=frozenset({(1, "impact"), (2, "impact"), (2, "impact_by_product")}))
    assert {h: [r.event_id for r in rows] for h, rows in plan.run.items()} == {"impact_by_product": [1]}
    assert plan.run["impact_by_product"][0].depends_on is None and plan.hold == {}
    assert plan.store == [] and plan.finished == [2]
    # Not ready: stored without a dependency row to wait for (the skipped one has none).
    plan = plan_dispatch([event(1)], routes, frozenset(), skipped=frozenset({(1, "impact")}))
    assert [(r.handler, r.depends_on) for r in plan.store] == [("impact_by_product", None)]


def test_skip_ranges_group_per_handler_and_user_and_chunk_within_a_size() -> None:
    skips = find_skips([event(1, keys=keys("steps")), event(2, keys=keys("steps")),
                        event(3, user="bob", keys=keys("steps"))], DEFAULT)
    ranges = skip_ranges(skips)
    assert ranges["sleep_nights"] == {"alice": [(0, 1), (1, 2)], "bob": [(2, 3)]}
    assert set(ranges) == {"sleep_nights", "session_impact", "product_impact"}
    pieces = chunk_ranges(ranges, 4)
    assert [sum(len(users) for users in p.values()) for p in pieces] == [4, 2]
    assert {(h, u) for p in pieces for h, users in p.items() for u in users} == {
        (h, u) for h, users in ranges.items() for u in users}
