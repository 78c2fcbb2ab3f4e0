"""``GET /v1/ws`` on a real hypercorn server in this process, with trio-websocket clients: who gets
which envelope, ping/pong, the close codes (4401, 4400, 4408), at-most-once delivery, and connects past the
rate limits refused with HTTP 429 before the upgrade."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection, open_websocket_url

from actors.realtime import RealtimeConfig
from storage.coordination import CoordinationConfig, open_coordination
from tests.ingest_helpers import SETTINGS
from tests.realtime_helpers import bearer, client, next_json, serving
from transport import begin_drain

pytestmark = pytest.mark.slow


async def test_a_user_gets_their_own_projection_updates_and_no_one_elses(tmp_path: Path) -> None:
    async with serving(tmp_path) as served, client(served, "alice") as alice, \
            client(served, "bob", query_token=True) as bob:
        served.realtime.projection_updated(user_id="alice", handler="daily_rollups", projected=7,
                                           correlation_id="req-1")
        served.realtime.projection_updated(user_id="bob", handler="sleep_nights", projected=3, correlation_id=None)
        assert await next_json(alice) == {
            "v": 1, "eventId": "daily_rollups:alice:7", "type": "health.projection.updated", "userId": "alice",
            "entityType": "projection", "entityId": "daily_rollups", "version": 7,
            "payload": {"handler": "daily_rollups", "projectedWatermark": 7}, "correlationId": "req-1"}
        # bob's first envelope is his own: alice's was never sent to him
        assert (await next_json(bob))["eventId"] == "sleep_nights:bob:3"
        with trio.move_on_after(0.2):
            pytest.fail(f"alice got another envelope: {await alice.get_message()}")


async def test_the_originating_device_does_not_get_its_own_sync_change(tmp_path: Path) -> None:
    async with serving(tmp_path) as served, client(served, "alice", device="phone-1") as phone, \
            client(served, "alice", header_device="tablet-1") as tablet, client(served, "alice") as anonymous:
        served.realtime.sync_changed(event_id="outbox:41", user_id="alice", entity_type="journal_entry",
                                     entity_id="e-1", version=2, payload={"op": "update"},
                                     origin_device="phone-1", correlation_id="req-9")
        served.realtime.projection_updated(user_id="alice", handler="h", projected=1, correlation_id=None)
        for ws in (tablet, anonymous):
            change = await next_json(ws)
            assert (change["type"], change["eventId"], change["entityId"], change["version"]) == (
                "sync.changed", "outbox:41", "e-1", 2)
            assert "originDevice" not in change
            assert (await next_json(ws))["type"] == "health.projection.updated"
        assert (await next_json(phone))["type"] == "health.projection.updated"  # the change skipped it


async def test_ping_pong_and_error_frames_keep_the_connection(tmp_path: Path) -> None:
    async with serving(tmp_path) as served, client(served, "alice") as ws:
        await ws.send_message(json.dumps({"type": "ping"}))
        assert await next_json(ws) == {"type": "pong"}
        await ws.send_message("not json")
        assert (await next_json(ws))["error"]["code"] == "INVALID_FRAME"
        await ws.send_message(b"[1, 2]")
        assert (await next_json(ws))["error"]["code"] == "INVALID_FRAME"
        await ws.send_message(json.dumps({"type": "subscribe"}))
        reply = await next_json(ws)
        assert reply["type"] == "error" and reply["error"]["code"] == "UNKNOWN_TYPE"
        await ws.send_message(json.dumps({"type": "ping"}))
        assert await next_json(ws) == {"type": "pong"}
        served.realtime.projection_updated(user_id="alice", handler="h", projected=1, correlation_id=None)
        assert (await next_json(ws))["eventId"] == "h:alice:1"


async def close_code(ws: WebSocketConnection) -> int | None:
    with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    return closed.value.reason.code


@pytest.mark.parametrize("query, headers", [
    ("token=not-a-jwt", []),
    ("", []),
    ("", [(b"Authorization", b"Bearer not-a-jwt")]),
])
async def test_bad_or_missing_credentials_close_4401(tmp_path: Path, query: str,
                                                     headers: list[tuple[bytes, bytes]]) -> None:
    async with serving(tmp_path) as served, open_websocket_url(served.url(query), extra_headers=headers) as ws:
        assert await close_code(ws) == 4401
        assert served.realtime.status().rooms.connections == 0


@pytest.mark.parametrize("query, headers", [
    ("deviceId=", []),
    ("deviceId=" + "x" * 129, []),
    ("deviceId=a%20b", []),
    ("", [(b"X-Device-ID", b"bad/device")]),
])
async def test_a_bad_device_id_closes_4400(tmp_path: Path, query: str, headers: list[tuple[bytes, bytes]]) -> None:
    async with serving(tmp_path) as served, \
            open_websocket_url(served.url(query), extra_headers=bearer("alice") + headers) as ws:
        assert await close_code(ws) == 4400
        assert served.realtime.connected("alice") == 0


async def test_a_repeated_event_id_is_delivered_once(tmp_path: Path) -> None:
    async with serving(tmp_path) as served, client(served, "alice") as ws:
        for projected in (1, 1, 2, 1):  # the outbox redelivering watermark 1
            served.realtime.projection_updated(user_id="alice", handler="h", projected=projected,
                                               correlation_id=None)
        assert [(await next_json(ws))["eventId"] for _ in range(2)] == ["h:alice:1", "h:alice:2"]
        with trio.move_on_after(0.2):
            pytest.fail(f"a repeat was sent: {await ws.get_message()}")
        assert served.realtime.status().rooms.duplicates == 2


async def test_a_slow_client_is_cut_off_with_4408_while_another_keeps_up(tmp_path: Path) -> None:
    # The slow client never reads: once the sockets' buffers are full, the server's send to it
    # blocks, its 4 envelopes of buffer fill, and the next event closes it. Big payloads make that
    # take a few dozen events, not many thousands.
    big = "x" * (256 * 1024)
    async with serving(tmp_path, RealtimeConfig(send_buffer=4)) as served, \
            client(served, "alice", device="fast", max_message_size=2**20) as fast, \
            client(served, "alice", device="slow", max_message_size=2**20) as slow:
        sent = 0
        lag = 0.0
        while served.realtime.status().rooms.slow == 0:
            assert sent < 2000, "the slow client was never cut off"
            sent += 1
            started = trio.current_time()
            served.realtime.sync_changed(event_id=f"e{sent}", user_id="alice", entity_type="goal",
                                         entity_id="g", version=sent, payload={"pad": big}, origin_device=None,
                                         correlation_id=None)
            got = await next_json(fast, 2.0)  # promptly, every one, in order
            lag = max(lag, trio.current_time() - started)
            assert got["eventId"] == f"e{sent}"
        assert served.realtime.connected("alice") == 1  # the slow one is gone, the fast one stays
        # after the cut the fast client still gets everything
        served.realtime.projection_updated(user_id="alice", handler="h", projected=1, correlation_id=None)
        assert (await next_json(fast))["eventId"] == "h:alice:1"
        # the slow client, reading at last, finds what the sockets held and then the close
        with trio.fail_after(30), pytest.raises(ConnectionClosed) as closed:
            while True:
                assert json.loads(await slow.get_message())["type"] == "sync.changed"
        assert closed.value.reason.code == 4408
        assert sent > 4 and lag < 2.0


async def test_the_openapi_document_declares_the_websocket(tmp_path: Path) -> None:
    async with serving(tmp_path) as served:
        response = await served.harness.client.get("/openapi.json")
        ws = (await response.get_json())["x-websockets"]["/v1/ws"]
    assert {"1000", "1001", "1011", "4400", "4401", "4408"} <= set(ws["closeCodes"])
    assert set(ws["upgradeRefusals"]) == {"429"}
    assert {p["name"] for p in ws["parameters"]} == {"token", "deviceId"}
    assert ws["security"] == [{"userBearer": []}]


async def test_shutting_down_closes_with_1001(tmp_path: Path) -> None:
    async with serving(tmp_path) as served, client(served, "alice") as ws:
        begin_drain(served.harness.app)
        assert await close_code(ws) == 1001
        assert served.realtime.connected("alice") == 0


async def test_an_upload_reaches_its_users_sockets_as_projection_updates_and_no_one_elses(tmp_path: Path) -> None:
    """End to end: upload -> outbox -> dispatcher -> every handler -> the hub -> alice's socket, with the upload's
    X-Request-ID as correlationId; bob's socket gets nothing."""
    from tests.ingest_helpers import sample, signed

    async with serving(tmp_path) as served, client(served, "alice") as alice, client(served, "bob") as bob:
        status, body, _ = await served.harness.post(signed([sample("a", value=70.0)]),
                                                    extra_headers={"X-Request-ID": "upload-1"})
        assert status == 200, body
        got = {}
        for _ in range(4):  # one per handler, in whatever order they finish
            envelope = await next_json(alice, 10.0)
            got[envelope["entityId"]] = envelope
        assert set(got) == {"daily_rollups", "sleep_nights", "session_impact", "product_impact"}
        for handler, envelope in got.items():
            assert envelope["type"] == "health.projection.updated" and envelope["userId"] == "alice"
            assert envelope["eventId"] == f"{handler}:alice:1" and envelope["version"] == 1
            assert envelope["correlationId"] == "upload-1"
        with trio.move_on_after(0.3):
            pytest.fail(f"bob got an envelope: {await bob.get_message()}")


