"""The session read models' pure parts: a session's facts, its heart-rate windows and deltas, per-product
averages, when a session is stale, and how sync changes become a handler's work."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from actors.projection import (
    SAMPLES_CHANGED,
    SETTINGS_CHANGED,
    SYNC_ENTITY_CHANGED,
    EventDigest,
    RollupSample,
    decide_freshness,
    ended,
    group_work,
    is_stale,
    product_impacts,
    session_facts,
    session_impact,
    window_stats,
)
from storage import Checkpoint, SessionImpact

S = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
E = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
DATA = {"status": "ended", "startAt": "2026-11-24T10:00:00Z", "endAt": "2026-11-24T11:00:00+00:00",
        "productId": "p1"}


def hr(at: datetime, value: float, source: str = "watch") -> RollupSample:
    return RollupSample(source, at, at, value)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


# -- facts --------------------------------------------------------------------------------------------------
def test_facts_read_the_session_data_and_ignore_what_they_cannot_read() -> None:
    facts = session_facts("s1", DATA)
    assert (facts.status, facts.product_id, facts.start_at, facts.end_at) == ("ended", "p1", S, E)
    assert facts.span == (S - minutes(60), E + minutes(60))
    odd = session_facts("s2", {"status": 3, "startAt": "2026-11-24T10:00:00", "endAt": "yesterday", "productId": ""})
    assert (odd.status, odd.product_id, odd.start_at, odd.end_at, odd.span) == (None, None, None, None, None)
    assert session_facts("s3", ["not", "an", "object"]).span is None
    no_end = session_facts("s4", {"startAt": "2026-11-24T10:00:00Z"})
    assert no_end.span == (S - minutes(60), S)
    backwards = session_facts("s5", {"startAt": "2026-11-24T10:00:00Z", "endAt": "2026-11-24T09:00:00Z"})
    assert backwards.span == (S - minutes(60), S)


# -- one session ------------------------------------------------------------------------------------------
def test_windows_are_the_hour_before_the_session_and_the_hour_after_with_exact_boundaries() -> None:
    samples = [
        hr(S - minutes(61), 500),  # before the hour before: not counted
        hr(S - minutes(60), 60), hr(S - minutes(1), 70),  # before: [S - 1 h, S)
        hr(S, 100), hr(S + minutes(30), 110), hr(E, 120),  # during: [S, E]
        hr(E + minutes(1), 90), hr(E + minutes(60), 80),  # after: (E, E + 1 h]
        hr(E + minutes(61), 500),  # past the hour after: not counted
    ]
    impact = session_impact("u", session_facts("s1", DATA), samples)
    assert impact is not None
    assert impact.stats["before"] == {"avg": 65.0, "min": 60.0, "max": 70.0, "count": 2}
    assert impact.stats["during"] == {"avg": 110.0, "min": 100.0, "max": 120.0, "count": 3}
    assert impact.stats["after"] == {"avg": 85.0, "min": 80.0, "max": 90.0, "count": 2}
    assert impact.delta_during == 45.0 and impact.delta_after == 20.0
    assert (impact.window_from, impact.window_to) == (S - minutes(60), E + minutes(60))
    assert (impact.product_id, impact.status) == ("p1", "ended")


def test_deltas_are_null_without_data_on_either_side_and_the_order_of_samples_does_not_matter() -> None:
    facts = session_facts("s1", DATA)
    only_during = session_impact("u", facts, [hr(S + minutes(5), 100)])
    assert only_during is not None
    assert only_during.stats["before"] == window_stats([]) == {"avg": None, "min": None, "max": None, "count": 0}
    assert only_during.delta_during is None and only_during.delta_after is None
    samples = [hr(S - minutes(10), 60), hr(S + minutes(10), 90), hr(S + minutes(20), 95, "phone")]
    forward = session_impact("u", facts, samples)
    backward = session_impact("u", facts, list(reversed(samples)))
    assert forward == backward and forward is not None
    assert forward.delta_during == pytest.approx(32.5) and forward.delta_after is None


def test_a_session_without_a_start_has_no_impact_and_without_an_end_only_before() -> None:
    assert session_impact("u", session_facts("s", {"status": "active"}), [hr(S, 1)]) is None
    impact = session_impact("u", session_facts("s", {"status": "active", "startAt": "2026-11-24T10:00:00Z"}),
                            [hr(S - minutes(5), 70), hr(S + minutes(5), 100)])
    assert impact is not None and impact.end_at is None
    assert impact.stats["before"]["count"] == 1
    assert impact.stats["during"]["count"] == 0 and impact.stats["after"]["count"] == 0


# -- products ---------------------------------------------------------------------------------------------
def impact(session: str, product: str | None, status: str, before: float | None, during: float | None,
           count: int = 1) -> SessionImpact:
    def stats(value: float | None) -> dict[str, float | int | None]:
        return window_stats([value] * count if value is not None else [])
    windows = {"before": stats(before), "during": stats(during), "after": stats(None)}
    delta = during - before if during is not None and before is not None else None
    return SessionImpact("u", session, product, status, S, E, S, E, windows, delta, None)


def test_products_average_their_ended_sessions_only() -> None:
    rows = product_impacts("u", [
        impact("a", "p1", "ended", 60, 100, count=3),
        impact("b", "p1", "ended", 80, 90),
        impact("c", "p1", "ended", None, 70),  # no before: its delta does not count, its during does
        impact("d", "p1", "active", 0, 1000),  # not ended
        impact("e", None, "ended", 0, 1000),  # no product
        impact("f", "p0", "ended", None, None),
    ])
    assert [(r.product_id, r.sessions) for r in rows] == [("p0", 1), ("p1", 3)]
    p0, p1 = rows
    assert p0.stats["during"] == {"avg": None, "min": None, "max": None, "count": 0}
    assert p0.delta_during is None and p0.delta_after is None
    assert p1.stats["before"] == {"avg": 70.0, "min": 60.0, "max": 80.0, "count": 4}
    assert p1.stats["during"] == {"avg": pytest.approx(260 / 3), "min": 70.0, "max": 100.0, "count": 5}
    assert p1.delta_during == pytest.approx((40 + 10) / 2)
    assert product_impacts("u", []) == []


# -- staleness --------------------------------------------------------------------------------------------
def test_a_session_is_stale_only_while_active_an_hour_past_its_end() -> None:
    active = {**DATA, "status": "active"}
    assert not is_stale(active, E + minutes(59))
    assert is_stale(active, E + minutes(60))
    assert is_stale(active, E + minutes(10), grace=minutes(10))
    assert not is_stale({**active, "status": "paused"}, E + minutes(600))
    assert not is_stale({**active, "status": "ended"}, E + minutes(600))
    assert not is_stale({"status": "active", "startAt": "2026-11-24T10:00:00Z"}, E + minutes(600))
    assert not is_stale(None, E)
    assert ended(active) == {**active, "status": "ended"}


# -- work ---------------------------------------------------------------------------------------------------
def cp(event_id: int, user: str = "u") -> Checkpoint:
    now = datetime(2026, 11, 24, tzinfo=UTC)
    return Checkpoint(event_id, "session_impact", user, "x", None, None, None, None, "processing", 1, now, "me", now,
                      None, now, now)


def test_sync_changes_name_their_entities_and_anything_unreadable_means_everything() -> None:
    events = {
        1: EventDigest(event_id=1, type=SYNC_ENTITY_CHANGED, payload={"entityType": "consumption_session",
                                                                      "entityId": "s1"}),
        2: EventDigest(event_id=2, type=SAMPLES_CHANGED, payload={"keys": [{"metric": "heart_rate",
                                                                            "date": "2026-11-24"}]}),
        3: EventDigest(event_id=3, type=SYNC_ENTITY_CHANGED, payload={"entityType": "goal", "entityId": "g"}),
        4: EventDigest(event_id=4, type=SYNC_ENTITY_CHANGED, payload={"entityId": "s1"}),
        5: EventDigest(event_id=5, type=SETTINGS_CHANGED, payload={}),
    }
    (work,) = group_work([cp(1), cp(2), cp(3)], events)
    assert not work.full
    assert work.entities == {("consumption_session", "s1"), ("goal", "g")}
    assert work.dates_of("heart_rate") == [date(2026, 11, 24)]
    for unreadable in (4, 5, 99):
        (work,) = group_work([cp(1), cp(unreadable)], events)
        assert work.full and work.entities == frozenset() and work.keys == frozenset()


def test_freshness_counts_unfinished_work_the_watermark_does_not() -> None:
    assert decide_freshness(watermark=3, projected=3, has_dead=False, retry_waiting=False,
                            held_back=False).status == "fresh"
    assert decide_freshness(watermark=3, projected=3, has_dead=False, retry_waiting=False, held_back=False,
                            unfinished=1).status == "computing"
    assert decide_freshness(watermark=3, projected=3, has_dead=True, retry_waiting=False, held_back=False,
                            unfinished=1).status == "failed"
    assert decide_freshness(watermark=3, projected=3, has_dead=False, retry_waiting=True, held_back=False,
                            unfinished=1).status == "stale"
