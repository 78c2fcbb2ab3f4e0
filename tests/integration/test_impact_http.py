"""The session read models through HTTP (API.md "Sync", session read models) on SQLite and PostgreSQL:
consumption sessions (written as an applied sync change commits them: ``tests.impact_helpers``) and heart-rate
uploads become session impact and product impact, recomputed from raw samples, with explicit freshness; a
session is readable only by its owner.

The whole application in-process over the ``store`` fixture (both backends), on trio's real clock with short
polls; each test waits for what it needs under a deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from actors.projection import (
    DispatcherConfig,
    HandlerConfig,
    ProductImpacts,
    ProjectionConfig,
    SessionImpacts,
    default_projections,
)
from actors.supervisor import application
from kernel import ActorSystem
from storage import Store
from tests.impact_helpers import PoisonedSessionImpacts, put_session
from tests.ingest_helpers import (
    SETTINGS,
    Harness,
    deletion,
    error_of,
    fast_tree_config,
    headers,
    sample,
    signed,
)
from transport import create_app

SESSION = "/v1/health/session-impact/{}"
PRODUCTS = "/v1/health/product-impact"


def config() -> Any:
    return fast_tree_config(tree={"projection": ProjectionConfig(
        dispatcher=DispatcherConfig(poll_interval=0.05),
        handler=HandlerConfig(poll_interval=0.05, timeout=10.0, lease_seconds=10.0), figures_interval=0.05)})


@asynccontextmanager
async def app_over(store: Store, **options: Any) -> AsyncIterator[Harness]:
    parts = application(store, config(), **options)
    async with ActorSystem.start(parts.tree, seed=1) as system:
        services = parts.services(system)
        yield Harness(app=create_app(SETTINGS, system=system, services=services), system=system, store=store,
                      db=None, services=services)  # type: ignore[arg-type]  # no SQLite file to peek into
        await system.stop()


@pytest.fixture
async def h(store: Store) -> AsyncIterator[Harness]:
    async with app_over(store) as harness:
        yield harness


async def upload(h: Harness, samples: list[dict[str, Any]], *, user: str = "alice",
                 deletions: list[dict[str, Any]] | None = None) -> None:
    status, body, _ = await h.post(signed(samples, lane="change" if deletions else "hot", deletions=deletions),
                                   user=user)
    assert status == 200, body


def bpm(record: str, at: str, value: float) -> dict[str, Any]:
    return sample(record, value=value, start=at)


async def until(h: Harness, path: str, ready: Callable[[dict[str, Any]], bool], *, user: str = "alice",
                timeout: float = 20.0) -> dict[str, Any]:
    """GET ``path`` until it is fresh and ``ready(body)``; returns that body."""
    body: Any = None
    with trio.move_on_after(timeout):
        while True:
            code, body = await h.get(path, user=user)
            assert code == 200, body
            if body["freshness"]["status"] == "fresh" and ready(body):
                return dict(body)
            await trio.sleep(0.02)
    raise AssertionError(f"{path} never became ready; last body: {body}")


AROUND = [bpm("b1", "2026-11-24T09:10:00Z", 60), bpm("b2", "2026-11-24T09:50:00Z", 70),  # the hour before
          bpm("d1", "2026-11-24T10:00:00Z", 100), bpm("d2", "2026-11-24T10:40:00Z", 120),  # during
          bpm("a1", "2026-11-24T11:30:00Z", 80),  # the hour after
          bpm("x1", "2026-11-24T08:59:00Z", 300), bpm("x2", "2026-11-24T12:01:00Z", 300)]  # outside every window


async def test_a_session_and_its_heart_rate_become_its_impact_and_its_products(h: Harness) -> None:
    await upload(h, AROUND)
    await put_session(h.store, "alice", "s1", product="coffee")
    body = await until(h, SESSION.format("s1"), lambda b: b["during"]["count"] > 0)
    assert body == {
        "sessionId": "s1", "status": "ended", "productId": "coffee",
        "before": {"avg": 65.0, "min": 60.0, "max": 70.0, "count": 2},
        "during": {"avg": 110.0, "min": 100.0, "max": 120.0, "count": 2},
        "after": {"avg": 80.0, "min": 80.0, "max": 80.0, "count": 1},
        "deltaDuring": 45.0, "deltaAfter": 15.0,
        "freshness": {"status": "fresh", "watermark": 7, "projectedWatermark": 7},
    }
    # Product impact ran after session impact for the same event: that one event is enough for it.
    products = await until(h, PRODUCTS, lambda b: bool(b["items"]))
    assert products["items"] == [{"productId": "coffee", "sessions": 1, "before": body["before"],
                                  "during": body["during"], "after": body["after"], "deltaDuring": 45.0,
                                  "deltaAfter": 15.0}]
    # A second ended session of the product (no heart rate after it): the product averages the two.
    await put_session(h.store, "alice", "s2", product="coffee", start="2026-11-24T09:30:00Z",
                      end="2026-11-24T09:55:00Z")
    products = await until(h, PRODUCTS, lambda b: b["items"][0]["sessions"] == 2)
    (coffee,) = products["items"]
    # s2: before [08:30, 09:30) holds 300 (08:59) and 60 (09:10); during [09:30, 09:55] holds 70; after
    # (09:55, 10:55] holds 100 and 120.
    assert coffee["before"] == {"avg": pytest.approx((65 + 180) / 2), "min": 60.0, "max": 300.0, "count": 4}
    assert coffee["deltaDuring"] == pytest.approx((45 + (70 - 180)) / 2)
    assert coffee["deltaAfter"] == pytest.approx((15 + (110 - 180)) / 2)


async def test_heart_rate_changes_recompute_the_sessions_they_touch(h: Harness) -> None:
    await put_session(h.store, "alice", "s1", product="coffee")
    body = await until(h, SESSION.format("s1"), lambda b: True)
    assert body["during"] == {"avg": None, "min": None, "max": None, "count": 0} and body["deltaDuring"] is None
    await upload(h, [bpm("b1", "2026-11-24T09:30:00Z", 60), bpm("d1", "2026-11-24T10:30:00Z", 90)])
    body = await until(h, SESSION.format("s1"), lambda b: b["during"]["count"] == 1)
    assert body["deltaDuring"] == 30.0 and body["freshness"]["watermark"] == 2
    products = await until(h, PRODUCTS, lambda b: b["items"] and b["items"][0]["deltaDuring"] == 30.0)
    assert products["items"][0]["sessions"] == 1
    await upload(h, [], deletions=[deletion("b1", start="2026-11-24T09:30:00Z")])
    body = await until(h, SESSION.format("s1"), lambda b: b["before"]["count"] == 0)
    assert body["deltaDuring"] is None and body["during"]["avg"] == 90.0
    # A heart-rate change on another day touches no session; it still moves freshness, and nothing changes.
    await upload(h, [bpm("far", "2026-12-24T10:30:00Z", 50)])
    body = await until(h, SESSION.format("s1"), lambda b: b["freshness"]["watermark"] == 4)
    assert body["during"]["count"] == 1 and body["before"]["count"] == 0


async def test_heart_rate_days_are_the_users_local_days(h: Harness) -> None:
    """The upload names the Berlin day it touched (the 25th for 23:15Z); the session it concerns is on the 24th
    in UTC: the local day's span, not the UTC date, finds it."""
    status, _ = await h.put_settings(timezone="Europe/Berlin")
    assert status == 200
    await put_session(h.store, "alice", "late", start="2026-11-24T22:00:00Z", end="2026-11-24T22:30:00Z")
    body = await until(h, SESSION.format("late"), lambda b: True)
    assert body["after"]["count"] == 0
    await upload(h, [bpm("night", "2026-11-24T23:15:00Z", 58)])
    body = await until(h, SESSION.format("late"), lambda b: b["after"]["count"] == 1)
    assert body["after"]["avg"] == 58.0 and body["freshness"]["watermark"] == 2


