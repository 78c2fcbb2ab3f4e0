"""The read side through HTTP (API.md "Health projections" and the outbox part of "Operators"): uploads become
daily rollups and sleep nights with explicit freshness; failing handlers retry, dead-letter, replay.

The whole application in-process over a temp SQLite store (``running_app``) on trio's real clock: the
pipeline moves on commit wake-ups and short polls, and each test waits for what it needs under ``fail_after``.
The store's wall clock is a ``ManualClock`` where backoff matters, so a retry is due when the test says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.projection import (
    DispatcherConfig,
    HandlerConfig,
    ProjectionConfig,
    UserWork,
    default_projections,
)
from kernel import BreakerConfig
from storage import InvalidData, StoreConfig, Transaction, open_store
from storage.testing import ManualClock
from tests.ingest_helpers import (
    OPS_TOKEN,
    SETTINGS,
    USER_SETTINGS,
    Harness,
    deletion,
    error_of,
    fast_tree_config,
    headers,
    running_app,
    sample,
    signed,
)

ROLLUPS = "/v1/health/rollups/daily"
NIGHTS = "/v1/health/sleep/nights"
DEAD = "/v1/ops/outbox/dead-letters"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}


def quick_config() -> Any:
    """Polls short enough that a test never waits long for a retry it made due."""
    return fast_tree_config(tree={"projection": ProjectionConfig(
        dispatcher=DispatcherConfig(poll_interval=0.05),
        handler=HandlerConfig(poll_interval=0.05, timeout=10.0, lease_seconds=10.0),
        figures_interval=0.05)})


@dataclass
class Recorder:
    """The "read model caught up" callback (what the realtime hub hears)."""

    calls: list[tuple[str, str, int]] = field(default_factory=list)

    def projection_updated(self, *, user_id: str, handler: str, projected: int, correlation_id: str | None) -> None:
        self.calls.append((user_id, handler, projected))


class Flaky:
    """A real projection that fails its first ``failures`` attempts with ``error()``; ``broken`` fails always."""

    def __init__(self, inner: Any, *, failures: int = 0, error: Callable[[], Exception] = lambda: RuntimeError("boom"),
                 broken: bool = False) -> None:
        self.inner = inner
        self.failures = failures
        self.error = error
        self.broken = broken
        self.attempts = 0

    @property
    def name(self) -> str:
        return str(self.inner.name)

    @property
    def depends_on(self) -> str | None:
        return None

    def subscribes(self, event_type: str) -> bool:
        return bool(self.inner.subscribes(event_type))

    async def project(self, tx: Transaction, work: UserWork) -> None:
        self.attempts += 1
        if self.broken or self.attempts <= self.failures:
            raise self.error()
        await self.inner.project(tx, work)


def projections_with(rollups: Any) -> list[Any]:
    return [rollups if p.name == "daily_rollups" else p for p in default_projections()]


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_app(tmp_path, config=quick_config()) as harness:
        yield harness


async def until(h: Harness, path: str, status: str = "fresh", *, user: str = "alice", timeout: float = 20.0,
                **params: Any) -> dict[str, Any]:
    """GET ``path`` until its freshness has ``status``; returns that body."""
    body: Any = None
    with trio.move_on_after(timeout):
        while True:
            code, body = await h.get(path, user=user, **params)
            assert code == 200, body
            if body["freshness"]["status"] == status:
                return dict(body)
            await trio.sleep(0.02)
    raise AssertionError(f"{path} never became {status!r}; last body: {body}")


async def upload(h: Harness, samples: list[dict[str, Any]], *, user: str = "alice", lane: str = "hot",
                 deletions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    status, body, _ = await h.post(signed(samples, lane=lane, deletions=deletions), user=user)
    assert status == 200, body
    return dict(body)


def steps(record: str, start: str, end: str, value: float, source: str = "apple-watch-1") -> dict[str, Any]:
    return sample(record, metric="steps", value=value, unit="count", start=start, end=end, source=source)


def stage(record: str, start: str, end: str, code: int, source: str = "apple-watch-1") -> dict[str, Any]:
    return sample(record, metric="sleep_stage", value=code, unit="category", start=start, end=end, source=source)


# -- rollups ------------------------------------------------------------------------------------------------
async def test_an_upload_becomes_a_fresh_rollup_with_every_value_kind(h: Harness) -> None:
    await upload(h, [sample("a", value=60.0, start="2026-11-24T08:00:00Z"),
                     sample("b", value=90.0, start="2026-11-24T09:00:00Z"),
                     steps("s1", "2026-11-24T08:00:00Z", "2026-11-24T08:10:00Z", 500),
                     steps("s2", "2026-11-24T10:00:00Z", "2026-11-24T10:10:00Z", 700)])
    hr = await until(h, ROLLUPS, metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
    assert hr["freshness"] == {"status": "fresh", "watermark": 4, "projectedWatermark": 4}
    (day,) = hr["items"]
    assert day == {"date": "2026-11-24", "metric": "heart_rate", "unit": "bpm", "count": 2, "sum": 150.0,
                   "min": 60.0, "max": 90.0, "avg": 75.0}
    st = await until(h, ROLLUPS, metric="steps", **{"from": "2026-11-24", "to": "2026-11-24"})
    assert [(d["date"], d["sum"]) for d in st["items"]] == [("2026-11-24", 1200.0)]


async def test_days_are_the_users_local_days_across_midnight(h: Harness) -> None:
    status, _ = await h.put_settings(timezone="Europe/Berlin")
    assert status == 200
    # 22:30Z is 23:30 in Berlin on the 24th; 23:30Z is 00:30 on the 25th.
    await upload(h, [sample("a", value=60.0, start="2026-11-24T22:30:00Z"),
                     sample("b", value=80.0, start="2026-11-24T23:30:00Z")])
    body = await until(h, ROLLUPS, metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-25"})
    assert [(d["date"], d["count"], d["avg"]) for d in body["items"]] == [("2026-11-24", 1, 60.0),
                                                                           ("2026-11-25", 1, 80.0)]


async def test_a_dst_day_has_25_hours_of_steps(h: Harness) -> None:
    await h.put_settings(timezone="Europe/Berlin")
    # 2026-10-25 in Berlin runs from 2026-10-24T22:00Z to 2026-10-25T23:00Z (25 hours).
    await upload(h, [steps("first", "2026-10-24T22:00:00Z", "2026-10-24T22:30:00Z", 100),
                     steps("last", "2026-10-25T22:30:00Z", "2026-10-25T23:00:00Z", 50),
                     steps("next", "2026-10-25T23:00:00Z", "2026-10-25T23:30:00Z", 7)])
    body = await until(h, ROLLUPS, metric="steps", **{"from": "2026-10-24", "to": "2026-10-26"})
    assert [(d["date"], d["sum"]) for d in body["items"]] == [("2026-10-25", 150.0), ("2026-10-26", 7.0)]


async def test_overlapping_watch_and_phone_steps_count_once_from_the_ranked_source(h: Harness) -> None:
    await h.put_settings(sourcePriority=["watch", "phone"])
    # The phone's hour overlaps the watch's half hour: the watch's 600 count, plus the phone's other half
    # hour (1000 spread evenly over the hour: 500).
    await upload(h, [steps("w", "2026-11-24T08:00:00Z", "2026-11-24T08:30:00Z", 600, source="watch"),
                     steps("p", "2026-11-24T08:00:00Z", "2026-11-24T09:00:00Z", 1000, source="phone")])
    body = await until(h, ROLLUPS, metric="steps", **{"from": "2026-11-24", "to": "2026-11-24"})
    assert body["items"][0]["sum"] == pytest.approx(1100.0)
    # Trusting the phone instead recomputes the day: now the phone's hour counts whole.
    status, settings = await h.put_settings(sourcePriority=["phone", "watch"])
    assert status == 200 and settings["sourcePriority"] == ["phone", "watch"]
    body = await until(h, ROLLUPS, metric="steps", **{"from": "2026-11-24", "to": "2026-11-24"})
    assert body["items"][0]["sum"] == pytest.approx(1000.0)
    assert body["freshness"]["watermark"] == 4  # two samples, then two settings changes


async def test_a_deletion_shrinks_the_rollup(h: Harness) -> None:
    await upload(h, [steps("a", "2026-11-24T08:00:00Z", "2026-11-24T08:10:00Z", 300),
                     steps("b", "2026-11-24T09:00:00Z", "2026-11-24T09:10:00Z", 200)])
    await until(h, ROLLUPS, metric="steps", **{"from": "2026-11-24", "to": "2026-11-24"})
    await upload(h, [], lane="change", deletions=[deletion("a", start="2026-11-24T08:00:00Z")])
    body = await until(h, ROLLUPS, metric="steps", **{"from": "2026-11-24", "to": "2026-11-24"})
    assert body["items"][0]["sum"] == 200.0 and body["items"][0]["count"] == 1
    await upload(h, [], lane="change", deletions=[deletion("b", start="2026-11-24T09:00:00Z")])
    body = await until(h, ROLLUPS, metric="steps", **{"from": "2026-11-24", "to": "2026-11-24"})
    assert body["items"] == []  # a day with no samples left has no rollup


async def test_sleep_stage_has_no_rollup_bad_dates_are_400_and_a_reversed_range_is_empty(h: Harness) -> None:
    status, body = await h.get(ROLLUPS, metric="sleep_stage", **{"from": "2026-11-24", "to": "2026-11-24"})
    error_of(status, body, "VALIDATION_ERROR", 400)
    status, body = await h.get(NIGHTS, **{"from": "2026-11-24", "to": "2026-13-01"})
    error_of(status, body, "VALIDATION_ERROR", 400)
    await upload(h, [sample("a", value=60.0)])
    await until(h, ROLLUPS, metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
    status, body = await h.get(ROLLUPS, metric="heart_rate", **{"from": "2026-11-25", "to": "2026-11-23"})
    assert status == 200 and body["items"] == [] and body["freshness"]["status"] == "fresh"


async def test_a_user_reads_only_their_own_read_models(h: Harness) -> None:
    await upload(h, [sample("a", value=70.0)], user="alice")
    await until(h, ROLLUPS, metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
    body = await until(h, ROLLUPS, user="bob", metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
    assert body["items"] == [] and body["freshness"] == {"status": "fresh", "watermark": 0, "projectedWatermark": 0}


# -- nights -------------------------------------------------------------------------------------------------
async def test_a_night_and_a_nap(h: Harness) -> None:
    await h.put_settings(timezone="Europe/Berlin")
    await upload(h, [
        # Night of the 23rd (local 23:00 -> 06:30): in bed, core, deep, awake, REM.
        stage("n1", "2026-11-23T22:00:00Z", "2026-11-23T22:30:00Z", 0),
        stage("n2", "2026-11-23T22:30:00Z", "2026-11-24T01:00:00Z", 3),
        stage("n3", "2026-11-24T01:00:00Z", "2026-11-24T02:00:00Z", 4),
        stage("n4", "2026-11-24T02:00:00Z", "2026-11-24T02:30:00Z", 2),
        stage("n5", "2026-11-24T02:30:00Z", "2026-11-24T05:30:00Z", 5),
        # A nap at 14:00 local on the 24th: 1 h asleep.
        stage("nap", "2026-11-24T13:00:00Z", "2026-11-24T14:00:00Z", 1),
    ])
    body = await until(h, NIGHTS, **{"from": "2026-11-20", "to": "2026-11-30"})
    (night,) = body["items"]
    assert night["night"] == "2026-11-23"
    assert night["asleepMinutes"] == 150 + 60 + 180 and night["awakeMinutes"] == 30
    assert night["stages"] == {"inBed": 30, "core": 150, "deep": 60, "awake": 30, "rem": 180}
    assert night["start"].startswith("2026-11-23T22:00:00") and night["end"].startswith("2026-11-24T05:30:00")


# -- freshness ---------------------------------------------------------------------------------------------
async def test_computing_while_no_worker_runs(tmp_path: Path) -> None:
    async with running_app(tmp_path, config=quick_config(), role="web") as h:
        await upload(h, [sample("a")])
        status, body = await h.get(ROLLUPS, metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
        assert status == 200
        assert body["freshness"] == {"status": "computing", "watermark": 1, "projectedWatermark": 0}
        assert body["items"] == []


async def test_stale_while_a_retry_waits_then_fresh_exactly_once_with_the_right_numbers(tmp_path: Path) -> None:
    clock = ManualClock()
    recorder = Recorder()
    flaky = Flaky(next(p for p in default_projections() if p.name == "daily_rollups"), failures=2)
    async with running_app(tmp_path, config=quick_config(), store_config=StoreConfig(clock=clock),
                           publisher=recorder, projections=projections_with(flaky)) as h:
        await upload(h, [sample("a", value=60.0), sample("b", value=80.0, start="2026-11-24T09:00:00Z")])
        body = await until(h, ROLLUPS, "stale", metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
        assert body["freshness"] == {"status": "stale", "watermark": 2, "projectedWatermark": 0}
        # The first attempt ran in memory and its failure is stored: the dispatcher completes the event just
        # after. Jumping the store's clock past the event's lease before that would redeliver it (a real
        # clock renews the lease meanwhile).
        with trio.fail_after(10):
            while h.db.scalar("SELECT count(*) FROM outbox_events WHERE status = 'completed'") < 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
        with trio.fail_after(20):
            while flaky.attempts < 3:  # each failure waits out its backoff (at most 300 s) in the store's time
                before = flaky.attempts
                clock.advance(301)
                await h.services.projection.process_due()
                with trio.move_on_after(2):
                    while flaky.attempts == before:  # noqa: ASYNC110  (polling the handler's attempts)
                        await trio.sleep(0.01)
        body = await until(h, ROLLUPS, metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
        assert body["items"][0]["count"] == 2 and body["items"][0]["avg"] == 70.0
        assert flaky.attempts == 3
        assert [c for c in recorder.calls if c[1] == "daily_rollups"] == [("alice", "daily_rollups", 2)]
        assert h.db.scalar("SELECT attempts FROM projection_checkpoints WHERE handler = 'daily_rollups'") == 3


async def test_dead_letter_shows_failed_then_replay_completes(tmp_path: Path) -> None:
    flaky = Flaky(next(p for p in default_projections() if p.name == "daily_rollups"), broken=True,
                  error=lambda: InvalidData("samples", "a poison event"))
    async with running_app(tmp_path, config=quick_config(), projections=projections_with(flaky)) as h:
        status, body, hdrs = await h.post(signed([sample("a", value=60.0)]), extra_headers={"X-Request-ID": "req-7"})
        assert status == 200
        body = await until(h, ROLLUPS, "failed", metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
        assert body["freshness"] == {"status": "failed", "watermark": 1, "projectedWatermark": 0}
        # Other handlers are not held back by this one.
        await until(h, NIGHTS, **{"from": "2026-11-24", "to": "2026-11-24"})

        response = await h.client.get(DEAD, headers=OPS)
        page = await response.get_json()
        assert response.status_code == 200, page
        (item,) = page["items"]
        assert item["type"] == "health.samples.changed" and item["userId"] == "alice"
        assert item["handler"] == "daily_rollups" and item["correlationId"] == "req-7"
        assert "poison" in item["lastError"] and page["nextCursor"] is None

        flaky.broken = False
        response = await h.client.post(f"/v1/ops/outbox/{item['id']}/replay", headers=OPS)
        assert response.status_code == 200, await response.get_json()
        body = await until(h, ROLLUPS, metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
        assert body["items"][0]["count"] == 1
        assert (await (await h.client.get(DEAD, headers=OPS)).get_json())["items"] == []
        response = await h.client.post(f"/v1/ops/outbox/{item['id']}/replay", headers=OPS)
        error_of(response.status_code, await response.get_json(), "NOT_FOUND", 404)


async def test_discard_gives_up_on_the_change_and_freshness_moves_past_it(tmp_path: Path) -> None:
    flaky = Flaky(next(p for p in default_projections() if p.name == "daily_rollups"), broken=True,
                  error=lambda: InvalidData("samples", "poison"))
    async with running_app(tmp_path, config=quick_config(), projections=projections_with(flaky)) as h:
        await upload(h, [sample("a", value=60.0)])
        await until(h, ROLLUPS, "failed", metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
        (item,) = (await (await h.client.get(DEAD, headers=OPS)).get_json())["items"]
        response = await h.client.delete(f"/v1/ops/outbox/{item['id']}", headers=OPS)
        assert response.status_code == 200, await response.get_json()
        body = await until(h, ROLLUPS, metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
        assert body["freshness"] == {"status": "fresh", "watermark": 1, "projectedWatermark": 1}
        response = await h.client.delete(f"/v1/ops/outbox/{item['id']}", headers=OPS)
        error_of(response.status_code, await response.get_json(), "NOT_FOUND", 404)


async def test_ops_outbox_endpoints_need_the_operator_token(h: Harness) -> None:
    response = await h.client.get(DEAD, headers=headers("alice"))
    assert response.status_code == 401
    response = await h.client.post("/v1/ops/outbox/1/replay")
    assert response.status_code == 401
    response = await h.client.get(DEAD, headers=OPS, query_string={"cursor": "nope"})
    error_of(response.status_code, await response.get_json(), "INVALID_CURSOR", 400)


async def test_lag_and_outbox_figures_in_metrics_and_supervision(h: Harness) -> None:
    await upload(h, [sample("a")])
    await until(h, ROLLUPS, metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
    with trio.fail_after(10):
        while True:
            response = await h.client.get("/v1/ops/supervision", headers=OPS)
            tree = await response.get_json()
            figures = tree["projection"]
            if figures["outbox"] is not None and figures["outbox"]["completed"] >= 1:
                break
            await trio.sleep(0.02)
    assert figures["outbox"]["pending"] == 0 and figures["outbox"]["dead"] == 0
    assert set(figures["breakers"]) == {"daily_rollups", "sleep_nights", "session_impact", "product_impact"}
    text = (await (await h.client.get("/metrics", headers=OPS)).get_data()).decode()
    assert 'vigil_outbox_events{status="completed"}' in text
    assert "vigil_outbox_oldest_pending_age_seconds" in text
    assert 'vigil_projection_breaker_state{handler="daily_rollups"} 0.0' in text


async def test_settings_round_trip_source_priority_and_reject_duplicates(h: Harness) -> None:
    status, body = await h.put_settings(sourcePriority=["a", "b"])
    assert status == 200 and body["sourcePriority"] == ["a", "b"]
    response = await h.client.put(USER_SETTINGS, headers=headers(), json={"sourcePriority": ["a", "a"]})
    error_of(response.status_code, await response.get_json(), "VALIDATION_ERROR", 400)


async def test_the_breaker_opens_after_five_failures_shows_stale_and_a_probe_closes_it(tmp_path: Path) -> None:
    clock = ManualClock()
    flaky = Flaky(next(p for p in default_projections() if p.name == "daily_rollups"), broken=True)
    config = fast_tree_config(tree={"projection": ProjectionConfig(
        dispatcher=DispatcherConfig(poll_interval=0.05),
        handler=HandlerConfig(poll_interval=0.05, timeout=10.0, lease_seconds=10.0, breaker=BreakerConfig(
            window=30.0, min_calls=1_000_000, failure_rate=1.0, consecutive_failures=5, open_for=0.3,
            half_open_probes=1)),
        figures_interval=0.05)})
    async with running_app(tmp_path, config=config, store_config=StoreConfig(clock=clock),
                           projections=projections_with(flaky)) as h:
        await upload(h, [sample("a", value=60.0)])
        service = h.services.projection
        with trio.fail_after(20):
            while service.figures().breakers["daily_rollups"] != "open":  # noqa: ASYNC110  (polling the breaker)
                clock.advance(301)  # each retry's backoff is over
                await service.process_due()
                await trio.sleep(0.02)
        assert flaky.attempts == 5
        body = await until(h, ROLLUPS, "stale", metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
        assert body["freshness"]["projectedWatermark"] == 0
        flaky.broken = False
        await trio.sleep(0.35)  # open_for: the next claim is the one probe
        clock.advance(301)
        await service.process_due()
        body = await until(h, ROLLUPS, metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
        assert body["items"][0]["count"] == 1 and service.figures().breakers["daily_rollups"] == "closed"


async def test_the_reaper_purges_completed_work_after_the_retention(tmp_path: Path) -> None:
    clock = ManualClock()
    async with running_app(tmp_path, config=quick_config(), store_config=StoreConfig(clock=clock)) as h:
        await upload(h, [sample("a")])
        await until(h, ROLLUPS, metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
        await until(h, "/v1/health/product-impact")  # every handler is done: its freshness covers the last two
        with trio.fail_after(10):  # ... and the dispatcher has completed the event (just after the last report)
            while h.db.scalar("SELECT count(*) FROM outbox_events WHERE status = 'completed'") < 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert await h.services.projection.purge_now() == 0  # completed, but younger than 24 h
        assert h.db.scalar("SELECT count(*) FROM outbox_events") == 1
        clock.advance(24 * 3600 + 1)
        assert await h.services.projection.purge_now() == 1
        assert h.db.scalar("SELECT count(*) FROM outbox_events") == 0
        assert h.db.scalar("SELECT count(*) FROM projection_checkpoints") == 0
        # The read model stays, and stays fresh.
        body = await until(h, ROLLUPS, metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
        assert body["items"][0]["count"] == 1


async def test_a_worker_process_serves_only_the_operators_endpoints(tmp_path: Path) -> None:
    async with running_app(tmp_path, config=quick_config(), settings=replace(SETTINGS, role="worker")) as h:
        status, _ = await h.get(ROLLUPS, metric="heart_rate", **{"from": "2026-11-24", "to": "2026-11-24"})
        assert status == 404
        response = await h.client.get("/v1/ops/supervision", headers=OPS)
        tree = await response.get_json()
        assert response.status_code == 200 and "projection" in tree
        paths = {c["path"] for c in tree["children"] if c["name"] == "projection"}
        assert paths == {"root/projection"}
        assert (await h.client.get("/health")).status_code == 200


async def test_discarding_a_dead_event_that_was_never_dispatched(tmp_path: Path) -> None:
    """An outbox event whose dispatch gave up has no checkpoints: DELETE removes it (200), then 404."""
    async with open_store(f"sqlite:///{tmp_path / 'v.db'}") as store, store.transaction() as tx:
        mark = await tx.watermarks.bump("alice", 1)
        event = await tx.outbox.enqueue("alice", "health.samples.changed", {
            "watermark": {"from": mark - 1, "to": mark}, "keys": [{"metric": "heart_rate", "date": "2026-11-24"}]})
        assert [e.id for e in await tx.outbox.claim("seeder", limit=1)] == [event.id]
        assert await tx.outbox.fail(event.id, "seeder", "poison", retryable=False) == "dead"
    async with running_app(tmp_path, config=quick_config()) as h:
        response = await h.client.delete(f"/v1/ops/outbox/{event.id}", headers=OPS)
        assert response.status_code == 200, await response.get_json()
        assert h.db.scalar("SELECT count(*) FROM outbox_events WHERE id = ?", event.id) == 0
        response = await h.client.delete(f"/v1/ops/outbox/{event.id}", headers=OPS)
        error_of(response.status_code, await response.get_json(), "NOT_FOUND", 404)
