"""The stale-session reaper (issue 12): a consumption session still ``active`` an hour past its ``endAt`` is
ended by the server, through the injected apply path for server changes, on its own every ``interval``; one
process at a time (the coordination lease); the ended session's impact follows.

Under ``MockClock(autojump_threshold=0)``: the reaper's interval and the lease's ttl are trio time; the wall
clock the reaper compares ``endAt`` with is the store's ``ManualClock``. The whole application in-process over
a temp SQLite store (``mock_clock_tree_config``: the pipeline moves on commits, never on a poll).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

from actors.projection import SESSION, ReapSessions, SessionEnder, SessionReaperConfig, StaleSessionReaper
from actors.supervisor import application
from kernel import ActorSystem, ChildSpec, Supervisor
from storage import Json, Store, StoreConfig, open_store
from storage.coordination import CoordinationConfig, Leases, open_coordination
from storage.testing import ManualClock
from tests.impact_helpers import apply_server_change, put_session
from tests.ingest_helpers import FOREVER, SETTINGS, Harness, mock_clock_tree_config
from transport import create_app

REAPER = "root/projection/session_reaper"
T0 = datetime(2026, 11, 24, 11, 30, tzinfo=UTC)  # sessions below end at 11:00 or 11:45


@dataclass
class Ender:
    """The apply path the reaper is given: records its calls, fails the first ``failures``, then applies."""

    store: Store
    failures: int = 0
    calls: list[tuple[str, str, str, Json]] = field(default_factory=list)

    async def __call__(self, user_id: str, entity_type: str, entity_id: str, data: Json) -> None:
        self.calls.append((user_id, entity_type, entity_id, data))
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("sync domain says no")
        await apply_server_change(self.store, user_id, entity_type, entity_id, data)


async def entity(store: Store, user: str, session: str) -> tuple[int, Any]:
    async with store.transaction(readonly=True) as tx:
        (found,) = await tx.commit(tx.entities.get(user, SESSION, session))
    assert found is not None
    return found.version, found.data


async def sessions(store: Store) -> None:
    await put_session(store, "alice", "stale", status="active", end="2026-11-24T11:00:00Z", product="coffee")
    await put_session(store, "alice", "later", status="active", end="2026-11-24T11:45:00Z")
    await put_session(store, "alice", "paused", status="paused", end="2026-11-24T09:00:00Z")
    await put_session(store, "bob", "open-ended", status="active", end=None)
    await put_session(store, "bob", "gone", status="active", end="2026-11-24T09:00:00Z")
    await put_session(store, "bob", "gone", deleted=True)


@asynccontextmanager
async def app(tmp_path: Path, wall: ManualClock, *, interval: float | None = 60.0,
              bind: bool = True) -> AsyncIterator[tuple[Harness, Ender]]:
    tree = mock_clock_tree_config()
    tree = replace(tree, projection=replace(tree.projection, session_reaper=SessionReaperConfig(interval=interval)))
    async with trio_asyncio.open_loop(), open_coordination(None, config=CoordinationConfig()) as coord, \
            open_store(f"sqlite:///{tmp_path / 'v.db'}", config=StoreConfig(clock=wall)) as store:
        # Before the system starts: under autojump, a wait for the SQLite thread may carry trio's clock to the
        # reaper's next tick, which must not come between two of these writes.
        await sessions(store)
        parts = application(store, tree, leases=coord.leases)
        ender = Ender(store)
        async with ActorSystem.start(parts.tree, seed=1) as system:
            services = parts.services(system)  # binds the reaper to the sync domain's apply path
            if bind:  # ... which these tests replace with a recording one
                parts.projection.session_ender.bind(ender)
            http = create_app(SETTINGS, system=system, services=services)
            http.config.update(RESPONSE_TIMEOUT=None, BODY_TIMEOUT=None)
            yield Harness(app=http, system=system, store=store, db=None, services=services), ender  # type: ignore[arg-type]
            await system.stop()


async def test_the_reaper_ends_stale_sessions_on_its_own(tmp_path: Path, autojump_clock: trio.testing.MockClock
                                                         ) -> None:
    wall = ManualClock(T0)
    async with app(tmp_path, wall) as (h, ender):
        await trio.sleep(61)  # a pass: nothing is an hour past its end yet
        assert ender.calls == []
        wall.now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # "stale" ended exactly an hour ago
        # The ask waits behind a tick that the sleep made due (mailbox order), so its pass is done by then.
        for _ in range(3):
            await trio.sleep(61)
            await h.system.ref(REAPER).ask(ReapSessions(), timeout=FOREVER)
            if ender.calls:
                break
        assert [c[:3] for c in ender.calls] == [("alice", SESSION, "stale")]
        version, data = await entity(h.store, "alice", "stale")
        assert version == 2 and data["status"] == "ended" and data["productId"] == "coffee"
        assert (await entity(h.store, "alice", "later"))[1]["status"] == "active"
        # The server's change reaches the read side: the session is ended there, and now counts for its product.
        for _ in range(1000):
            status, body = await h.get("/v1/health/product-impact")
            if status == 200 and body["freshness"]["status"] == "fresh" and body["items"]:
                break
            await trio.sleep(0.01)
        assert [(i["productId"], i["sessions"]) for i in body["items"]] == [("coffee", 1)]
        status, body = await h.get("/v1/health/session-impact/stale")
        assert (status, body["status"]) == (200, "ended")
        # An hour past 11:45 the other one goes too; then nothing is left to end.
        wall.now = datetime(2026, 11, 24, 12, 45, tzinfo=UTC)
        await trio.sleep(61)
        # The tick's pass ends it, or (when the SQLite thread kept the tick behind the ask) this ask's pass does.
        assert await h.system.ref(REAPER).ask(ReapSessions(), timeout=FOREVER) in (0, 1)
        assert [c[2] for c in ender.calls] == ["stale", "later"]
        assert (await entity(h.store, "alice", "later"))[1]["status"] == "ended"
        wall.now = datetime(2026, 11, 25, tzinfo=UTC)
        assert await h.system.ref(REAPER).ask(ReapSessions(), timeout=FOREVER) == 0
        assert len(ender.calls) == 2  # paused, open-ended and deleted sessions are never ended


async def test_a_session_that_fails_to_end_is_tried_again_next_pass(tmp_path: Path,
                                                                     autojump_clock: trio.testing.MockClock) -> None:
    wall = ManualClock(datetime(2026, 11, 24, 13, 0, tzinfo=UTC))
    async with app(tmp_path, wall, interval=None) as (h, ender):
        ender.failures = 1
        reaper = h.system.ref(REAPER)
        assert await reaper.ask(ReapSessions(), timeout=FOREVER) == 1  # "later" failed, "stale" ended
        assert [c[2] for c in ender.calls] == ["later", "stale"]  # by (user, session id)
        assert (await entity(h.store, "alice", "later"))[1]["status"] == "active"
        assert await reaper.ask(ReapSessions(), timeout=FOREVER) == 1
        assert (await entity(h.store, "alice", "later"))[1]["status"] == "ended"
        assert [c[2] for c in ender.calls] == ["later", "stale", "later"]


async def test_the_application_ends_stale_sessions_through_the_sync_domain(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Unreplaced, the reaper ends a session through SyncService.apply_server_change: a new version in the
    change log every device pulls, status ``ended``; the paused, open-ended and not yet stale ones stay."""
    wall = ManualClock(datetime(2026, 11, 25, tzinfo=UTC))
    async with app(tmp_path, wall, bind=False) as (h, ender):
        await trio.sleep(61)
        await h.system.ref(REAPER).ask(ReapSessions(), timeout=FOREVER)
        assert ender.calls == []
        for user, session in (("alice", "stale"), ("bob", "gone")):
            version, data = await entity(h.store, user, session)
            assert (version, data["status"]) == (2, "ended")
        for user, session in (("alice", "paused"), ("bob", "open-ended")):
            version, data = await entity(h.store, user, session)
            assert version == 1
        async with h.store.transaction(readonly=True) as tx:
            (changes,) = await tx.commit(tx.changes.read("alice"))
        assert [(c.entity_id, c.version) for c in changes if c.entity_id == "stale"][-1] == ("stale", 2)


