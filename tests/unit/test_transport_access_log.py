"""The per-request hot path of transport: the batched access log, the request-latency histogram
and generated request ids. Each is checked on its own and through the app."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from quart_trio import QuartTrio

import transport._logging as logging_module
from kernel import ActorSystem, Supervisor
from transport import JsonFormatter, Settings, app_context, create_app
from transport._logging import AccessLog
from transport._metrics import LATENCY_BUCKETS, RequestLatency
from transport._routes import RequestIds

OPS = "unit-test-ops-token-0123456789abcdef"
SETTINGS = Settings(jwt_secret="unit-test-jwt-secret-" + "0123456789abcdef" * 3, ops_token=OPS)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, Records]]:
    lg = logging.getLogger("vigil.test.access")
    handler = Records()
    lg.addHandler(handler)
    lg.setLevel(logging.INFO)
    lg.propagate = False
    try:
        yield lg, handler
    finally:
        lg.removeHandler(handler)


# -- AccessLog ------------------------------------------------------------------------------------
def test_lines_are_written_at_once_when_not_serving(logger: tuple[logging.Logger, Records]) -> None:
    lg, handler = logger
    AccessLog(lg).add("request", {"status": 200})
    assert [(r.getMessage(), r.__dict__["fields"]) for r in handler.records] == [("request", {"status": 200})]


async def test_lines_wait_while_serving_and_keep_their_own_time(
        logger: tuple[logging.Logger, Records], autojump_clock: trio.testing.MockClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    lg, handler = logger
    access = AccessLog(lg, interval=0.2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(access.run)
        await trio.testing.wait_all_tasks_blocked()
        monkeypatch.setattr(logging_module.time, "time", lambda: 1_800_000_000.25)
        access.add("request", {"status": 201})
        monkeypatch.undo()
        await trio.sleep(0.15)
        assert handler.records == []  # still inside the interval
        await trio.sleep(0.1)
        assert [r.__dict__["fields"] for r in handler.records] == [{"status": 201}]
        line = json.loads(JsonFormatter().format(handler.records[0]))
        assert line["ts"] == "2027-01-15T08:00:00.250Z"  # when the request finished, not when written
        assert handler.records[0].created == 1_800_000_000.25
        # The next line starts a new interval.
        access.add("request", {"status": 202})
        await trio.sleep(0.1)
        assert len(handler.records) == 1
        await trio.sleep(0.15)
        assert len(handler.records) == 2
        nursery.cancel_scope.cancel()


async def test_a_full_batch_is_written_without_waiting(
        logger: tuple[logging.Logger, Records], autojump_clock: trio.testing.MockClock) -> None:
    lg, handler = logger
    access = AccessLog(lg, interval=10.0, batch=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(access.run)
        await trio.testing.wait_all_tasks_blocked()
        started = trio.current_time()
        for status in (200, 201, 202):
            access.add("request", {"status": status})
        await trio.testing.wait_all_tasks_blocked()
        assert [r.__dict__["fields"]["status"] for r in handler.records] == [200, 201, 202]
        assert trio.current_time() == started
        nursery.cancel_scope.cancel()


async def test_what_waits_is_written_when_the_writer_stops(
        logger: tuple[logging.Logger, Records], autojump_clock: trio.testing.MockClock) -> None:
    lg, handler = logger
    access = AccessLog(lg, interval=10.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(access.run)
        await trio.testing.wait_all_tasks_blocked()
        access.add("request", {"status": 200})
        access.add("websocket", {"outcome": "closed"})
        assert handler.records == []
        nursery.cancel_scope.cancel()
    assert [r.getMessage() for r in handler.records] == ["request", "websocket"]
    access.add("request", {"status": 204})  # stopped: straight through again
    assert len(handler.records) == 3


async def test_disabled_level_writes_nothing_and_one_writer_per_log(
        logger: tuple[logging.Logger, Records], autojump_clock: trio.testing.MockClock) -> None:
    lg, handler = logger
    lg.setLevel(logging.WARNING)
    access = AccessLog(lg, interval=0.1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(access.run)
        await trio.testing.wait_all_tasks_blocked()
        access.add("request", {"status": 200})
        with pytest.raises(RuntimeError, match="already running"):
            await access.run()
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert handler.records == []
    with pytest.raises(ValueError, match="interval"):
        AccessLog(lg, interval=0)


# -- through the app -------------------------------------------------------------------------------
@pytest.fixture
async def app() -> AsyncIterator[QuartTrio]:
    async with ActorSystem.start(Supervisor("root", children=[]), seed=1) as system:
        yield create_app(SETTINGS, system=system)


def access_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [line for line in map(json.loads, stream.getvalue().splitlines()) if line["logger"] == "vigil.access"]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("vigil.access")
    access.addHandler(handler)
    previous = access.level
    access.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        access.removeHandler(handler)
        access.setLevel(previous)


async def test_the_serving_app_batches_its_access_lines_and_writes_them_on_shutdown(
        app: QuartTrio, log_stream: io.StringIO, autojump_clock: trio.testing.MockClock) -> None:
    async with app.test_app() as serving:
        client = serving.test_client()
        first = await client.get("/health", headers={"X-Request-ID": "line-1"})
        assert first.status_code == 200
        assert access_lines(log_stream) == []  # waiting for the batch
        await trio.sleep(1)
        assert [line["requestId"] for line in access_lines(log_stream)] == ["line-1"]
        await client.get("/nope", headers={"X-Request-ID": "line-2"})
    lines = access_lines(log_stream)
    assert [(line["requestId"], line["status"], line["route"]) for line in lines] == [
        ("line-1", 200, "/health"), ("line-2", 404, "<unmatched>")]
    assert {"method", "path", "durationMs", "userId", "ts"} <= set(lines[0])


async def test_without_the_lifespan_lines_are_written_per_request(app: QuartTrio, log_stream: io.StringIO) -> None:
    await app.test_client().get("/health", headers={"X-Request-ID": "now"})
    assert [line["requestId"] for line in access_lines(log_stream)] == ["now"]


# -- request latency histogram ---------------------------------------------------------------------
def exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["GET", "POST"]), st.sampled_from(["/a", "/b/<id>"]),
                          st.sampled_from([200, 404, 503]),
                          st.one_of(st.sampled_from(LATENCY_BUCKETS), st.floats(-1.0, 30.0))), max_size=40))
def test_request_latency_exposes_what_a_prometheus_histogram_would(
        observations: list[tuple[str, str, int, float]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    latency = RequestLatency()
    ours.register(latency)
    reference = Histogram(RequestLatency.NAME, RequestLatency.DOC, labelnames=("method", "route", "status"),
                          buckets=LATENCY_BUCKETS, registry=theirs)
    for method, route, status, seconds in observations:
        latency.observe(method, route, status, seconds)
        reference.labels(method, route, str(status)).observe(max(0.0, seconds))
    assert sorted(exposition(ours)) == sorted(exposition(theirs))


async def test_made_up_methods_share_one_metrics_label(app: QuartTrio) -> None:
    client = app.test_client()
    for method in ("BREW", "WHEN", "BREW"):
        assert (await client.open("/health", method=method)).status_code == 405
    text = await (await client.get("/metrics", headers={"Authorization": f"Bearer {OPS}"})).get_data(as_text=True)
    assert 'vigil_http_request_duration_seconds_count{method="OTHER",route="<unmatched>",status="405"} 3.0' in text
    assert "BREW" not in text and "WHEN" not in text


# -- request ids -----------------------------------------------------------------------------------
def test_generated_request_ids_are_uuid_shaped_and_unique() -> None:
    ids, other = RequestIds(), RequestIds()
    drawn = [ids.new() for _ in range(5000)]
    assert len(set(drawn)) == len(drawn)
    assert all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", rid) for rid in drawn)
    assert other.new()[:24] != drawn[0][:24]  # another app (process) draws another prefix


async def test_apps_generate_request_ids_of_their_own(app: QuartTrio) -> None:
    other = create_app(SETTINGS, system=app_context(app).system)
    a = (await app.test_client().get("/health")).headers["X-Request-ID"]
    b = (await other.test_client().get("/health")).headers["X-Request-ID"]
    assert a[:24] != b[:24]
