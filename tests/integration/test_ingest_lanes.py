"""Lanes under pressure: a full lane answers 429 LANE_BACKPRESSURE at once, and a flood (or a stall)
in one lane does not hold up the others. One lane is stalled deterministically by giving it a store
whose transactions wait on a gate; the other lanes use the real store.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
import trio.testing

from actors.ingest import PriorityConfig, ReapedSoFar, ReapNow
from storage import Store, StoreConfig, StoreUnavailable
from storage.testing import ManualClock
from tests.ingest_helpers import (
    FAR,
    FOREVER,
    OPS_TOKEN,
    Harness,
    error_of,
    fast_tree_config,
    mock_clock_tree_config,
    running_app,
    sample,
    signed,
)

T = TypeVar("T")


class GatedStore:
    """A store whose units of work wait for ``gate`` before they begin (``entered`` counts arrivals)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.gate = trio.Event()
        self.entered = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def transaction(self, **kw: Any) -> Any:
        return _GatedTransaction(self, kw)

    async def transact(self, work: Callable[[Any], Any], **kw: Any) -> Any:
        self.entered += 1
        await self.gate.wait()
        return await self.inner.transact(work, **kw)


class _GatedTransaction:
    def __init__(self, store: GatedStore, kw: dict[str, Any]) -> None:
        self.store = store
        self.kw = kw
        self.tx: Any = None

    async def __aenter__(self) -> Any:
        self.store.entered += 1
        await self.store.gate.wait()
        self.tx = self.store.inner.transaction(**self.kw)
        return await self.tx.__aenter__()

    async def __aexit__(self, *exc: Any) -> Any:
        return await self.tx.__aexit__(*exc)


def depth(h: Harness, lane: str) -> int:
    return h.system.ref(f"root/ingest/{lane}").statistics().depth


REAL_DEADLINE = 10.0  # seconds of wall time: under the mock clock a trio deadline is no guard (see FOREVER)


async def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + REAL_DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, f"not within {REAL_DEADLINE} s: {what}"
        await trio.sleep(0.001)


async def finishes(fn: Callable[[], Awaitable[T]], what: str) -> T:
    """``await fn()``, failing (instead of hanging) if it does not finish within REAL_DEADLINE."""
    box: list[T] = []

    async def run() -> None:
        box.append(await fn())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        try:
            await until(lambda: bool(box), what)
        finally:
            nursery.cancel_scope.cancel()
    return box[0]


@asynccontextmanager
async def gated_cold(tmp_path: Path, *, mock_clock: bool = False) -> AsyncIterator[tuple[Harness, GatedStore]]:
    gates: dict[str, GatedStore] = {}

    def lanes(store: Store) -> dict[str, Store]:
        gates["cold"] = GatedStore(store)
        return {"cold": gates["cold"]}  # type: ignore[dict-item]

    make = mock_clock_tree_config if mock_clock else fast_tree_config
    tree = make(capacity={"hot": 64, "cold": 1, "change": 64}, max_batch={"hot": 32, "cold": 1, "change": 16})
    async with running_app(tmp_path, config=tree, lane_stores=lanes) as h:
        # Virtual time may jump far while a test waits on the SQLite thread: no HTTP timeouts then.
        h.app.config.update(RESPONSE_TIMEOUT=None, BODY_TIMEOUT=None)
        yield h, gates["cold"]


async def fill_cold(h: Harness, gate: GatedStore, nursery: trio.Nursery,
                    results: dict[str, tuple[int, Any, Any]]) -> list[dict[str, Any]]:
    """One cold request stalled inside the lane, one waiting in its one-slot mailbox."""
    bodies = [signed([sample(f"cold-{i}")], lane="cold") for i in range(2)]

    async def post(name: str, body: dict[str, Any]) -> None:
        results[name] = await h.post(body)

    nursery.start_soon(post, "A", bodies[0])
    await until(lambda: gate.entered == 1 and depth(h, "cold") == 0, "A is inside the lane")
    nursery.start_soon(post, "B", bodies[1])
    await until(lambda: depth(h, "cold") == 1, "B waits in the mailbox")
    return bodies