async def test_one_reaper_at_a_time_and_another_takes_over_when_its_lease_lapses(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Two processes' reapers share the lease (here in-process leases, as Redis serves them across processes)."""
    wall = ManualClock(datetime(2026, 11, 25, tzinfo=UTC))
    config = SessionReaperConfig(interval=None, lease_ttl=90.0)
    async with trio_asyncio.open_loop(), open_coordination(None, config=CoordinationConfig()) as coord, \
            open_store(f"sqlite:///{tmp_path / 'v.db'}", config=StoreConfig(clock=wall)) as store:
        ender = Ender(store)

        def reaper(owner: str, leases: Leases) -> ChildSpec:
            return ChildSpec(owner, StaleSessionReaper, kwargs={"store": store, "ender": SessionEnder(ender),
                                                                "leases": leases, "owner": owner, "config": config})

        tree = Supervisor("root", children=[reaper("a", coord.leases), reaper("b", coord.leases)])
        async with ActorSystem.start(tree) as system:
            a, b = system.ref("root/a"), system.ref("root/b")
            await put_session(store, "alice", "s1", status="active", end="2026-11-24T09:00:00Z")
            assert await b.ask(ReapSessions(), timeout=FOREVER) == 1  # b takes the lease
            await put_session(store, "alice", "s2", status="active", end="2026-11-24T09:00:00Z")
            assert await a.ask(ReapSessions(), timeout=FOREVER) == 0  # b holds it: a does nothing
            await trio.sleep(60)
            assert await a.ask(ReapSessions(), timeout=FOREVER) == 0
            assert await b.ask(ReapSessions(), timeout=FOREVER) == 1  # the holder renews it on its pass
            await put_session(store, "alice", "s3", status="active", end="2026-11-24T09:00:00Z")
            await trio.sleep(91)  # b passes no more (a crashed process): its lease lapses
            assert await a.ask(ReapSessions(), timeout=FOREVER) == 1
            assert await b.ask(ReapSessions(), timeout=FOREVER) == 0
            assert [c[2] for c in ender.calls] == ["s1", "s2", "s3"]
            await system.stop()