async def test_connects_past_the_ip_limit_get_429_before_the_upgrade(tmp_path: Path) -> None:
    settings = SETTINGS.with_overrides(rate_limit_user_per_min=0, rate_limit_ip_per_min=3)
    async with open_coordination(None, config=CoordinationConfig()) as coordination, \
            serving(tmp_path, settings=settings, rate_limiter=coordination.limiter) as served:
        async with client(served, "alice") as alice, client(served, "bob"):
            # A bad credential counts against its IP too (as over HTTP), then closes 4401 as before.
            async with open_websocket_url(served.url("token=not-a-jwt")) as bad:
                assert await close_code(bad) == 4401
            with pytest.raises(ConnectionRejected) as refused:
                async with open_websocket_url(served.url(), extra_headers=bearer("carol")):
                    pytest.fail("upgraded past the IP limit")
            rejection = refused.value
            assert rejection.status_code == 429
            headers = {k.decode().lower(): v.decode() for k, v in rejection.headers}
            assert 1 <= int(headers["retry-after"]) <= 60
            assert (headers["ratelimit-limit"], headers["ratelimit-remaining"]) == ("3", "0")
            assert headers["x-request-id"] and headers["server-time"]
            assert rejection.body is not None
            error = json.loads(rejection.body)["error"]
            assert (error["code"], error["retryable"], error["details"]["scope"]) == ("RATE_LIMITED", True, "ip")
            assert served.realtime.connected("carol") == 0
            # The connections already open are not touched.
            await alice.send_message('{"type":"ping"}')
            assert await next_json(alice) == {"type": "pong"}
