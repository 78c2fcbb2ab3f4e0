"""The retention reapers (actors/maintenance) under a MockClock: each runs on its own timer and removes only
what passed its retention, one process at a time (a coordination lease), and what it removed shows in
``/metrics`` as ``vigil_reaped_total{reaper=...}``. The store's wall clock is a ManualClock, so retention is
exact; trio's clock drives the timers."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.maintenance import (
    DAY,
    STATEMENTS,
    MaintenanceConfig,
    ReapedCounts,
    Reaper,
    ReapGuard,
    ReapJob,
    ReapNow,
    UnknownReaper,
)
from kernel import ActorSystem, ChildSpec, Supervisor
from storage import StoreConfig, open_store
from storage.coordination import CoordinationConfig, CoordinationUnavailable, open_coordination
from storage.testing import ManualClock
from tests.ingest_helpers import (
    FOREVER,
    OPS_TOKEN,
    Harness,
    deletion,
    mock_clock_maintenance_config,
    mock_clock_tree_config,
    running_app,
    sample,
    signed,
)

OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
REAPERS = ("checkpoint_leases", "ingest_claims", "ingest_results", "outbox", "sync_results", "tombstones")


async def reaped_metrics(h: Harness) -> dict[str, float]:
    text = (await (await h.client.get("/metrics", headers=OPS)).get_data()).decode()
    return {m[1]: float(m[2]) for m in re.finditer(r'^vigil_reaped_total\{reaper="(\w+)"\} (\S+)$', text, re.M)}


def ticking(job: str, interval: float) -> MaintenanceConfig:
    base = mock_clock_maintenance_config()
    return replace(base, **{job: replace(getattr(base, job), interval=interval)})


async def test_results_reaper_ticks_on_its_own_and_keeps_a_week(tmp_path: Path,
                                                                 autojump_clock: trio.testing.MockClock) -> None:
    wall = ManualClock()
    config = replace(mock_clock_tree_config(), maintenance=ticking("ingest_results", 3600.0))
    async with running_app(tmp_path, config=config, store_config=StoreConfig(clock=wall)) as h:
        h.app.config.update(RESPONSE_TIMEOUT=None, BODY_TIMEOUT=None)
        old, young = signed([sample("r1")]), signed([sample("r2")])
        assert (await h.post(old))[0] == 200
        wall.advance(6 * DAY)
        assert (await h.post(young))[0] == 200
        wall.advance(1 * DAY + 60)  # old: 7 days and a minute; young: a day
        assert await reaped_metrics(h) == dict.fromkeys(REAPERS, 0.0)  # every series exists from the start
        # Virtual time says nothing about the SQLite thread (autojump moves the clock while it works), so wait
        # on the reaper itself, in mailbox order: after a 3601 s sleep a tick has been queued, and the ask
        # returns once it is done. A pass in flight when the wall clock moved may miss the request; the next cannot.
        maintenance = h.services.maintenance
        assert maintenance is not None
        for _ in range(3):
            await trio.sleep(3601)
            if await maintenance.reaped_so_far("ingest_results") == 1:
                break
        assert h.db.request("alice", old["requestId"]) is None
        assert h.db.request("alice", young["requestId"])["status"] == "completed"
        assert (await reaped_metrics(h))["ingest_results"] == 1.0
        # The sample itself stays: only the request's stored result went. A late retry is a new request.
        assert h.db.sample_count("alice") == 2


async def test_each_reaper_removes_only_what_passed_its_retention(tmp_path: Path,
                                                                   autojump_clock: trio.testing.MockClock) -> None:
    wall = ManualClock()
    async with running_app(tmp_path, config=mock_clock_tree_config(), store_config=StoreConfig(clock=wall)) as h:
        h.app.config.update(RESPONSE_TIMEOUT=None, BODY_TIMEOUT=None)
        maintenance = h.services.maintenance
        assert maintenance is not None
        assert (await h.post(signed([sample("r1"), sample("r2")])))[0] == 200
        assert (await h.post(signed([], lane="change", deletions=[deletion("r1"), deletion("never-existed")])))[0] == 200
        async with h.store.transaction() as tx:
            await tx.sync_ops.record_many("alice", "phone", {"op-1": {"status": "applied"}})
        wall.advance(8 * DAY)
        assert await maintenance.reap_now("tombstones") == 0  # deleted 8 days ago: kept for 30
        assert await maintenance.reap_now("sync_results") == 1
        assert await maintenance.reap_now("ingest_results") == 2
        wall.advance(23 * DAY)
        assert await maintenance.reap_now("tombstones") == 1  # r1's payload; the tombstone had none
        assert h.db.scalar("SELECT count(*) FROM health_samples WHERE deleted_at IS NOT NULL") == 2
        assert await maintenance.reap_now("checkpoint_leases") == 0
        assert h.db.scalar("SELECT count(*) FROM sync_operations") == 0
        counts = await reaped_metrics(h)
        assert (counts["tombstones"], counts["sync_results"], counts["ingest_results"]) == (1.0, 1.0, 2.0)
        with pytest.raises(UnknownReaper):
            await maintenance.reap_now("everything")


def test_results_are_kept_at_least_a_week() -> None:
    with pytest.raises(ValueError, match="at least 7 days"):
        MaintenanceConfig(sync_results=ReapJob(name="sync_results", interval=3600.0, retention=6 * DAY))
    with pytest.raises(ValueError, match="interval"):
        ReapJob(name="x", interval=0.0, retention=1.0)


# -- one process at a time ------------------------------------------------------------------------------------
def reaper_spec(name: str, store: Any, job: ReapJob, guard: ReapGuard) -> ChildSpec:
    return ChildSpec(name, Reaper, kwargs={"store": store, "job": job, "statement": STATEMENTS[job.name],
                                           "guard": guard}, mailbox=8)


async def test_only_the_lease_holder_reaps_and_a_successor_takes_over(tmp_path: Path,
                                                                      autojump_clock: trio.testing.MockClock) -> None:
    job = ReapJob(name="sync_results", interval=None, retention=7 * DAY)
    wall = ManualClock()
    async with open_coordination(None, config=CoordinationConfig()) as coordination, \
            open_store(f"sqlite:///{tmp_path / 'v.db'}", config=StoreConfig(clock=wall)) as store:
        counts = {p: ReapedCounts() for p in ("a", "b")}
        guards = {p: ReapGuard(job.name, counts=counts[p], leases=coordination.leases, owner=f"process-{p}",
                               ttl=600.0) for p in ("a", "b")}
        trees = {p: Supervisor("root", children=[reaper_spec("reaper", store, job, guards[p])]) for p in ("a", "b")}
        async with ActorSystem.start(trees["b"], seed=2) as system_b:
            b = system_b.ref("root/reaper")
            async with ActorSystem.start(trees["a"], seed=1) as system_a:  # process a
                async with store.transaction() as tx:
                    await tx.sync_ops.record_many("u", "d", {f"op-{i}": {} for i in range(3)})
                wall.advance(8 * DAY)
                assert await system_a.ref("root/reaper").ask(ReapNow(), timeout=FOREVER) == 3
                async with store.transaction() as tx:
                    await tx.sync_ops.record_many("u", "d", {"op-late": {}})
                wall.advance(8 * DAY)
                assert await b.ask(ReapNow(), timeout=FOREVER) == 0  # a holds the lease
            assert await b.ask(ReapNow(), timeout=FOREVER) == 1  # a released it as it stopped
        assert (counts["a"].snapshot(), counts["b"].snapshot()) == ({"sync_results": 3}, {"sync_results": 1})


class DownLeases:
    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        raise CoordinationUnavailable("redis unavailable: ConnectionError")

    async def renew(self, name: str, owner: str, ttl: float) -> bool:
        raise CoordinationUnavailable("redis unavailable: ConnectionError")

    async def release(self, name: str, owner: str) -> bool:
        raise CoordinationUnavailable("redis unavailable: ConnectionError")


async def test_a_failing_lease_backend_does_not_stop_reaping(autojump_clock: trio.testing.MockClock,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    guard = ReapGuard("tombstones", counts=ReapedCounts(), leases=DownLeases(), owner="p", ttl=60.0)
    assert await guard.acquire() is True
    await guard.release()  # logged, not raised
    assert [r.getMessage() for r in caplog.records if r.name == "vigil.maintenance"] == [
        "reaper lease unavailable; reaping anyway", "could not release a reaper lease (it lapses by itself)"]
