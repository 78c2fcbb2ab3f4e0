"""How the dispatcher plans a round (pure): which handlers run an event in memory, which wait in memory for a
dependency, which become pending checkpoints, and which events finish in the round's own transaction."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from actors.projection import HandlerConfig, HandlerGate, Route, dependency_order, plan_dispatch
from storage import OutboxEvent

T = datetime(2026, 11, 24, tzinfo=UTC)


def route(name: str, depends_on: str | None = None, types: tuple[str, ...] = ("health.samples.changed",)) -> Route:
    return Route(name=name, depends_on=depends_on, subscribes=lambda t: t in types, worker=f"workers/{name}",
                 gate=HandlerGate(name, HandlerConfig()))


def event(ident: int, type_: str = "health.samples.changed", user: str = "alice") -> OutboxEvent:
    return OutboxEvent(ident, user, type_, {"watermark": {"from": ident - 1, "to": ident}}, f"h{ident}", None,
                       "processing", 1, T, "me", T, None, T, T, f"req-{ident}")


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