async def test_full_lane_is_429_with_retry_after_and_recovers(tmp_path: Path) -> None:
    async with gated_cold(tmp_path) as (h, gate):
        results: dict[str, tuple[int, Any, Any]] = {}
        async with trio.open_nursery() as nursery:
            stalled = await fill_cold(h, gate, nursery, results)
            rejected = signed([sample("cold-C")], lane="cold")
            status, out, hdrs = await h.post(rejected)
            err = error_of(status, out, "LANE_BACKPRESSURE", 429)
            assert err["retryable"] is True
            assert err["retryAfterMs"] == 1000  # nothing drained yet: the conservative second
            assert hdrs["Retry-After"] == "1"
            assert err["details"] == {"lane": "cold"}
            assert h.db.request("alice", rejected["requestId"]) is None  # refused before any claim
            assert results == {}  # A and B are still waiting
            gate.gate.set()
        assert [results[k][0] for k in "AB"] == [200, 200]
        assert [results[k][1]["requestId"] for k in "AB"] == [b["requestId"] for b in stalled]
        assert sorted(r["source_record_id"] for r in h.db.samples("alice")) == ["cold-0", "cold-1"]
        status, out, _ = await h.post(rejected)  # the client's retry after Retry-After
        assert (status, out["inserted"]) == (200, 1)