async def test_session_edits_move_the_windows_and_the_products(h: Harness) -> None:
    await upload(h, AROUND)
    await put_session(h.store, "alice", "s1", product="coffee")
    await until(h, PRODUCTS, lambda b: bool(b["items"]))
    # Later start: the 10:00 sample falls before it now; another product; then not ended at all.
    await put_session(h.store, "alice", "s1", product="tea", start="2026-11-24T10:30:00Z")
    body = await until(h, SESSION.format("s1"), lambda b: b["productId"] == "tea" and b["before"]["count"] == 2)
    assert body["before"]["avg"] == 85.0 and body["during"]["count"] == 1
    products = await until(h, PRODUCTS, lambda b: [i["productId"] for i in b["items"]] == ["tea"])
    assert products["items"][0]["sessions"] == 1
    await put_session(h.store, "alice", "s1", product="tea", status="active", start="2026-11-24T10:30:00Z")
    await until(h, PRODUCTS, lambda b: b["items"] == [])
    body = await until(h, SESSION.format("s1"), lambda b: b["status"] == "active")
    assert body["during"]["count"] == 1  # an active session's impact is readable; products count ended ones
    # Deleted: gone from the read side.
    await put_session(h.store, "alice", "s1", deleted=True)
    with trio.fail_after(20):
        while True:
            status, body = await h.get(SESSION.format("s1"))
            if status == 404:
                break
            await trio.sleep(0.02)
    error_of(status, body, "NOT_FOUND", 404)


