"""Sync through HTTP (API.md "Sync"): two devices of a user editing the same entities under every policy,
idempotent replays, cursors, conflicts, the IDOR matrix and admission control. The whole application in-process
over a temp SQLite store (``running_app``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.ingest_helpers import Harness, error_of, headers, running_app
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


# -- every policy, two devices editing the same entity -------------------------------------------------------
async def test_merge_journal_entry_text_local_wins_tags_merge(h: Harness) -> None:
    phone, tablet = devices(h)
    await phone.push(op("journal_entry", "j1", data={"text": "a", "tags": ["x"]}))
    (first,) = await phone.push(op("journal_entry", "j1", "update", 1, {"text": "phone", "tags": ["x", "p"]}))
    (second,) = await tablet.push(op("journal_entry", "j1", "update", 1, {"text": "tablet", "tags": ["x", "t"]}))
    assert first["status"] == "applied" and first["entity"]["version"] == 2
    assert second["status"] == "merged"
    assert second["conflict"]["strategy"] == "MERGE" and second["conflict"]["serverVersion"] == 2
    assert second["entity"]["version"] == 3
    assert second["entity"]["data"] == {"text": "tablet", "tags": ["x", "p", "t"]}
    pulled = await phone.pull_all()
    assert pulled[-1]["version"] == 3 and pulled[-1]["data"] == second["entity"]["data"]


async def test_merge_consumption_session_status_monotonic_count_max(h: Harness) -> None:
    phone, tablet = devices(h)
    await phone.push(op("consumption_session", "s1", data={"status": "active", "count": 1}))
    await phone.push(op("consumption_session", "s1", "update", 1, {"status": "ended", "count": 3}))
    (stale,) = await tablet.push(op("consumption_session", "s1", "update", 1, {"status": "paused", "count": 5}))
    assert stale["status"] == "merged"
    assert stale["entity"]["data"] == {"status": "ended", "count": 5}


async def test_last_write_wins_compares_client_timestamps(h: Harness) -> None:
    phone, tablet = devices(h)
    await phone.push(op("consumption_session", "s1", data={"status": "active", "count": 0}))
    await phone.push(op("consumption", "c1", data={"sessionId": "s1", "amount": 1.0}, at="2026-11-24T08:00:00Z"))
    await phone.push(op("consumption", "c1", "update", 1, {"sessionId": "s1", "amount": 2.0},
                        at="2026-11-24T08:05:00Z"))
    (older,) = await tablet.push(op("consumption", "c1", "update", 1, {"sessionId": "s1", "amount": 3.0},
                                    at="2026-11-24T08:01:00Z"))
    assert older["status"] == "merged" and older["conflict"]["resolution"] == "server"
    assert older["entity"]["version"] == 2 and older["entity"]["data"]["amount"] == 2.0
    (newer,) = await tablet.push(op("consumption", "c1", "update", 1, {"sessionId": "s1", "amount": 4.0},
                                    at="2026-11-24T08:09:00+01:00"))  # 07:09Z: older still
    assert newer["conflict"]["resolution"] == "server"
    (latest,) = await tablet.push(op("consumption", "c1", "update", 1, {"sessionId": "s1", "amount": 5.0},
                                     at="2026-11-24T09:00:00Z"))
    assert latest["conflict"]["resolution"] == "client"
    assert latest["entity"]["version"] == 3 and latest["entity"]["data"]["amount"] == 5.0


async def test_server_wins_keeps_the_product(h: Harness) -> None:
    phone, tablet = devices(h)
    await phone.push(op("product", "p1", data={"name": "A"}))
    await phone.push(op("product", "p1", "update", 1, {"name": "B"}))
    (stale,) = await tablet.push(op("product", "p1", "update", 1, {"name": "C"}))
    assert stale["status"] == "merged" and stale["conflict"]["resolution"] == "server"
    assert stale["entity"]["version"] == 2 and stale["entity"]["data"] == {"name": "B"}
    assert [c["version"] for c in await tablet.pull_all()] == [1, 2]  # nothing logged for the losing change


async def test_manual_keeps_an_open_conflict_listed_and_resolved(h: Harness) -> None:
    phone, tablet = devices(h)
    await phone.push(op("goal", "g1", data={"title": "walk"}))
    await phone.push(op("goal", "g1", "update", 1, {"title": "run"}))
    (stale,) = await tablet.push(op("goal", "g1", "update", 1, {"title": "swim"}))
    assert stale["status"] == "conflict" and stale["entity"]["version"] == 2
    conflict_id = stale["conflict"]["id"]
    (listed,) = await phone.conflicts()
    assert (listed["id"], listed["serverData"], listed["clientData"], listed["serverVersion"],
            listed["baseVersion"], listed["status"]) == (conflict_id, {"title": "run"},
                                                         {"title": "swim"}, 2, 1,
                                                         "open")
    status, body = await tablet.resolve(conflict_id, "custom", {"target": 3})
    error_of(status, body, "VALIDATION_ERROR", 400)  # custom data is validated as a goal
    status, body = await tablet.resolve(conflict_id, "client")
    assert status == 200, body
    assert body["conflict"]["status"] == "resolved" and body["entity"]["version"] == 3
    assert body["entity"]["data"]["title"] == "swim"
    assert await phone.conflicts() == []
    status, body = await tablet.resolve(conflict_id, "server")
    error_of(status, body, "CONFLICT_ALREADY_RESOLVED", 409)
    assert [c["version"] for c in await phone.pull_all()] == [1, 2, 3]


async def test_manual_resolved_with_server_or_custom_data(h: Harness) -> None:
    phone, tablet = devices(h)
    await phone.push(op("goal", "g1", data={"title": "walk"}))
    await phone.push(op("goal", "g1", "update", 1, {"title": "run"}))
    (a,) = await tablet.push(op("goal", "g1", "update", 1, {"title": "swim"}))
    (b,) = await tablet.push(op("goal", "g1", "update", 1, {"title": "fly"}))
    status, body = await phone.resolve(a["conflict"]["id"], "server")
    assert status == 200 and body["entity"]["version"] == 2 and body["conflict"]["resolution"] == "server"
    status, body = await phone.resolve(b["conflict"]["id"], "custom", {"title": "run and swim"})
    assert status == 200 and body["entity"]["version"] == 3
    assert body["entity"]["data"] == {"title": "run and swim"}


async def test_client_wins_from_configuration(tmp_path: Path) -> None:
    from dataclasses import replace
    from types import MappingProxyType

    from actors.sync import DEFAULT_POLICIES, EntityPolicy, Policies, SyncConfig
    from actors.sync._policy import Product
    from tests.ingest_helpers import fast_tree_config

    policies = Policies(MappingProxyType({**DEFAULT_POLICIES.types, "note": EntityPolicy(
        entity_type="note", schema=Product, strategy="CLIENT_WINS")}))
    config = replace(fast_tree_config(), sync=SyncConfig(policies=policies))
    async with running_app(tmp_path, config=config) as harness:
        phone, tablet = devices(harness)
        await phone.push(op("note", "n1", data={"name": "A"}))
        await phone.push(op("note", "n1", "update", 1, {"name": "B"}))
        (stale,) = await tablet.push(op("note", "n1", "update", 1, {"name": "C"}))
        assert stale["status"] == "merged" and stale["conflict"]["resolution"] == "client"
        assert stale["entity"]["version"] == 3 and stale["entity"]["data"] == {"name": "C"}


async def test_deletes_and_their_conflicts(h: Harness) -> None:
    phone, tablet = devices(h)
    await phone.push(op("journal_entry", "j1", data={"text": "a"}))
    (gone,) = await phone.push(op("journal_entry", "j1", "delete", 1))
    assert gone["status"] == "applied" and gone["entity"]["deleted"] and gone["entity"]["version"] == 2
    (late,) = await tablet.push(op("journal_entry", "j1", "update", 1, {"text": "b"}))
    assert late["status"] == "merged" and late["entity"]["deleted"]  # MERGE: a delete wins
    (again,) = await tablet.push(op("journal_entry", "j1", "update", 2, {"text": "b"}))
    assert again["status"] == "rejected" and again["error"]["code"] == "ENTITY_DELETED"
    changes = await tablet.pull_all()
    assert [(c["op"], c["deleted"]) for c in changes] == [("create", False), ("delete", True)]


# -- idempotency, validation ----------------------------------------------------------------------------------
async def test_a_repeated_operation_id_returns_the_stored_result_and_changes_nothing(h: Harness) -> None:
    phone, tablet = devices(h)
    create = op("journal_entry", "j1", data={"text": "a"}, op_id="op-1")
    (first,) = await phone.push(create)
    (again,) = await phone.push(create)
    (elsewhere,) = await tablet.push({**create, "data": {"text": "other"}})  # unique per user, not per device
    assert first == again == elsewhere
    both = await phone.push(create, create)
    assert both == [first, first]
    assert len(await tablet.pull_all()) == 1
    assert h.db.scalar("SELECT count(*) FROM outbox_events WHERE type = 'sync.entity.changed'") == 1
    (bobs,) = await Device(h.client, "bob", "phone").push(create)  # another user's namespace
    assert bobs["status"] == "applied"


async def test_a_bad_operation_is_rejected_and_the_rest_applies(h: Harness) -> None:
    phone, _ = devices(h)
    results = await phone.push(
        op("journal_entry", "j1", data={"text": "ok"}),
        op("journal_entry", "j2", data={"text": 5}),
        op("spaceship", "x1", data={}),
        {"entityType": "journal_entry", "op": "create"},
        op("journal_entry", "j3", "update", 4, {"text": "missing"}),
        op("consumption", "c1", data={"sessionId": "nope"}),
        op("journal_entry", "j1", "update", 7, {"text": "ahead"}),
        op("journal_entry", "j4", data={"text": "also ok"}),
    )
    assert [r["status"] for r in results] == ["applied", "rejected", "rejected", "rejected", "rejected", "rejected",
                                              "rejected", "applied"]
    assert [r["error"]["code"] for r in results[1:7]] == ["VALIDATION_ERROR", "UNKNOWN_ENTITY_TYPE",
                                                          "VALIDATION_ERROR", "NOT_FOUND", "PARENT_NOT_FOUND",
                                                          "INVALID_BASE_VERSION"]
    assert results[1]["error"]["details"][0]["path"] == "data.text"
    assert results[3]["clientSyncOperationId"] is None


async def test_push_and_pull_need_a_device_id(h: Harness) -> None:
    for method, path in (("post", "/v1/sync/push"), ("get", "/v1/sync/pull")):
        call = getattr(h.client, method)
        kwargs: dict[str, object] = {"json": {"operations": []}} if method == "post" else {}
        for bad in ({}, {"X-Device-ID": "no spaces"}):
            response = await call(path, headers={**headers("alice"), **bad}, **kwargs)
            error_of(response.status_code, await response.get_json(), "VALIDATION_ERROR", 400)


# -- pulls and cursors -----------------------------------------------------------------------------------------
async def test_cursors_move_forward_only_and_repeat_the_same_page(h: Harness) -> None:
    phone, tablet = devices(h)
    for i in range(5):
        await phone.push(op("journal_entry", f"j{i}", data={"text": str(i)}))
    status, first = await tablet.pull_raw(limit=2)
    assert status == 200 and first["hasMore"] and [c["entityId"] for c in first["changes"]] == ["j0", "j1"]
    status, second = await tablet.pull_raw(first["nextCursor"], 2)
    assert [c["entityId"] for c in second["changes"]] == ["j2", "j3"]
    status, repeat = await tablet.pull_raw(first["nextCursor"], 2)
    assert (status, repeat) == (200, second)  # the same cursor twice: the same page
    status, third = await tablet.pull_raw(second["nextCursor"], 2)  # acknowledges j3
    assert [c["entityId"] for c in third["changes"]] == ["j4"] and not third["hasMore"]
    status, body = await tablet.pull_raw(first["nextCursor"], 2)  # older than the acknowledged one
    error_of(status, body, "INVALID_CURSOR", 400)
    status, body = await phone.pull_raw(first["nextCursor"], 2)  # per device: the phone never acknowledged it
    assert status == 200
    for bad in ("not a cursor!", "Zm9v", "dmlnaWwuc3luYzo5OTk"):  # malformed, foreign, ahead of the log
        status, body = await tablet.pull_raw(bad)
        error_of(status, body, "INVALID_CURSOR", 400)


async def test_a_page_puts_parents_before_children(h: Harness) -> None:
    phone, tablet = devices(h)
    await phone.push(op("consumption_session", "s1", data={"status": "active", "count": 0}),
                     op("consumption", "c1", data={"sessionId": "s1"}),
                     op("consumption_session", "s1", "update", 1, {"status": "active", "count": 1}),
                     op("consumption_session", "s2", data={"status": "active", "count": 0}),
                     op("consumption", "c2", data={"sessionId": "s2"}))
    changes = await tablet.pull_all()
    assert [(c["entityId"], c["version"]) for c in changes] == [("s1", 1), ("s1", 2), ("s2", 1), ("c1", 1),
                                                                ("c2", 1)]


# -- IDOR: another user's entities, changes and conflicts ---------------------------------------------------------
async def test_a_user_cannot_push_to_pull_from_or_resolve_another_users_entities(h: Harness) -> None:
    alice, alice_tablet = devices(h)
    bob = Device(h.client, "bob", "phone")  # even the same device id
    await alice.push(op("goal", "g1", data={"title": "walk"}))
    await alice.push(op("goal", "g1", "update", 1, {"title": "run"}))
    (stale,) = await alice_tablet.push(op("goal", "g1", "update", 1, {"title": "swim"}))
    conflict_id = stale["conflict"]["id"]

    (update,) = await bob.push(op("goal", "g1", "update", 2, {"title": "hijack"}))
    assert update["status"] == "rejected" and update["error"]["code"] == "NOT_FOUND"
    (delete,) = await bob.push(op("goal", "g1", "delete", 2))
    assert delete["status"] == "rejected"
    assert await bob.pull_all() == []
    assert await bob.conflicts() == []
    for resolution in ("server", "client", "custom"):
        status, body = await bob.resolve(conflict_id, resolution, {"title": "x"})
        error_of(status, body, "NOT_FOUND", 404)
    (still,) = await alice.conflicts()
    assert still["status"] == "open"
    assert [c["version"] for c in await alice_tablet.pull_all()] == [1, 2]
    for method, path in (("post", "/v1/sync/push"), ("get", "/v1/sync/pull"), ("get", "/v1/sync/conflicts"),
                         ("post", f"/v1/sync/conflicts/{conflict_id}/resolve")):
        response = await getattr(h.client, method)(path, headers={"X-Device-ID": "phone"})
        error_of(response.status_code, await response.get_json(), "UNAUTHENTICATED", 401)


# -- admission control ----------------------------------------------------------------------------------------------
async def test_a_burst_beyond_the_admission_limit_gets_sync_busy_with_jittered_retry(tmp_path: Path) -> None:
    from dataclasses import replace

    import trio

    from actors.sync import SyncConfig
    from tests.ingest_helpers import fast_tree_config

    config = replace(fast_tree_config(), sync=SyncConfig(max_in_flight=2, busy_retry_ms=400, seed=5))
    async with running_app(tmp_path, config=config) as harness:
        outcomes: list[tuple[int, dict[str, object], object]] = []

        async def one(i: int) -> None:
            device = Device(harness.client, "alice", f"d{i}")
            response = await harness.client.post("/v1/sync/push", headers=device.headers(), json={
                "operations": [op("journal_entry", f"j{i}", data={"text": str(i)})]})
            outcomes.append((response.status_code, await response.get_json(), response.headers.get("Retry-After")))

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
        busy = [o for o in outcomes if o[0] == 429]
        ok = [o for o in outcomes if o[0] == 200]
        assert len(busy) + len(ok) == 20 and busy and len(ok) >= 2
        delays = set()
        for status, body, retry_after in busy:
            err = error_of(status, body, "SYNC_BUSY", 429)
            assert err["retryable"] and 400 <= err["retryAfterMs"] < 1200
            assert retry_after in ("1", "2")
            delays.add(err["retryAfterMs"])
        assert len(delays) > 1  # jittered: a reconnect storm spreads out
        assert harness.services.sync.in_flight == 0
        changes = await Device(harness.client, "alice", "x").pull_all()
        assert len(changes) == len(ok)  # a refused push changed nothing


async def test_nul_characters_reject_the_operation_not_the_push(h: Harness) -> None:
    phone, _ = devices(h)
    results = await phone.push(op("journal_entry", "j\x00", data={"text": "a"}),
                               op("journal_entry", "j2", data={"text": "a\x00b"}),
                               op("journal_entry", "j3", data={"text": "ok"}))
    assert [r["status"] for r in results] == ["rejected", "rejected", "applied"]
    status, body = await phone.push_raw([[None, None]])  # not an operation at all: the request is malformed
    error_of(status, body, "VALIDATION_ERROR", 400)
