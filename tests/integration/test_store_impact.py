"""The session read models' storage contract (``tx.session_impacts``, ``tx.product_impacts``, ``tx.sessions``),
run against SQLite and the real PostgreSQL (see conftest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from storage import InvalidData, ProductImpact, SessionImpact, Store, SyncEntity
from tests.impact_helpers import put_entity, put_session

T = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
STATS = {"before": {"avg": 60.0, "min": 50.0, "max": 70.0, "count": 2},
         "during": {"avg": None, "min": None, "max": None, "count": 0},
         "after": {"avg": 80.0, "min": 80.0, "max": 80.0, "count": 1}}


def impact(session: str, *, user: str = "u1", start: datetime = T, product: str | None = "p1",
           status: str = "ended", delta: float | None = 5.0) -> SessionImpact:
    return SessionImpact(user, session, product, status, start, start + H, start - H, start + 2 * H, STATS, delta,
                         None)


async def test_session_impacts_round_trip_replace_and_drop(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.commit(tx.session_impacts.write("u1", [impact("a"), impact("b", product=None),
                                                        impact("c", status="active")]),
                        tx.session_impacts.write("u2", [impact("a", user="u2", delta=None)]))
    async with store.transaction(readonly=True) as tx:
        a, missing, other, ended = await tx.run(
            tx.session_impacts.get("u1", "a"), tx.session_impacts.get("u1", "zzz"), tx.session_impacts.get("u2", "a"),
            tx.session_impacts.ended_with_product("u1"))
    assert a == impact("a") and missing is None and other == impact("a", user="u2", delta=None)
    assert [i.session_id for i in ended] == ["a"]  # b has no product, c is not ended
    async with store.transaction() as tx:
        await tx.commit(tx.session_impacts.write("u1", [impact("b", delta=-1.5)], drop=["a", "never-there"]))
    async with store.transaction(readonly=True) as tx:
        gone, b, theirs = await tx.run(tx.session_impacts.get("u1", "a"), tx.session_impacts.get("u1", "b"),
                                       tx.session_impacts.get("u2", "a"))
    assert gone is None and b is not None and b.delta_during == -1.5 and b.product_id == "p1" and theirs is not None
    async with store.transaction() as tx:
        await tx.commit(tx.session_impacts.write("u1", [impact("z")], replace_all=True))
    async with store.transaction(readonly=True) as tx:
        b_after, c_after, z = await tx.run(tx.session_impacts.get("u1", "b"), tx.session_impacts.get("u1", "c"),
                                           tx.session_impacts.get("u1", "z"))
    assert b_after is None and c_after is None and z is not None


async def test_covering_finds_the_sessions_whose_window_overlaps(store: Store) -> None:
    async with store.transaction() as tx:  # windows: [T-1h, T+2h] and [T+9h, T+12h]
        await tx.commit(tx.session_impacts.write("u1", [impact("early"), impact("late", start=T + 10 * H)]),
                        tx.session_impacts.write("u2", [impact("theirs", user="u2")]))
    async with store.transaction(readonly=True) as tx:
        results = await tx.run(
            tx.session_impacts.covering("u1", [(T - 3 * H, T - H)]),  # ends where "early" begins: [from, to)
            tx.session_impacts.covering("u1", [(T - 3 * H, T - H + timedelta(microseconds=1))]),
            tx.session_impacts.covering("u1", [(T + 2 * H, T + 3 * H)]),  # starts where "early" ends: inclusive
            tx.session_impacts.covering("u1", [(T + 3 * H, T + 9 * H)]),
            tx.session_impacts.covering("u1", [(T, T + H), (T + 11 * H, T + 30 * H)]),
            tx.session_impacts.covering("u1", []),
        )
    assert list(results) == [set(), {"early"}, {"early"}, set(), {"early", "late"}, set()]


async def test_started_within_reads_the_users_sessions_started_in_the_span_newest_first_bounded(
        store: Store) -> None:
    # started: T-1us (before the span), T, T+1h (twice: ties by session id), T+5h, T+24h (the span's end)
    async with store.transaction() as tx:
        await tx.commit(tx.session_impacts.write("u1", [
            impact("early", start=T - timedelta(microseconds=1)), impact("first", start=T),
            impact("b-tie", start=T + H), impact("a-tie", start=T + H, product=None, status="active"),
            impact("last", start=T + 5 * H), impact("edge", start=T + 24 * H)]),
            tx.session_impacts.write("u2", [impact("theirs", user="u2", start=T + H)]))
    async with store.transaction(readonly=True) as tx:
        everything, bounded, empty, theirs = await tx.run(
            tx.session_impacts.started_within("u1", T, T + 24 * H),
            tx.session_impacts.started_within("u1", T, T + 24 * H, limit=2),
            tx.session_impacts.started_within("u1", T + 6 * H, T + 6 * H),
            tx.session_impacts.started_within("u2", T, T + 24 * H))
    assert [i.session_id for i in everything] == ["last", "b-tie", "a-tie", "first"]
    assert everything[2] == impact("a-tie", start=T + H, product=None, status="active")
    assert [i.session_id for i in bounded] == ["last", "b-tie"]
    assert empty == [] and [i.session_id for i in theirs] == ["theirs"]
    async with store.transaction(readonly=True) as tx:
        with pytest.raises(InvalidData):
            tx.session_impacts.started_within("u1", T, T - H)  # ends before it starts
        with pytest.raises(InvalidData):
            tx.session_impacts.started_within("u1", T.replace(tzinfo=None), T + H)  # naive
        with pytest.raises(InvalidData):
            tx.session_impacts.started_within("u1", T, T + H, limit=0)


async def test_refuses_rows_of_another_user_and_bad_figures(store: Store) -> None:
    async with store.transaction() as tx:
        with pytest.raises(InvalidData):
            tx.session_impacts.write("u1", [impact("a", user="u2")])
        with pytest.raises(InvalidData):
            tx.session_impacts.write("u1", [impact("a", delta=float("nan"))])
        with pytest.raises(InvalidData):
            tx.product_impacts.replace_all("u1", [ProductImpact("u2", "p", 1, STATS, None, None)])
        with pytest.raises(InvalidData):
            tx.session_impacts.write("u1", [SessionImpact("u1", "a", None, "ended", T, None, T, T - H, STATS, None,
                                                          None)])


async def test_product_impacts_replace_the_users_whole_content(store: Store) -> None:
    rows = [ProductImpact("u1", "p1", 2, STATS, 1.0, None), ProductImpact("u1", "p2", 1, STATS, None, -2.0)]
    async with store.transaction() as tx:
        await tx.commit(tx.product_impacts.replace_all("u1", rows),
                        tx.product_impacts.replace_all("u2", [ProductImpact("u2", "p1", 5, STATS, None, None)]))
    async with store.transaction(readonly=True) as tx:
        mine, theirs = await tx.run(tx.product_impacts.list("u1"), tx.product_impacts.list("u2"))
    assert mine == rows and [p.sessions for p in theirs] == [5]
    async with store.transaction() as tx:
        await tx.commit(tx.product_impacts.replace_all("u1", rows[1:]))
    async with store.transaction(readonly=True) as tx:
        (mine,) = await tx.run(tx.product_impacts.list("u1"))
    assert mine == rows[1:]


async def test_active_sessions_across_users_in_pages(store: Store) -> None:
    for user, session, status in [("u2", "s1", "active"), ("u1", "s2", "active"), ("u1", "s1", "active"),
                                  ("u1", "s3", "ended"), ("u1", "s4", "paused"), ("u3", "s9", "active")]:
        await put_session(store, user, session, status=status)
    await put_session(store, "u3", "s9", status="active", deleted=True)
    await put_entity(store, "u1", "goal", "g1", {"title": "x", "status": "active"})  # not a session
    pages: list[list[SyncEntity]] = []
    after: tuple[str, str] | None = None
    while True:
        async with store.transaction(readonly=True) as tx:
            (page,) = await tx.commit(tx.sessions.active(after=after, limit=2))
        pages.append(page)
        if len(page) < 2:
            break
        after = (page[-1].user_id, page[-1].entity_id)
    assert [[(e.user_id, e.entity_id) for e in page] for page in pages] == [[("u1", "s1"), ("u1", "s2")],
                                                                            [("u2", "s1")]]
    assert pages[0][0].data["status"] == "active" and pages[0][0].version == 1


async def test_undispatched_sees_only_events_the_dispatcher_has_not_taken(store: Store) -> None:
    await put_session(store, "u1", "s1")
    async with store.transaction(readonly=True) as tx:
        mine, theirs, other_type = await tx.run(tx.sessions.undispatched("u1", "sync.entity.changed"),
                                                tx.sessions.undispatched("u2", "sync.entity.changed"),
                                                tx.sessions.undispatched("u1", "health.samples.changed"))
    assert (mine, theirs, other_type) == (True, False, False)
    async with store.transaction() as tx:
        (taken,) = await tx.commit(tx.outbox.take(limit=10))
    assert len(taken) == 1
    async with store.transaction(readonly=True) as tx:
        (mine,) = await tx.run(tx.sessions.undispatched("u1", "sync.entity.changed"))
    assert mine is False