async def test_only_the_owner_reads_a_session(h: Harness) -> None:
    await put_session(h.store, "alice", "s1", product="coffee")
    await until(h, SESSION.format("s1"), lambda b: True)
    for user, session in [("bob", "s1"), ("alice", "nope")]:
        status, body = await h.get(SESSION.format(session), user=user)
        error_of(status, body, "NOT_FOUND", 404)
    await until(h, PRODUCTS, lambda b: bool(b["items"]))
    _, theirs = await h.get(PRODUCTS, user="bob")
    assert theirs["items"] == []
    response = await h.client.get(SESSION.format("s1"))
    error_of(response.status_code, await response.get_json(), "UNAUTHENTICATED", 401)
    status, body = await h.get(SESSION.format("x" * 1000))
    error_of(status, body, "VALIDATION_ERROR", 400)


async def test_an_unprojected_sync_change_is_never_fresh(store: Store) -> None:
    """The web role runs no handlers: what the sync change wrote stays unprojected, and says so."""
    async with app_over(store, role="web") as web:
        await put_session(store, "alice", "s1", product="coffee")
        status, body = await web.get(SESSION.format("s1"))
        assert status == 200, body
        assert body["freshness"] == {"status": "computing", "watermark": 0, "projectedWatermark": 0}
        assert body["status"] == "ended" and body["during"]["count"] == 0 and body["deltaDuring"] is None
        status, body = await web.get(PRODUCTS)
        assert status == 200 and body["items"] == [] and body["freshness"]["status"] == "computing"
        response = await web.client.get(SESSION.format("s1"), headers=headers("bob"))
        assert response.status_code == 404



async def test_a_dead_session_impact_shows_failed_in_both_views(store: Store) -> None:
    projections = [PoisonedSessionImpacts() if isinstance(p, SessionImpacts) else p for p in default_projections()]
    assert any(isinstance(p, ProductImpacts) for p in projections)
    async with app_over(store, projections=projections) as h:
        await put_session(h.store, "alice", "s1", product="coffee")
        body: Any = None
        with trio.fail_after(20):
            while True:
                status, body = await h.get(SESSION.format("s1"))
                assert status == 200, body
                if body["freshness"]["status"] == "failed":
                    break
                await trio.sleep(0.02)
        assert body["freshness"] == {"status": "failed", "watermark": 0, "projectedWatermark": 0}
        assert body["during"]["count"] == 0
        # Product impact waits for session impact on the same event, which died: it says so too.
        status, body = await h.get(PRODUCTS)
        assert status == 200 and body["items"] == [] and body["freshness"]["status"] == "failed"
