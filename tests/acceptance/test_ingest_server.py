"""Ingestion end to end: ``python run.py serve`` in a subprocess over a temp SQLite file, driven with
httpx over a real socket, and the SQLite file read afterwards to see what is durable."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from storage import open_store
from tests.ingest_helpers import (
    BATCH,
    SAMPLES,
    USER_SETTINGS,
    Server,
    deletion,
    error_of,
    headers,
    running_server,
    sample,
    signed,
)

pytestmark = pytest.mark.slow


def client_for(server: Server, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base, timeout=30, **kw)


async def post(client: httpx.AsyncClient, body: Any, user: str = "alice", **kw: Any) -> httpx.Response:
    if "content" in kw:
        return await client.post(BATCH, headers={**headers(user), "Content-Type": "application/json",
                                                 **kw.pop("extra", {})}, **kw)
    return await client.post(BATCH, json=body, headers=headers(user))


def err(response: httpx.Response, code: str, status: int) -> dict[str, Any]:
    e = error_of(response.status_code, response.json(), code, status)
    assert e["requestId"] == response.headers["X-Request-ID"]
    assert response.headers["Content-Type"].startswith("application/json")
    return e


async def test_the_ingestion_contract_over_a_socket(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        async with client_for(server) as c:
            await _walk_the_contract(server, c)
        assert await server.terminate() == 0  # clients closed first: an idle keep-alive delays the drain


async def _walk_the_contract(server: Server, c: httpx.AsyncClient) -> None:
    db = server.db
    # 200, and its body
    body = signed([sample("r1"), sample("r2", metric="distance", value=1.5, unit="km"),
                   sample("r3", metric="spo2", value=0.97, unit="fraction"), sample("x", metric="mood")])
    first = await post(c, body)
    assert first.status_code == 200, first.text
    assert first.json() == {"requestId": body["requestId"], "status": "completed", "inserted": 3, "updated": 0,
                            "deleted": 0, "rejected": [{"index": 3, "code": "UNKNOWN_METRIC",
                                                        "message": first.json()["rejected"][0]["message"]}]}
    assert "Idempotent-Replay" not in first.headers and first.headers["X-Request-ID"]
    # replay: same body, identical answer, flagged
    again = await post(c, body)
    assert again.status_code == 200 and again.headers["Idempotent-Replay"] == "true"
    assert again.content == first.content
    # 422: wrong hash; same requestId with another body
    wrong = {**signed([sample("r9")]), "payloadHash": "0" * 64}
    err(await post(c, wrong), "PAYLOAD_HASH_MISMATCH", 422)
    err(await post(c, signed([sample("r1", value=99.0)], request_id=body["requestId"])), "PAYLOAD_HASH_MISMATCH", 422)
    # 409: a claim another worker holds (made directly in the same database)
    busy = signed([sample("busy")])
    async with open_store(f"sqlite:///{db.path}") as store, store.transaction() as tx:
        await tx.commit(tx.ingest.begin("alice", busy["requestId"], busy["payloadHash"], lane="hot"))
    e = err(await post(c, busy), "REQUEST_IN_PROGRESS", 409)
    assert e["retryable"] is True
    # 403 after PUT settings (another user, so alice is untouched)
    r = await c.put(USER_SETTINGS, headers=headers("dora"), json={"allowHealthDataUpload": False})
    assert r.status_code == 200 and r.json()["allowHealthDataUpload"] is False
    err(await post(c, signed([sample("d1")]), user="dora"), "HEALTH_UPLOAD_DISABLED", 403)
    # per-sample METRIC_BLOCKED
    r = await c.put(USER_SETTINGS, headers=headers("erin"), json={"blockedMetrics": ["heart_rate"]})
    assert r.status_code == 200
    r = await post(c, signed([sample("e1"), sample("e2", metric="steps", value=3, unit="count")]), user="erin")
    assert r.status_code == 200 and r.json()["inserted"] == 1
    assert [(x["index"], x["code"]) for x in r.json()["rejected"]] == [(0, "METRIC_BLOCKED")]
    # 400 with details
    naive = err(await post(c, signed([sample("n", start="2026-11-24T08:00:00", end="2026-11-24T08:00:00Z")])),
                "VALIDATION_ERROR", 400)
    assert [d["path"] for d in naive["details"]] == ["samples.0.startAt"]
    missing = {k: v for k, v in sample("m").items() if k != "metric"}
    assert [d["path"] for d in err(await post(c, signed([missing])), "VALIDATION_ERROR", 400)["details"]] == [
        "samples.0.metric"]
    assert [d["path"] for d in err(await post(c, signed(lane="bulk")), "VALIDATION_ERROR", 400)["details"]] == [
        "lane"]
    dels = err(await post(c, signed([], lane="hot", deletions=[deletion("r1")])), "VALIDATION_ERROR", 400)
    assert "change lane" in dels["details"][0]["problem"]
    # 413: too many items; too many bytes (Content-Length is refused before the body is read)
    many = signed([sample(f"s{i}") for i in range(3000)], lane="change",
                  deletions=[deletion(f"d{i}") for i in range(2001)])
    assert err(await post(c, many), "PAYLOAD_TOO_LARGE", 413)["details"] == {"maxItems": 5000}
    # Answers given before the body is read (413 by Content-Length, 415, 401) each get a connection of
    # their own: after one, the next request on the same keep-alive connection often hangs (a known
    # transport bug: the connection is not closed although its request body was never read).
    big = json.dumps(signed([sample("big", metadata={"pad": "x" * (5 * 1024 * 1024)})])).encode()
    async with client_for(server) as own:
        assert err(await post(own, None, content=big), "PAYLOAD_TOO_LARGE", 413)["details"] == {
            "maxBytes": 5 * 1024 * 1024}
    async with client_for(server) as own:
        err(await post(own, None, content=json.dumps(signed()).encode(), extra={"Content-Type": "text/plain"}),
            "UNSUPPORTED_MEDIA_TYPE", 415)
    async with client_for(server) as own:
        err(await own.post(BATCH, json=signed()), "UNAUTHENTICATED", 401)
    async with client_for(server) as own:
        err(await own.post(BATCH, json=signed(), headers={"Authorization": "Bearer nope"}), "UNAUTHENTICATED", 401)
    # nothing of the refused requests reached the database
    assert db.sample_count("alice") == 3 and db.sample_count("dora") == 0 and db.sample_count("erin") == 1
    assert db.watermark("alice") == 3
    assert db.events("alice")[0]["keys"] == [{"metric": "distance", "date": "2026-11-24"},
                                             {"metric": "heart_rate", "date": "2026-11-24"},
                                             {"metric": "spo2", "date": "2026-11-24"}]
    # reads
    page = (await c.get(SAMPLES, headers=headers(), params={"limit": 2})).json()
    assert [i["sourceRecordId"] for i in page["items"]] == ["r1", "r2"] and page["nextCursor"]
    page = (await c.get(SAMPLES, headers=headers(), params={"limit": 2, "cursor": page["nextCursor"]})).json()
    assert [(i["sourceRecordId"], i["value"], i["unit"]) for i in page["items"]] == [("r3", 97.0, "%")]
    assert page["nextCursor"] is None
    err(await c.get(SAMPLES, headers=headers(), params={"cursor": "garbage"}), "INVALID_CURSOR", 400)
    assert (await c.get(SAMPLES, headers=headers("bob"))).json() == {"items": [], "nextCursor": None}
    # the published contract
    doc = (await c.get("/openapi.json")).json()
    assert "post" in doc["paths"]["/v1/health/samples/batch-upsert"]
    assert {"get", "put"} <= set(doc["paths"]["/v1/users/me/settings"])
    assert "get" in doc["paths"]["/v1/health/samples"]


async def test_a_full_lane_is_429_over_a_socket(tmp_path: Path) -> None:
    """Hold SQLite's write lock from outside: the hot lane stalls on its first transaction, its
    mailbox (64) fills, and everything beyond it is refused at once; released, the rest commit."""
    requests = 140
    async with running_server(tmp_path) as server:
        async with client_for(server, limits=httpx.Limits(max_connections=requests + 10)) as c:
            statuses, refused_while_locked, refusals = await _flood_while_locked(server, c, requests)
        assert await server.terminate() == 0
    assert refused_while_locked >= requests - 96, Counter(statuses)
    assert Counter(statuses) == {200: requests - len(refusals), 429: len(refusals)}
    for r in refusals:
        e = err(r, "LANE_BACKPRESSURE", 429)
        assert e["retryable"] is True and e["details"] == {"lane": "hot"}
        assert isinstance(e["retryAfterMs"], int) and 50 <= e["retryAfterMs"] <= 30_000
        assert r.headers["Retry-After"] == str(max(1, math.ceil(e["retryAfterMs"] / 1000)))
    assert server.db.sample_count("alice") == requests - len(refusals)


async def _flood_while_locked(server: Server, c: httpx.AsyncClient,
                              requests: int) -> tuple[list[int], int, list[httpx.Response]]:
    statuses: list[int] = []
    refusals: list[httpx.Response] = []
    lock = sqlite3.connect(server.db.path, timeout=5, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        # at most 32 (one batch) + 64 (the mailbox) can wait: the rest must be refused now
        enough = trio.Event()

        async def one(i: int) -> None:
            r = await post(c, signed([sample(f"p{i}")]))
            statuses.append(r.status_code)
            if r.status_code == 429:
                refusals.append(r)
                if len(refusals) >= requests - 96:
                    enough.set()

        async with trio.open_nursery() as nursery:
            for i in range(requests):
                nursery.start_soon(one, i)
            with trio.move_on_after(4.0):  # then the server's busy timeout (5 s) would start to bite
                await enough.wait()
            refused_while_locked = len(refusals)
            lock.execute("ROLLBACK")
    finally:
        lock.close()
    return statuses, refused_while_locked, refusals


async def test_concurrent_requests_with_one_request_id_over_a_socket(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        async with client_for(server) as c:
            await _race_one_request_id(c)
        assert await server.terminate() == 0
    assert server.db.sample_count("alice") == 90
    assert server.db.watermark("alice") == 90
    assert len(server.db.events("alice")) == 3


async def _race_one_request_id(c: httpx.AsyncClient) -> None:
    for round_ in range(3):
        body = signed([sample(f"k{round_}-{i}") for i in range(30)])
        responses: list[httpx.Response] = []

        async def one(b: dict[str, Any] = body, out: list[httpx.Response] = responses) -> None:
            out.append(await post(c, b))

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(one)
        fresh = [r for r in responses if r.status_code == 200 and "Idempotent-Replay" not in r.headers]
        others = [r for r in responses if r not in fresh]
        assert len(fresh) == 1 and fresh[0].json()["inserted"] == 30
        for r in others:
            assert (r.status_code == 200 and r.headers["Idempotent-Replay"] == "true"
                    and r.json() == fresh[0].json()) or \
                (r.status_code == 409 and r.json()["error"]["code"] == "REQUEST_IN_PROGRESS"), r.text


async def test_sigterm_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    clients, per_request, max_requests = 6, 40, 400
    outcomes: dict[str, tuple[str, Any]] = {}  # requestId -> (user, 200 body | status | error name)
    acknowledged = 0
    warmed_up = trio.Event()
    async with running_server(tmp_path) as server:
        async def client(n: int) -> None:
            nonlocal acknowledged
            user = f"load-{n % 3}"
            async with client_for(server) as c:
                for _ in range(max_requests // clients):
                    rid = str(uuid.uuid4())
                    lane = ("hot", "cold", "change")[n % 3]
                    body = signed([sample(f"{rid}:{i}", start=f"2026-11-24T08:{i:02d}:00Z")
                                   for i in range(per_request)], lane=lane, request_id=rid)
                    try:
                        r = await post(c, body, user=user)
                    except httpx.TransportError as exc:
                        outcomes[rid] = (user, type(exc).__name__)
                        return
                    if r.status_code == 200:
                        outcomes[rid] = (user, r.json())
                        acknowledged += 1
                        if acknowledged >= 20:
                            warmed_up.set()
                    else:
                        outcomes[rid] = (user, r.status_code)
                        assert r.status_code in (429, 503), r.text
                        if r.status_code == 503:
                            e = err(r, "SHUTTING_DOWN", 503)
                            assert e["retryable"] is True and r.headers["Retry-After"] == "1"
                            return

        async with trio.open_nursery() as nursery:
            for n in range(clients):
                nursery.start_soon(client, n)
            with trio.fail_after(30):
                await warmed_up.wait()
            server.process.send_signal(signal.SIGTERM)  # mid-load: the clients are still posting
        with trio.fail_after(30):
            code = await server.process.wait()
    assert code == 0, server.log_text()[-4000:]

    db = server.db
    acked = {rid: (user, out) for rid, (user, out) in outcomes.items() if isinstance(out, dict)}
    assert len(acked) >= 20
    for rid, (user, out) in acked.items():
        assert out["inserted"] == per_request and out["rejected"] == []
        row = db.request(user, rid)
        assert row is not None and row["status"] == "completed", rid
        assert json.loads(row["result"]) == out
        assert db.scalar("SELECT count(*) FROM health_samples WHERE user_id = ? AND source_record_id LIKE ?",
                         user, f"{rid}:%") == per_request
    for rid, (user, out) in outcomes.items():
        if rid in acked:
            continue
        row = db.request(user, rid)
        n = db.scalar("SELECT count(*) FROM health_samples WHERE user_id = ? AND source_record_id LIKE ?",
                      user, f"{rid}:%")
        completed = row is not None and row["status"] == "completed"
        assert n == (per_request if completed else 0), (rid, out, n, row and row["status"])
    # every sample belongs to a completed request; nothing is left claimed; watermarks add up
    assert db.scalar("SELECT count(*) FROM ingest_requests WHERE status = 'processing'") == 0
    completed = db.rows("SELECT user_id, request_id FROM ingest_requests WHERE status = 'completed'")
    assert db.sample_count() == per_request * len(completed)
    for user in {u for u, _ in outcomes.values()}:
        done = sum(1 for r in completed if r["user_id"] == user)
        assert db.watermark(user) == per_request * done
        assert len(db.events(user)) == done


async def test_sigterm_to_the_process_group_drains_with_decode_workers(tmp_path: Path) -> None:
    """systemd (KillMode=control-group) and tini -g signal every process of the service: the decode
    workers leave SIGTERM to the server, which drains, closes the pool and exits 0."""
    async with running_server(tmp_path, "--decode-processes", "1", own_group=True) as server:
        async with client_for(server) as c:
            body = signed([sample("g1")], lane="cold", request_id="group-1")
            r = await post(c, body)
            assert r.status_code == 200 and r.json()["inserted"] == 1
        os.killpg(server.process.pid, signal.SIGTERM)
        with trio.fail_after(30):
            code = await server.process.wait()
    assert code == 0, server.log_text()[-4000:]
    assert '"msg":"stopped"' in server.log_text()
    assert "had died" not in server.log_text()  # the workers outlived the signal; the pool ended them
    assert server.db.request("alice", "group-1")["status"] == "completed"


async def test_a_connection_stays_usable_after_an_answer_given_before_the_body_was_read(tmp_path: Path) -> None:
    big = json.dumps(signed([sample("big", metadata={"pad": "x" * (5 * 1024 * 1024)})])).encode()
    small = json.dumps(signed()).encode()
    early_answers = [
        (big, {**headers(), "Content-Type": "application/json"}, 413),   # the client resends after this one
        (small, {"Content-Type": "application/json"}, 401),              # an expired token, then the retry
    ]
    async with running_server(tmp_path) as server:
        for _ in range(10):
            for content, hdrs, status in early_answers:
                async with httpx.AsyncClient(base_url=server.base, timeout=1.0) as c:
                    assert (await c.post(BATCH, content=content, headers=hdrs)).status_code == status
                    retry = await c.post(BATCH, json=signed(), headers=headers())  # same pooled connection
                    assert retry.status_code == 200
        assert await server.terminate() == 0
