"""``sync.changed`` (API.md "Realtime"): a push reaches the user's other devices' WebSocket connections, not
the pushing device's, never another user's; ``eventId`` is the change's outbox event id. Across two server
processes it travels through Redis (VIGIL_TEST_REDIS_URL; skipped loudly when unreachable, a failure under
CI=true)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.realtime import RealtimeConfig
from storage.coordination import RedisConfig
from tests.integration.test_coordination_redis import REDIS_URL, require_redis
from tests.integration.test_realtime_redis import bridge, eventually
from tests.realtime_helpers import client, next_json, serving
from tests.sync_helpers import Device, op


# The read side also speaks on these sockets (a sync change feeds the session-impact projection, whose
# health.projection.updated goes to all of the user's connections): these tests look at sync.changed only.
async def next_sync(ws: object) -> Any:
    while True:
        envelope = await next_json(ws)
        if envelope["type"] == "sync.changed":
            return envelope


async def nothing_more(ws: object) -> None:
    with trio.move_on_after(0.3):
        envelope = await next_sync(ws)
        pytest.fail(f"unexpected frame {envelope}")


def outbox_ids(served: object) -> list[str]:
    db = served.harness.db  # type: ignore[attr-defined]
    return [str(r["id"]) for r in db.rows("SELECT id FROM outbox_events WHERE type = 'sync.entity.changed'"
                                          " ORDER BY id")]


async def test_sync_changed_reaches_the_users_other_devices_only(tmp_path: Path) -> None:
    async with serving(tmp_path) as served, \
            client(served, "alice", device="phone") as phone_ws, \
            client(served, "alice", device="tablet") as tablet_ws, \
            client(served, "alice") as anonymous_ws, \
            client(served, "bob", device="phone") as bob_ws:
        phone = Device(served.harness.client, "alice", "phone")
        (result,) = await phone.push(op("journal_entry", "j1", data={"text": "hi"}))
        (event_id,) = outbox_ids(served)
        for ws in (tablet_ws, anonymous_ws):
            envelope = await next_sync(ws)
            assert (envelope["type"], envelope["eventId"], envelope["userId"], envelope["entityType"],
                    envelope["entityId"], envelope["version"]) == ("sync.changed", event_id, "alice",
                                                                   "journal_entry", "j1", 1)
            assert envelope["payload"]["data"] == result["entity"]["data"]
            assert envelope["correlationId"]
        await nothing_more(phone_ws)  # not echoed to the pushing device
        await nothing_more(bob_ws)  # never another user's
        # A change the server makes goes to every device, the phone included.
        await served.harness.services.sync.apply_server_change("alice", "journal_entry", "j1", {"text": "srv"})
        for ws in (phone_ws, tablet_ws):
            assert (await next_sync(ws))["version"] == 2
        await nothing_more(bob_ws)


@pytest.mark.redis
async def test_sync_changed_crosses_processes_through_redis_and_is_not_echoed(tmp_path: Path) -> None:
    require_redis()
    prefix = f"vigil-test:{uuid.uuid4().hex[:12]}:"

    def bridged(process_id: str) -> RealtimeConfig:
        return RealtimeConfig(redis_url=REDIS_URL, redis=RedisConfig(key_prefix=prefix, connect_timeout=0.5,
                                                                     command_timeout=0.5, health_timeout=0.5),
                              process_id=process_id, seed=11, retry_base=0.02, retry_max=0.1)

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    async with serving(tmp_path / "one", bridged("p1")) as one, serving(tmp_path / "two", bridged("p2")) as two:
        await eventually(lambda: all(bridge(s.realtime).connected for s in (one, two)))
        async with client(two, "alice", device="tablet") as tablet_ws, \
                client(two, "alice", device="phone") as phone_elsewhere_ws, \
                client(two, "bob", device="tablet") as bob_ws, \
                client(one, "alice", device="phone") as phone_ws:
            phone = Device(one.harness.client, "alice", "phone")
            await phone.push(op("goal", "g1", data={"title": "walk"}))
            (event_id,) = outbox_ids(one)
            envelope = await next_sync(tablet_ws)
            assert (envelope["type"], envelope["eventId"], envelope["entityId"]) == ("sync.changed", event_id, "g1")
            await nothing_more(phone_elsewhere_ws)  # the origin device, in the other process too
            await nothing_more(phone_ws)
            await nothing_more(bob_ws)
            await nothing_more(tablet_ws)  # exactly once
