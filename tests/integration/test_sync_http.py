"""Sync through HTTP (API.md "Sync"): two devices of a user editing the same entities under every policy,
idempotent replays, cursors, conflicts, the IDOR matrix and admission control. The whole application in-process
over a temp SQLite store (``running_app``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.ingest_helpers import Harness, error_of, running_app
from tests.sync_helpers import Device, op


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_app(tmp_path) as harness:
        yield harness


def devices(h: Harness, user: str = "alice") -> tuple[Device, Device]:
    return Device(h.client, user, "phone"), Device(h.client, user, "tablet")


async def test_a_create_on_one_device_is_pulled_by_the_other_with_its_outbox_event(h: Harness) -> None:
    phone, tablet = devices(h)
    (result,) = await phone.push(op("journal_entry", "j1", data={"text": "hello"}))
    assert result["status"] == "applied" and result["error"] is None
    assert result["entity"] == {"entityType": "journal_entry", "entityId": "j1", "version": 1,
                                "data": {"text": "hello", "tags": []}, "deleted": False}
    changes = await tablet.pull_all()
    assert [(c["entityId"], c["op"], c["version"], c["data"]) for c in changes] == [
        ("j1", "create", 1, {"text": "hello", "tags": []})]
    events = h.db.rows("SELECT payload, correlation_id FROM outbox_events WHERE type = 'sync.entity.changed'")
    assert [json.loads(e["payload"]) for e in events] == [{
        "entityType": "journal_entry", "entityId": "j1", "version": 1, "op": "create", "deleted": False,
        "deviceId": "phone", "data": {"text": "hello", "tags": []}}]
    assert events[0]["correlation_id"]


async def test_server_change_bumps_the_version_logs_the_change_and_enqueues_an_event(h: Harness) -> None:
    phone, tablet = devices(h)
    await phone.push(op("consumption_session", "s1", data={"status": "active", "count": 1}))
    entity = await h.services.sync.apply_server_change("alice", "consumption_session", "s1",
                                                       {"status": "ended", "count": 1}, correlation_id="reaper-1")
    assert entity.version == 2 and entity.data == {"status": "ended", "count": 1}
    changes = await tablet.pull_all()
    assert [(c["op"], c["version"], c["data"]["status"]) for c in changes] == [("create", 1, "active"),
                                                                               ("update", 2, "ended")]
    rows = h.db.rows("SELECT payload, correlation_id FROM outbox_events WHERE type = 'sync.entity.changed'"
                     " ORDER BY id")
    last = json.loads(rows[-1]["payload"])
    assert last["deviceId"] is None and last["version"] == 2 and last["op"] == "update"
    assert rows[-1]["correlation_id"] == "reaper-1"