async def test_hot_keeps_flowing_while_cold_is_full(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with gated_cold(tmp_path, mock_clock=True) as (h, gate):
        results: dict[str, tuple[int, Any, Any]] = {}
        async with trio.open_nursery() as nursery:
            await fill_cold(h, gate, nursery, results)
            error_of(*(await h.post(signed([sample("cold-C")], lane="cold")))[:2], "LANE_BACKPRESSURE", 429)
            for i in range(5):
                status, out, _ = await finishes(lambda i=i: h.post(signed([sample(f"hot-{i}")], lane="hot")),
                                                "a hot request while cold is full")
                assert (status, out.get("inserted")) == (200, 1), out
            status, out, _ = await finishes(lambda: h.post(signed([sample("chg")], lane="change")),
                                            "a change request while cold is full")
            assert (status, out.get("inserted")) == (200, 1), out
            # an hour of virtual time later, cold is still stalled, and hot still flows
            await trio.sleep(3600)
            assert results == {} and depth(h, "cold") == 1
            status, out, _ = await finishes(lambda: h.post(signed([sample("hot-late")], lane="hot")), "hot, later")
            assert status == 200
            assert sorted(r["source_record_id"] for r in h.db.samples("alice")) == [
                "chg", "hot-0", "hot-1", "hot-2", "hot-3", "hot-4", "hot-late"]
            gate.gate.set()
        assert [results[k][0] for k in "AB"] == [200, 200]
        assert h.db.sample_count("alice") == 9
        assert h.db.watermark("alice") == 9


async def test_a_stalled_lane_does_not_block_settings_or_reads(tmp_path: Path) -> None:
    async with gated_cold(tmp_path) as (h, gate):
        results: dict[str, tuple[int, Any, Any]] = {}
        async with trio.open_nursery() as nursery:
            await fill_cold(h, gate, nursery, results)
            assert (await h.put_settings(timezone="Europe/Berlin"))[0] == 200
            assert (await h.get("/v1/health/samples"))[0] == 200
            gate.gate.set()
        assert [results[k][0] for k in "AB"] == [200, 200]


async def test_reaper_ticks_on_its_own(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    wall = ManualClock()
    config = mock_clock_tree_config(reap_interval=30.0, stale_after=120.0)
    async with running_app(tmp_path, config=config, store_config=StoreConfig(clock=wall)) as h:
        h.app.config.update(RESPONSE_TIMEOUT=None, BODY_TIMEOUT=None)
        body = signed([sample("r1")])
        async with h.store.transaction() as tx:
            await tx.commit(tx.ingest.begin("alice", body["requestId"], body["payloadHash"], lane="hot"))
        error_of(*(await h.post(body))[:2], "REQUEST_IN_PROGRESS", 409)
        wall.advance(121)
        reaper = h.system.ref("root/ingest/reaper")
        # Virtual time says nothing about the SQLite thread (autojump moves the clock while it works),
        # so wait on the reaper itself: ticks are re-armed 30 s after each reap ends, so after a 31 s
        # sleep one has been queued, and the ask, answered in mailbox order, returns only once its reap
        # is done. A reap in flight when the wall clock moved may miss the request; the next cannot.
        for _ in range(3):
            await trio.sleep(31)
            if await reaper.ask(ReapedSoFar(), timeout=FOREVER) == 1:
                break
        assert await reaper.ask(ReapedSoFar(), timeout=FOREVER) == 1
        assert h.db.request("alice", body["requestId"])["status"] == "failed"
        status, out, _ = await h.post(body)
        assert (status, out["inserted"]) == (200, 1)
        assert await h.system.ref("root/ingest/reaper").ask(ReapNow(), timeout=FOREVER) == 0


@pytest.mark.parametrize("lane", ["hot", "change"])
async def test_a_full_lane_refuses_at_once_without_waiting(tmp_path: Path, lane: str) -> None:
    """The 429 comes from the mailbox policy, not from a timeout: it needs no time to pass."""
    gates: dict[str, GatedStore] = {}

    def lanes(store: Store) -> dict[str, Store]:
        gates[lane] = GatedStore(store)
        return {lane: gates[lane]}  # type: ignore[dict-item]

    capacity = {"hot": 64, "cold": 32, "change": 64, lane: 2}
    tree = fast_tree_config(capacity=capacity, max_batch={"hot": 32, "cold": 4, "change": 16, lane: 1})
    async with running_app(tmp_path, config=tree, lane_stores=lanes) as h:
        done: list[int] = []

        async def post(i: int) -> None:
            done.append((await h.post(signed([sample(f"{lane}-{i}")], lane=lane)))[0])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(post, 0)
            await until(lambda: gates[lane].entered == 1, "first is in the lane")
            for i in (1, 2):
                nursery.start_soon(post, i)
            await until(lambda: depth(h, lane) == 2, "two wait")
            with trio.fail_after(1):
                status, out, hdrs = await h.post(signed([sample("over")], lane=lane))
            err = error_of(status, out, "LANE_BACKPRESSURE", 429)
            assert err["details"] == {"lane": lane} and int(hdrs["Retry-After"]) >= 1
            # Refused before parsing: even a body that would fail validation gets the 429.
            unsigned = signed([sample("over-2")], lane=lane)
            del unsigned["payloadHash"]
            error_of(*(await h.post(unsigned))[:2], "LANE_BACKPRESSURE", 429)
            # the other foreground lane still takes work at once (cold would wait for its turn: see
            # test_a_steady_foreground_slows_cold_but_cannot_starve_it)
            other = "change" if lane == "hot" else "hot"
            assert (await h.post(signed([sample("other")], lane=other)))[0] == 200
            gates[lane].gate.set()
        assert done == [200, 200, 200]


class _DownStore:
    """A store whose database has gone away: every unit of work fails as unavailable."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def transaction(self, **kw: Any) -> Any:
        raise StoreUnavailable("connection refused")

    async def transact(self, work: Callable[[Any], Any], **kw: Any) -> Any:
        raise StoreUnavailable("connection refused")


async def test_a_database_outage_is_answered_503_without_crashing_the_lane(tmp_path: Path) -> None:
    async with running_app(tmp_path, config=fast_tree_config(),
                           lane_stores=lambda store: {"hot": _DownStore(store)}) as h:  # type: ignore[dict-item]
        for i in range(30):  # more than any restart intensity in the tree
            status, out, hdrs = await h.post(signed([sample(f"r{i}")]))
            error_of(status, out, "STORE_UNAVAILABLE", 503)
            assert int(hdrs["Retry-After"]) >= 1
        hot = h.system.tree().children[1].children[0]
        assert (hot.path, hot.crashes, hot.state) == ("root/ingest/hot", 0, "running")
        assert h.system.tree().state == "running"


@asynccontextmanager
async def gated_hot(tmp_path: Path, **priority: Any) -> AsyncIterator[tuple[Harness, GatedStore, GatedStore]]:
    """Hot's store waits on a gate (a hot request held in flight); cold's is open but counts arrivals."""
    gates: dict[str, GatedStore] = {}

    def lanes(store: Store) -> dict[str, Store]:
        gates["hot"], gates["cold"] = GatedStore(store), GatedStore(store)
        gates["cold"].gate.set()
        return dict(gates)  # type: ignore[arg-type]

    tree = mock_clock_tree_config(priority=PriorityConfig(**priority))
    async with running_app(tmp_path, config=tree, lane_stores=lanes) as h:
        h.app.config.update(RESPONSE_TIMEOUT=None, BODY_TIMEOUT=None)
        yield h, gates["hot"], gates["cold"]


async def test_cold_waits_while_a_hot_request_is_in_flight(tmp_path: Path,
                                                           autojump_clock: trio.testing.MockClock) -> None:
    async with gated_hot(tmp_path, quiet=0.005, max_wait=FAR) as (h, hot, cold):
        order: list[str] = []

        async def post(name: str, lane: str) -> None:
            status, _, _ = await h.post(signed([sample(name)], lane=lane))
            order.append(f"{name}:{status}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(post, "hot-1", "hot")
            await until(lambda: hot.entered == 1, "the hot request is inside its lane")
            nursery.start_soon(post, "cold-1", "cold")
            await trio.sleep(3600)  # an hour of virtual time: the cold request has not begun
            assert cold.entered == 0 and order == [] and depth(h, "cold") == 0  # not even queued: unparsed
            hot.gate.set()
        assert order == ["hot-1:200", "cold-1:200"]
        assert cold.entered == 1  # its one unit of work, once hot was done
        assert sorted(r["source_record_id"] for r in h.db.samples("alice")) == ["cold-1", "hot-1"]


async def test_a_steady_foreground_slows_cold_but_cannot_starve_it(tmp_path: Path,
                                                                   autojump_clock: trio.testing.MockClock) -> None:
    async with gated_hot(tmp_path, quiet=0.005, max_wait=2.0) as (h, hot, cold):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.post, signed([sample("hot-1")], lane="hot"))
            await until(lambda: hot.entered == 1, "the hot request is inside its lane")
            began = trio.current_time()
            status, out, _ = await finishes(lambda: h.post(signed([sample("cold-1")], lane="cold")),
                                            "cold, while hot never finishes")
            assert (status, out["inserted"]) == (200, 1)
            # two units each waited out the bound: parsing, the transaction
            assert trio.current_time() - began >= 2 * 2.0
            assert h.services.ingest.priority_stats().starved_turns == 2
            metrics = await h.app.test_client().get("/metrics", headers={"Authorization": f"Bearer {OPS_TOKEN}"})
            text = await metrics.get_data(as_text=True)
            assert "vigil_ingest_background_starved_turns_total 2.0" in text
            assert "vigil_ingest_foreground_in_flight 1.0" in text  # the hot request, still held
            hot.gate.set()


async def test_without_foreground_traffic_cold_goes_at_once(tmp_path: Path,
                                                            autojump_clock: trio.testing.MockClock) -> None:
    async with gated_hot(tmp_path, quiet=0.005, max_wait=FAR) as (h, hot, cold):
        hot.gate.set()
        assert (await h.post(signed([sample("hot-1")], lane="hot")))[0] == 200
        assert (await h.post(signed([sample("cold-1")], lane="cold")))[0] == 200
        # max_wait is out of reach: only the quiet period after the hot request stood in its way
        assert h.services.ingest.priority_stats().starved_turns == 0
        assert cold.entered == 1
