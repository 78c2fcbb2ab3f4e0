"""The realtime domain without sockets: envelopes and their encodings, the delivery rule of the
rooms (origin device, repeats, slow consumers), and the hub and facade in an actor system under
``MockClock``."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors.realtime import (
    CLOSE_GOING_AWAY,
    CLOSE_SLOW_CONSUMER,
    BridgeState,
    Connection,
    Envelope,
    HubUnavailable,
    InvalidDeviceId,
    RealtimeConfig,
    RealtimeDomain,
    RealtimeService,
    RedisBridge,
    Rooms,
    check_device_id,
    projection_updated,
    sync_changed,
)
from actors.realtime._bridge import BridgeSettings
from actors.realtime._envelope import from_wire, to_wire
from kernel import Supervisor
from kernel.testing import inject_crash, open_test_system
from storage.coordination import CoordinationCircuitOpen, CoordinationConfig, CoordinationUnavailable
from transport._realtime import client_reply


def event(event_id: str, user: str = "alice", origin: str | None = None) -> Envelope:
    return sync_changed(event_id=event_id, user_id=user, entity_type="goal", entity_id="g", version=1,
                        payload={"title": "run"}, origin_device=origin, correlation_id="c")


def drain(conn: Connection) -> list[str]:
    """The event ids queued for ``conn`` right now (without waiting)."""
    out = []
    while True:
        try:
            out.append(conn._recv.receive_nowait().event_id)
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return out


# -- envelopes ----------------------------------------------------------------------------------------
def test_the_client_form_is_camel_case_without_the_origin_device() -> None:
    envelope = projection_updated(user_id="alice", handler="daily", projected=9, correlation_id="req-1")
    assert envelope.to_dict() == {
        "v": 1, "eventId": "daily:alice:9", "type": "health.projection.updated", "userId": "alice",
        "entityType": "projection", "entityId": "daily", "version": 9,
        "payload": {"handler": "daily", "projectedWatermark": 9}, "correlationId": "req-1"}
    assert "originDevice" not in event("e", origin="phone").to_json()


def test_the_wire_form_round_trips_with_the_origin_device_and_process() -> None:
    envelope = event("e1", origin="phone")
    assert from_wire(to_wire(envelope, origin_process="p1")) == (envelope, "p1")


@pytest.mark.parametrize("data", [b"not json", b"[]", b'{"v": 2}', b'{"v": 1, "eventId": "x"}',
                                  b'{"v": 1, "eventId": "x", "type": "t", "userId": "u", "entityType": "e",'
                                  b' "entityId": "i", "version": "seven", "originProcess": "p"}'])
def test_a_malformed_wire_message_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        from_wire(data)


@pytest.mark.parametrize("device", ["phone-1", "A.b:c_d-9", "x" * 128])
def test_device_ids_of_the_pattern_pass(device: str) -> None:
    assert check_device_id(device) == device


@pytest.mark.parametrize("device", ["", "x" * 129, "a b", "bad/device", "é", "phone\n"])
def test_device_ids_outside_the_pattern_are_refused(device: str) -> None:
    with pytest.raises(InvalidDeviceId):
        check_device_id(device)


# -- the rooms ----------------------------------------------------------------------------------------
def test_delivery_skips_the_origin_device_and_other_users() -> None:
    rooms = Rooms(buffer=8, remember=8)
    phone, tablet = rooms.register("alice", "phone"), rooms.register("alice", "tablet")
    bob = rooms.register("bob", "phone")
    rooms.deliver(event("e1", origin="phone"))
    rooms.deliver(event("e2"))
    assert (drain(phone), drain(tablet), drain(bob)) == (["e2"], ["e1", "e2"], [])


def test_a_repeat_is_dropped_while_remembered_and_the_memory_is_bounded() -> None:
    rooms = Rooms(buffer=8, remember=2)
    conn = rooms.register("alice", "phone")
    for event_id in ("a", "a", "b", "c", "b", "a"):
        rooms.deliver(event(event_id))
    # "a" was forgotten once "b" and "c" came: bounded memory, so an old repeat goes out again
    assert drain(conn) == ["a", "b", "c", "a"]
    assert rooms.stats().duplicates == 2


async def test_a_full_buffer_closes_that_connection_only_and_discards_its_queue() -> None:
    rooms = Rooms(buffer=2, remember=8)
    slow, fast = rooms.register("alice", "slow"), rooms.register("alice", "fast")
    for n in range(3):
        rooms.deliver(event(f"e{n}"))
        drain(fast)
    assert slow.close_code == CLOSE_SLOW_CONSUMER and fast.close_code is None
    assert [c.device_id for c in rooms.connections("alice")] == ["fast"]
    assert [envelope async for envelope in slow] == []  # what it had queued is not sent after the cut
    rooms.deliver(event("e3"))
    assert drain(fast) == ["e3"]
    stats = rooms.stats()
    assert (stats.slow, stats.connections, stats.users) == (1, 1, 1)


async def test_close_all_ends_every_connection_and_iteration() -> None:
    rooms = Rooms(buffer=4, remember=4)
    conn = rooms.register("alice", "phone")
    rooms.deliver(event("e1"))
    rooms.close_all(CLOSE_GOING_AWAY, "bye")
    assert rooms.shut and conn.close_code == CLOSE_GOING_AWAY and rooms.stats().connections == 0
    assert [envelope async for envelope in conn] == []


@pytest.mark.parametrize("frame, reply", [
    ('{"type": "ping"}', {"type": "pong"}),
    (b'{"type": "ping"}', {"type": "pong"}),
    ("nope", {"type": "error", "error": {"code": "INVALID_FRAME"}}),
    (b"\xff\xfe", {"type": "error", "error": {"code": "INVALID_FRAME"}}),
    ("[]", {"type": "error", "error": {"code": "INVALID_FRAME"}}),
    ('{"type": "pong"}', {"type": "error", "error": {"code": "UNKNOWN_TYPE"}}),
    ("{}", {"type": "error", "error": {"code": "UNKNOWN_TYPE"}}),
])
def test_client_replies(frame: str | bytes, reply: dict[str, object]) -> None:
    got = client_reply(frame)
    if reply["type"] == "error":
        assert got["type"] == "error" and got["error"]["code"] == reply["error"]["code"]  # type: ignore[index]
        assert got["error"]["message"]
    else:
        assert got == reply


# -- the hub and the facade in an actor system ---------------------------------------------------------
def realtime_tree(domain: RealtimeDomain) -> Supervisor:
    return Supervisor("root", children=[domain.subtree()])


async def next_id(conn: Connection) -> str:
    with trio.fail_after(1):
        return (await anext(conn)).event_id


async def test_the_facade_delivers_through_the_hub(autojump_clock: trio.testing.MockClock) -> None:
    domain = RealtimeDomain(RealtimeConfig(process_id="p"))
    async with open_test_system(realtime_tree(domain), seed=1) as system:
        service = domain.service(system)
        async with service.connect("alice") as one, service.connect("alice") as two:
            assert one.device_id != two.device_id  # no device id: each is a device of its own
            service.publish(event("e1", origin=one.device_id))
            assert await next_id(two) == "e1"
            service.projection_updated(user_id="alice", handler="h", projected=1, correlation_id=None)
            assert await next_id(one) == "h:alice:1"
            assert service.connected("alice") == 2
        assert service.connected("alice") == 0 and one.closed
        with pytest.raises(InvalidDeviceId):
            async with service.connect("alice", "no spaces"):
                pytest.fail("connected with an invalid device id")
        await system.stop()


async def test_a_hub_crash_keeps_the_connections(autojump_clock: trio.testing.MockClock) -> None:
    domain = RealtimeDomain()
    async with open_test_system(realtime_tree(domain), seed=1) as system:
        service = domain.service(system)
        async with service.connect("alice", "phone") as conn:
            inject_crash(system, "root/realtime/hub")
            await trio.sleep(1.0)  # past the restart backoff
            assert system.tree().children[0].children[0].restarts == 1
            service.publish(event("after-restart"))
            assert await next_id(conn) == "after-restart"
        await system.stop()


async def test_stopping_the_hub_closes_connections_with_1001(autojump_clock: trio.testing.MockClock) -> None:
    domain = RealtimeDomain()
    async with open_test_system(realtime_tree(domain), seed=1) as system:
        service: RealtimeService = domain.service(system)
        async with service.connect("alice", "phone") as conn:
            await system.stop()
            assert conn.close_code == CLOSE_GOING_AWAY
        with pytest.raises(HubUnavailable):
            async with service.connect("alice", "phone"):
                pytest.fail("connected to a stopped hub")
        service.publish(event("late"))  # never raises, never waits
        assert service.status().dropped == 1


class _FlakyBus:
    """A message bus whose first ``failures`` publishes fail as Redis being unavailable."""

    def __init__(self, failures: int, error: type[Exception] = CoordinationUnavailable) -> None:
        self.failures = failures
        self.error = error
        self.published: list[list[tuple[str, bytes]]] = []

    async def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        if self.failures:
            self.failures -= 1
            raise (self.error("redis did not answer") if self.error is CoordinationUnavailable
                   else self.error("open", 1.0))
        self.published.append(list(messages))


def _bridge() -> RedisBridge:
    send, receive = trio.open_memory_channel[Envelope](4)
    settings = BridgeSettings(url="redis://127.0.0.1:1/0", channel="c", process_id="p",
                              coordination=CoordinationConfig(), retry_base=0.02, retry_max=0.1, subscriber_buffer=4)
    return RedisBridge(settings=settings, outbox=receive, hub="hub", state=BridgeState(), seed=3)


@pytest.mark.parametrize(("failures", "sent", "calls"), [(0, True, 1), (1, True, 2), (2, False, 2)])
async def test_the_bridge_sends_a_failed_batch_once_more(failures: int, sent: bool, calls: int,
                                                         autojump_clock: trio.testing.MockClock) -> None:
    """Receivers drop repeats by eventId, so one more try is safe; a second failure loses the batch."""
    bus = _FlakyBus(failures)
    assert await _bridge()._publish(bus, [("c", b"x")]) is sent  # type: ignore[arg-type]
    assert len(bus.published) == (1 if sent else 0) and failures - bus.failures + len(bus.published) == calls


async def test_the_bridge_does_not_publish_again_while_the_breaker_refuses(
        autojump_clock: trio.testing.MockClock) -> None:
    bus = _FlakyBus(1, CoordinationCircuitOpen)
    assert await _bridge()._publish(bus, [("c", b"x")]) is False  # type: ignore[arg-type]
    assert bus.failures == 0 and bus.published == []
