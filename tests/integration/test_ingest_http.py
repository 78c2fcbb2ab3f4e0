"""Health-sample ingestion through the Quart test client, over the real application tree and a temp
SQLite store (API.md "User settings" and "Health samples: ingestion").

Every durable effect is checked by reading the SQLite file directly (``Db``), not through the code
under test.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import rfc8785
import trio

from actors.ingest import IngestBatch, ReapNow, SampleInput, payload_hash
from storage import InvalidData, StoreConfig
from storage.testing import ManualClock
from tests.ingest_helpers import (
    BATCH,
    SAMPLES,
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
from transport import begin_drain


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_app(tmp_path) as harness:
        yield harness


def result(inserted: int = 0, updated: int = 0, deleted: int = 0, rejected: list[Any] | None = None,
           *, request_id: str) -> dict[str, Any]:
    return {"requestId": request_id, "status": "completed", "inserted": inserted, "updated": updated,
            "deleted": deleted, "rejected": rejected or []}


async def claim_directly(h: Harness, body: dict[str, Any], user: str = "alice") -> None:
    """Leave (user, requestId) 'processing', as a lane in another process would mid-request."""
    async with h.store.transaction() as tx:
        (begun,) = await tx.commit(tx.ingest.begin(user, body["requestId"], body["payloadHash"], lane=body["lane"]))
    assert begun.acquired


# -- 200 and its body ---------------------------------------------------------------------------------
async def test_200_body_shape_and_durable_effects(h: Harness) -> None:
    body = signed([sample("r1"), sample("r2", start="2026-11-24T08:01:00Z"), sample("r3", metric="nope")])
    status, out, hdrs = await h.post(body)
    assert status == 200, out
    assert out == result(2, rejected=[{"index": 2, "code": "UNKNOWN_METRIC", "message": out["rejected"][0]["message"]}],
                         request_id=body["requestId"])
    assert "nope" in out["rejected"][0]["message"]
    assert "Idempotent-Replay" not in hdrs
    assert hdrs["Content-Type"] == "application/json"
    assert [r["source_record_id"] for r in h.db.samples("alice")] == ["r1", "r2"]
    row = h.db.request("alice", body["requestId"])
    assert row is not None and row["status"] == "completed" and json.loads(row["result"]) == out


async def test_replay_returns_the_stored_result_with_the_header_and_writes_nothing(h: Harness) -> None:
    body = signed([sample("r1"), sample("r2", metric="steps", value=10, unit="count")])
    status, first, hdrs = await h.post(body)
    assert status == 200 and "Idempotent-Replay" not in hdrs
    # the same body with another key order and formatting is the same payload (JCS)
    raw = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()
    status, again, hdrs = await h.post(None, raw=raw)
    assert status == 200
    assert hdrs["Idempotent-Replay"] == "true"
    assert again == first
    assert h.db.sample_count("alice") == 2
    assert h.db.watermark("alice") == 2
    assert len(h.db.events("alice")) == 1


async def test_wrong_hash_is_422_and_nothing_is_claimed(h: Harness) -> None:
    body = signed([sample("r1")])
    body["payloadHash"] = hashlib.sha256(b"something else").hexdigest()
    status, out, _ = await h.post(body)
    err = error_of(status, out, "PAYLOAD_HASH_MISMATCH", 422)
    assert err["retryable"] is False
    assert h.db.request("alice", body["requestId"]) is None
    assert h.db.sample_count() == 0


async def test_hash_over_the_body_without_payload_hash_only(h: Harness) -> None:
    """A hash of non-canonical JSON, or of the body with a payloadHash member in it, is wrong."""
    body = signed([sample("r1")])
    unsigned = {k: v for k, v in body.items() if k != "payloadHash"}
    plain = hashlib.sha256(json.dumps(unsigned).encode()).hexdigest()  # not JCS
    status, out, _ = await h.post({**unsigned, "payloadHash": plain})
    error_of(status, out, "PAYLOAD_HASH_MISMATCH", 422)
    with_member = hashlib.sha256(rfc8785.dumps({**unsigned, "payloadHash": ""})).hexdigest()
    status, out, _ = await h.post({**unsigned, "payloadHash": with_member})
    error_of(status, out, "PAYLOAD_HASH_MISMATCH", 422)
    status, out, _ = await h.post(body)
    assert status == 200, out


async def test_server_checks_the_rfc8785_form_written_out_by_hand(h: Harness) -> None:
    body: dict[str, Any] = {"requestId": "jcs-1", "lane": "hot", "samples": [{
        "sourceId": "w", "sourceRecordId": "r1", "metric": "heart_rate", "value": 61.0, "unit": "bpm",
        "startAt": "2026-11-24T08:00:00Z", "endAt": "2026-11-24T08:00:00Z",
        "metadata": {"z": 1e21, "\u00e9": 1.0, "a": [1e-7, 0.5], "\U0001f600": "x", "\ufb33": "y"}}]}
    canonical = ('{"lane":"hot","requestId":"jcs-1","samples":[{"endAt":"2026-11-24T08:00:00Z",'
                 '"metadata":{"a":[1e-7,0.5],"z":1e+21,"\u00e9":1,"\U0001f600":"x","\ufb33":"y"},"metric":"heart_rate",'
                 '"sourceId":"w","sourceRecordId":"r1","startAt":"2026-11-24T08:00:00Z","unit":"bpm","value":61}]}')
    naive = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                           .encode()).hexdigest()
    error_of(*(await h.post({**body, "payloadHash": naive}))[:2], "PAYLOAD_HASH_MISMATCH", 422)
    status, out, _ = await h.post({**body, "payloadHash": hashlib.sha256(canonical.encode()).hexdigest()})
    assert (status, out["inserted"]) == (200, 1), out


async def test_same_request_id_with_a_different_body_is_422(h: Harness) -> None:
    first = signed([sample("r1")], request_id="req-1")
    assert (await h.post(first))[0] == 200
    other = signed([sample("r1", value=99.0)], request_id="req-1")
    status, out, _ = await h.post(other)
    error_of(status, out, "PAYLOAD_HASH_MISMATCH", 422)
    assert [r["value"] for r in h.db.samples("alice")] == [61.0]
    assert h.db.watermark("alice") == 1


async def test_request_in_progress_is_409_retryable(h: Harness) -> None:
    body = signed([sample("r1")])
    await claim_directly(h, body)
    status, out, hdrs = await h.post(body)
    err = error_of(status, out, "REQUEST_IN_PROGRESS", 409)
    assert err["retryable"] is True
    assert h.db.sample_count() == 0
    assert h.db.request("alice", body["requestId"])["status"] == "processing"
    # a different payload under the processing id is still a mismatch, not a conflict
    other = signed([sample("r9")], request_id=body["requestId"])
    error_of(*(await h.post(other))[:2], "PAYLOAD_HASH_MISMATCH", 422)


# -- settings and privacy -----------------------------------------------------------------------------
async def test_me_names_the_tokens_user(h: Harness) -> None:
    assert await h.get("/v1/users/me") == (200, {"userId": "alice"})
    assert await h.get("/v1/users/me", user="bob") == (200, {"userId": "bob"})


async def test_settings_defaults_and_round_trip(h: Harness) -> None:
    assert await h.get(USER_SETTINGS) == (200, {"allowHealthDataUpload": True, "blockedMetrics": [],
                                                "timezone": "UTC", "sourcePriority": []})
    status, out = await h.put_settings(allowHealthDataUpload=False, blockedMetrics=["steps", "spo2"],
                                       timezone="Europe/Berlin")
    assert status == 200
    assert out == {"allowHealthDataUpload": False, "blockedMetrics": ["spo2", "steps"], "timezone": "Europe/Berlin",
                   "sourcePriority": []}
    assert await h.get(USER_SETTINGS) == (200, out)


@pytest.mark.parametrize("settings, path", [
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"blockedMetrics": ["not_a_metric"]}, "blockedMetrics"),
    ({"allowHealthDataUpload": "maybe"}, "allowHealthDataUpload"),
])
async def test_bad_settings_are_400_with_the_field(h: Harness, settings: dict[str, Any], path: str) -> None:
    status, out = await h.put_settings(**settings)
    err = error_of(status, out, "VALIDATION_ERROR", 400)
    assert [d["path"].split(".")[0] for d in err["details"]] == [path]  # a list's bad item: "blockedMetrics.0"


async def test_upload_disabled_is_403_and_the_request_can_be_retried_once_enabled(h: Harness) -> None:
    assert (await h.put_settings(allowHealthDataUpload=False))[0] == 200
    body = signed([sample("r1")])
    status, out, _ = await h.post(body)
    error_of(status, out, "HEALTH_UPLOAD_DISABLED", 403)
    assert h.db.sample_count() == 0 and h.db.watermark("alice") == 0 and h.db.events("alice") == []
    assert h.db.request("alice", body["requestId"]) is None  # a refused upload claims nothing
    assert (await h.put_settings(allowHealthDataUpload=True))[0] == 200
    status, out, hdrs = await h.post(body)
    assert status == 200 and out["inserted"] == 1 and "Idempotent-Replay" not in hdrs


async def test_blocked_metric_rejects_those_samples_only(h: Harness) -> None:
    assert (await h.put_settings(blockedMetrics=["steps"]))[0] == 200
    body = signed([sample("s1", metric="steps", value=100, unit="count"), sample("h1"),
                   sample("s2", metric="steps", value=5, unit="count")])
    status, out, _ = await h.post(body)
    assert status == 200
    assert [(r["index"], r["code"]) for r in out["rejected"]] == [(0, "METRIC_BLOCKED"), (2, "METRIC_BLOCKED")]
    assert out["inserted"] == 1
    assert [r["metric"] for r in h.db.samples("alice")] == ["heart_rate"]


async def test_blocking_is_judged_first_even_though_uploads_are_prepared_before_settings_are_read(
        h: Harness) -> None:
    """An upload is prepared before its lane reads the settings; one naming a blocked metric is
    judged again in the lane, so blocking still comes before every other rejection, and a blocked
    later repeat of a sample does not displace the earlier one."""
    assert (await h.put_settings(blockedMetrics=["steps"]))[0] == 200
    body = signed([sample("same", value=60), sample("s1", metric="steps", value=float("nan"), unit="count"),
                   sample("same", metric="steps", value=5, unit="count")])
    status, out, _ = await h.post(body)
    assert status == 200 and out["inserted"] == 1
    assert [(r["index"], r["code"]) for r in out["rejected"]] == [(1, "METRIC_BLOCKED"), (2, "METRIC_BLOCKED")]
    assert [(r["source_record_id"], r["metric"], r["value"]) for r in h.db.samples("alice")] == [
        ("same", "heart_rate", 60.0)]


# -- request validation -------------------------------------------------------------------------------
def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize("body, paths, problem", [
    (signed([sample("r1", start="2026-11-24T08:00:00")]), {"samples.0.startAt", "samples.0.endAt"}, "timezone"),
    (signed([_without(sample("r1"), "unit")]), {"samples.0.unit"}, "required"),
    (signed([_without(sample("r1"), "startAt")]), {"samples.0.startAt"}, "required"),
    (signed([sample("r1")], lane="warm"), {"lane"}, "'hot', 'cold' or 'change'"),
    (signed([sample("r1")], lane="hot", deletions=[deletion("r1")]), {""}, "change lane"),
    (signed([sample("r1")], lane="cold", deletions=[deletion("r1")]), {""}, "change lane"),
    (_without(signed([sample("r1")]), "requestId"), {"requestId"}, "required"),
    ({**signed([sample("r1")]), "payloadHash": "ABC"}, {"payloadHash"}, "pattern"),
], ids=["naive-timestamp", "missing-unit", "missing-startAt", "bad-lane", "deletions-on-hot", "deletions-on-cold",
        "missing-requestId", "malformed-hash"])
async def test_invalid_request_is_400_with_field_details(h: Harness, body: dict[str, Any], paths: set[str],
                                                         problem: str) -> None:
    status, out, _ = await h.post(body)
    err = error_of(status, out, "VALIDATION_ERROR", 400)
    assert {d["path"] for d in err["details"]} == paths
    assert all(problem in d["problem"] for d in err["details"]), err["details"]
    assert all(d["in"] == "body" for d in err["details"])
    assert h.db.rows("SELECT count(*) FROM ingest_requests")[0][0] == 0


async def test_malformed_json_is_400(h: Harness) -> None:
    status, out, _ = await h.post(None, raw=b'{"requestId": "x", ')
    err = error_of(status, out, "VALIDATION_ERROR", 400)
    assert err["details"][0]["type"] == "json_invalid"


async def test_deletions_on_the_change_lane_are_accepted(h: Harness) -> None:
    assert (await h.post(signed([sample("r1")])))[0] == 200
    status, out, _ = await h.post(signed([], lane="change", deletions=[deletion("r1")]))
    assert status == 200 and out["deleted"] == 1


# -- limits -------------------------------------------------------------------------------------------
async def test_more_than_5000_items_is_413(h: Harness) -> None:
    samples = [sample(f"r{i}", start=f"2026-11-24T08:{i // 60 % 60:02d}:{i % 60:02d}Z") for i in range(4000)]
    dels = [deletion(f"d{i}") for i in range(1001)]
    status, out, _ = await h.post(signed(samples, lane="change", deletions=dels))
    err = error_of(status, out, "PAYLOAD_TOO_LARGE", 413)
    assert err["details"] == {"maxItems": 5000}
    assert h.db.sample_count() == 0


async def test_exactly_5000_items_is_accepted(h: Harness) -> None:
    samples = [sample(f"r{i}", start="2026-11-24T08:00:00Z") for i in range(4999)]
    status, out, _ = await h.post(signed(samples, lane="change", deletions=[deletion("gone")]))
    assert status == 200, out
    assert (out["inserted"], out["deleted"], out["rejected"]) == (4999, 0, [])
    assert h.db.sample_count("alice") == 4999


async def test_body_over_5_mib_is_413(h: Harness) -> None:
    body = signed([sample("r1", metadata={"pad": "x" * (5 * 1024 * 1024)})])
    raw = json.dumps(body).encode()
    assert len(raw) > 5 * 1024 * 1024
    status, out, _ = await h.post(None, raw=raw)
    err = error_of(status, out, "PAYLOAD_TOO_LARGE", 413)
    # the test client streams the body: the limit trips while reading (over a socket, Content-Length does)
    assert err["details"] in (None, {"maxBytes": 5 * 1024 * 1024})
    assert h.db.sample_count() == 0


async def test_wrong_content_type_is_415(h: Harness) -> None:
    raw = json.dumps(signed()).encode()
    status, out, _ = await h.post(None, raw=raw, extra_headers={"Content-Type": "text/plain"})
    error_of(status, out, "UNSUPPORTED_MEDIA_TYPE", 415)
    response = await h.client.post(BATCH, data=raw, headers=headers())  # no content type at all
    error_of(response.status_code, await response.get_json(), "UNSUPPORTED_MEDIA_TYPE", 415)


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-jwt", "Basic YWxpY2U6eA=="])
async def test_missing_or_bad_credentials_are_401(h: Harness, authorization: str | None) -> None:
    hdrs = {"Content-Type": "application/json"}
    if authorization:
        hdrs["Authorization"] = authorization
    for method, path in (("POST", BATCH), ("GET", SAMPLES), ("GET", USER_SETTINGS), ("PUT", USER_SETTINGS)):
        response = await h.client.open(path, method=method, headers=hdrs, data=json.dumps(signed()).encode())
        error_of(response.status_code, await response.get_json(), "UNAUTHENTICATED", 401)
    assert h.db.sample_count() == 0


async def test_draining_is_503_with_retry_after(h: Harness) -> None:
    begin_drain(h.app)
    status, out, hdrs = await h.post(signed())
    err = error_of(status, out, "SHUTTING_DOWN", 503)
    assert err["retryable"] is True and err["retryAfterMs"] == 1000
    assert hdrs["Retry-After"] == "1"
    response = await h.client.put(USER_SETTINGS, headers=headers(), json={"timezone": "UTC"})
    error_of(response.status_code, await response.get_json(), "SHUTTING_DOWN", 503)
    assert h.db.sample_count() == 0


# -- units and per-sample judgement ---------------------------------------------------------------------
CONVERSIONS = [
    ("distance", 1.5, "km", 1500.0, "m"),
    ("active_energy", 418.4, "kJ", 100.0, "kcal"),
    ("weight", 150.0, "lb", 68.0388555, "kg"),
    ("hrv_sdnn", 0.045, "s", 45.0, "ms"),
    ("spo2", 0.97, "fraction", 97.0, "%"),
    ("body_temperature", 98.6, "degF", 37.0, "degC"),
    ("heart_rate", 61.0, "bpm", 61.0, "bpm"),
]


async def test_known_units_are_stored_canonical(h: Harness) -> None:
    samples = [sample(f"c{i}", metric=m, value=v, unit=u, start=f"2026-11-24T08:0{i}:00Z")
               for i, (m, v, u, _, _) in enumerate(CONVERSIONS)]
    status, out, _ = await h.post(signed(samples))
    assert status == 200 and out["rejected"] == [] and out["inserted"] == len(CONVERSIONS)
    status, page = await h.get(SAMPLES)
    got = {i["sourceRecordId"]: (i["metric"], i["value"], i["unit"]) for i in page["items"]}
    for i, (metric, _, _, value, unit) in enumerate(CONVERSIONS):
        m, v, u = got[f"c{i}"]
        assert (m, u) == (metric, unit)
        assert v == pytest.approx(value, rel=1e-9), metric


async def test_bad_samples_are_rejected_one_by_one(h: Harness) -> None:
    samples = [
        sample("ok1"),
        sample("u1", metric="distance", value=3, unit="furlong"),
        sample("m1", metric="mood", value=3, unit="points"),
        sample("t1", start="2026-11-24T09:00:00Z", end="2026-11-24T08:59:59Z"),
        sample("ok2", metric="steps", value=12, unit="count"),
        sample("n1", value=None),
    ]
    status, out, _ = await h.post(signed(samples))
    assert status == 200
    assert [(r["index"], r["code"]) for r in out["rejected"]] == [
        (1, "UNKNOWN_UNIT"), (2, "UNKNOWN_METRIC"), (3, "INVALID_TIME_RANGE"), (5, "NON_FINITE_VALUE")]
    assert all(r["message"] for r in out["rejected"])
    assert out["inserted"] == 2
    assert [r["source_record_id"] for r in h.db.samples("alice")] == ["ok1", "ok2"]


def _jcs_hash_with_nulls(body: dict[str, Any]) -> str:
    """The hash a JavaScript client sends for non-finite numbers (JSON.stringify writes null)."""
    def nulls(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: nulls(x) for k, x in v.items()}
        if isinstance(v, list):
            return [nulls(x) for x in v]
        return v
    return hashlib.sha256(rfc8785.dumps(nulls({k: v for k, v in body.items() if k != "payloadHash"}))).hexdigest()


@pytest.mark.parametrize("literal", ["NaN", "1e999", "-1e999", "Infinity"])
async def test_non_finite_json_value_rejects_that_sample_only(h: Harness, literal: str) -> None:
    body: dict[str, Any] = {"requestId": f"nf-{literal}", "lane": "hot",
                            "samples": [sample("bad", value=float("nan")), sample("good", start="2026-11-24T08:05:00Z")]}
    body["payloadHash"] = _jcs_hash_with_nulls(body)
    raw = json.dumps(body).replace("NaN", literal, 1).encode()
    assert literal.encode() in raw
    status, out, _ = await h.post(None, raw=raw)
    assert status == 200, out
    assert [(r["index"], r["code"]) for r in out["rejected"]] == [(0, "NON_FINITE_VALUE")]
    assert [r["source_record_id"] for r in h.db.samples("alice")] == ["good"]


# -- sample identity and deletions --------------------------------------------------------------------------
async def test_same_identity_again_updates_instead_of_duplicating(h: Harness) -> None:
    assert (await h.post(signed([sample("r1", value=60.0)])))[1]["inserted"] == 1
    status, out, _ = await h.post(signed([sample("r1", value=70.0)]))
    assert (status, out["inserted"], out["updated"]) == (200, 0, 1)
    rows = h.db.samples("alice")
    assert [(r["source_record_id"], r["value"], r["revision"]) for r in rows] == [("r1", 70.0, 2)]
    # another startAt or another source is another sample
    status, out, _ = await h.post(signed([sample("r1", start="2026-11-24T08:00:01Z"),
                                          sample("r1", source="oura-ring")]))
    assert (out["inserted"], out["updated"]) == (2, 0)
    assert h.db.sample_count("alice") == 3
    assert h.db.watermark("alice") == 4


async def test_a_repeat_inside_one_request_counts_once_and_the_later_wins(h: Harness) -> None:
    status, out, _ = await h.post(signed([sample("r1", value=60.0), sample("r1", value=65.0)]))
    assert (status, out["inserted"], out["updated"]) == (200, 1, 0)
    assert [r["value"] for r in h.db.samples("alice")] == [65.0]


async def test_deletions_on_the_change_lane_soft_delete(h: Harness) -> None:
    await h.post(signed([sample("r1"), sample("r2", start="2026-11-24T08:01:00Z")]))
    status, out, _ = await h.post(signed([], lane="change", deletions=[
        deletion("r1"), deletion("never-existed"), deletion("r2", start="2026-11-24T09:00:00Z")]))
    assert status == 200
    assert (out["inserted"], out["updated"], out["deleted"], out["rejected"]) == (0, 0, 1, [])
    status, page = await h.get(SAMPLES)
    assert [i["sourceRecordId"] for i in page["items"]] == ["r2"]
    all_rows = h.db.samples("alice", live=False)
    assert [(r["source_record_id"], r["metric"], r["deleted_at"] is not None) for r in all_rows] == [
        ("r1", "heart_rate", True), ("r2", "heart_rate", False),
        ("never-existed", "", True), ("r2", "", True)]  # tombstones of the keys not there: never read
    # deleting it again changes nothing
    status, out, _ = await h.post(signed([], lane="change", deletions=[deletion("r1")]))
    assert out["deleted"] == 0
    assert h.db.watermark("alice") == 3  # 2 inserts + 1 deletion


async def test_a_deletion_before_its_sample_rejects_the_late_sample_alone(h: Harness) -> None:
    """API.md: a deletion is a tombstone even when its sample has not arrived yet (the change lane is
    not ordered with the cold one); the later upsert of that identity is rejected, the rest accepted."""
    late = "2026-11-20T08:00:00Z"
    status, out, _ = await h.post(signed([], lane="change", deletions=[deletion("late", start=late)]))
    assert (status, out["deleted"]) == (200, 0)
    assert h.db.watermark("alice") == 0 and h.db.events("alice") == []  # no read model changed
    body = signed([sample("late", start=late, value=60.0), sample("early"), sample("bad", metric="nope"),
                   sample("late", start=late, value=70.0), sample("other", start="2026-11-24T08:02:00Z")],
                  lane="cold")
    status, out, hdrs = await h.post(body)
    assert status == 200, out
    assert (out["inserted"], out["updated"], out["deleted"]) == (2, 0, 0)
    # The later of the two "late" samples is the one that would have been written: its index is named.
    assert [(r["index"], r["code"]) for r in out["rejected"]] == [(2, "UNKNOWN_METRIC"), (3, "SAMPLE_DELETED")]
    assert "deleted" in out["rejected"][1]["message"]
    status, page = await h.get(SAMPLES)
    assert status == 200 and [i["sourceRecordId"] for i in page["items"]] == ["early", "other"]
    (tomb,) = [r for r in h.db.samples("alice", live=False) if r["source_record_id"] == "late"]
    assert tomb["deleted_at"] is not None and (tomb["metric"], tomb["value"], tomb["revision"]) == ("", 0.0, 1)
    assert h.db.watermark("alice") == 2
    assert h.db.events("alice")[0]["keys"] == [{"metric": "heart_rate", "date": "2026-11-24"}]  # not the 20th
    status, again, hdrs = await h.post(body)  # a replay answers the same, rejections included
    assert (status, hdrs["Idempotent-Replay"], again) == (200, "true", out)


async def test_a_deleted_sample_uploaded_again_stays_deleted(h: Harness) -> None:
    assert (await h.post(signed([sample("r1", value=60.0)])))[1]["inserted"] == 1
    assert (await h.post(signed([], lane="change", deletions=[deletion("r1")])))[1]["deleted"] == 1
    status, out, _ = await h.post(signed([sample("r1", value=99.0)], lane="hot"))
    assert status == 200 and (out["inserted"], out["updated"]) == (0, 0)
    assert [(r["index"], r["code"]) for r in out["rejected"]] == [(0, "SAMPLE_DELETED")]
    assert [(r["value"], r["deleted_at"] is not None) for r in h.db.samples("alice", live=False)] == [(60.0, True)]
    assert (await h.get(SAMPLES))[1]["items"] == []
    assert h.db.watermark("alice") == 2 and len(h.db.events("alice")) == 2  # the refused upload changed nothing


# -- outbox and watermark ----------------------------------------------------------------------------------
async def test_outbox_event_names_local_dates_in_the_users_timezone(h: Harness) -> None:
    assert (await h.put_settings(timezone="Europe/Berlin"))[0] == 200
    body = signed([
        sample("late", start="2026-11-24T23:30:00Z", end="2026-11-24T23:31:00Z"),
        sample("early", start="2026-11-24T10:00:00Z"),
        sample("steps", metric="steps", value=10, unit="count", start="2026-11-24T22:59:59Z"),
        sample("bad", metric="mood", unit="x"),
    ])
    status, out, _ = await h.post(body)
    assert status == 200 and out["inserted"] == 3
    events = h.db.events("alice")
    # The timezone change was one watermark change of its own (it moves every day): the upload's are (1, 4].
    assert events == [{
        "requestId": body["requestId"], "lane": "hot", "changes": 3, "watermark": {"from": 1, "to": 4},
        "keys": [{"metric": "heart_rate", "date": "2026-11-24"}, {"metric": "heart_rate", "date": "2026-11-25"},
                 {"metric": "steps", "date": "2026-11-24"}],
    }]
    assert h.db.watermark("alice") == 4
    # The projection dispatcher runs beside ingest: the event may already be dispatched (never dead).
    rows = h.db.rows("SELECT status, dedupe_key FROM outbox_events WHERE type = 'health.samples.changed'")
    assert [r["dedupe_key"] for r in rows] == [f"ingest:alice:{body['requestId']}"]
    assert rows[0]["status"] in ("pending", "processing", "completed")


async def test_each_request_adds_one_event_and_its_changes_to_the_watermark(h: Harness) -> None:
    await h.post(signed([sample("a"), sample("b", start="2026-11-24T08:01:00Z")]))
    await h.post(signed([sample("a", value=70.0), sample("c", start="2026-11-24T08:02:00Z")]))
    await h.post(signed([], lane="change", deletions=[deletion("b", start="2026-11-24T08:01:00Z")]))
    only_rejected = signed([sample("x", metric="mood", unit="x")])
    status, out, _ = await h.post(only_rejected)
    assert status == 200 and out["rejected"][0]["code"] == "UNKNOWN_METRIC"
    events = h.db.events("alice")
    assert [e["changes"] for e in events] == [2, 2, 1]  # no event for a request that changed nothing
    assert events[2]["lane"] == "change" and events[2]["keys"] == [{"metric": "heart_rate", "date": "2026-11-24"}]
    assert h.db.watermark("alice") == 5
    assert h.db.request("alice", only_rejected["requestId"])["status"] == "completed"


async def test_a_failed_write_leaves_nothing_half_done(h: Harness) -> None:
    """Samples, event, watermark and completion are one unit: a store error in the middle of the
    write transaction leaves none of them (the storage layer refuses a 2 MiB metadata document)."""
    big = sample("big", metadata={"pad": "x" * (300 * 1024)})
    body = signed([sample("fine"), big])
    status, out, _ = await h.post(body)
    error_of(status, out, "VALIDATION_ERROR", 400)
    assert h.db.sample_count() == 0
    assert h.db.watermark("alice") == 0
    assert h.db.events("alice") == []
    row = h.db.request("alice", body["requestId"])
    assert row is None or row["status"] == "failed"



def _lane_crashes(h: Harness) -> int:
    return sum(h.system.node(f"root/ingest/{lane}").snapshot().crashes for lane in ("hot", "cold", "change"))


@pytest.mark.parametrize("bad", [
    sample("big", metadata={"pad": "x" * (300 * 1024)}),
    sample("nul\u0000id"),
    sample("nan-meta", metadata={"x": float("nan")}),
], ids=["oversized-metadata", "nul-in-id", "nan-in-metadata"])
async def test_data_the_store_refuses_is_answered_without_crashing_the_lane(h: Harness, bad: dict[str, Any]) -> None:
    """A client's bad data is the client's problem: 400 naming the field, and the lane keeps
    running (a crash per request would let one client restart the ingest subtree at will)."""
    body = signed([sample("fine"), bad])
    status, out, _ = await h.post(body)
    err = error_of(status, out, "VALIDATION_ERROR", 400)
    assert err["details"][0]["field"].startswith("samples[1]")
    assert _lane_crashes(h) == 0
    assert h.db.sample_count() == 0 and h.db.watermark("alice") == 0
    # Checked while the request is prepared, before it is claimed: nothing of it is recorded.
    assert h.db.request("alice", body["requestId"]) is None
    status, out, _ = await h.post(signed([sample("next")]))
    assert (status, out["inserted"]) == (200, 1)


async def test_a_refused_request_in_a_group_commit_does_not_sink_its_neighbours(h: Harness) -> None:
    bad = signed([sample("big", metadata={"pad": "x" * (300 * 1024)})])
    goods = [signed([sample(f"g{i}")]) for i in range(6)]
    outcomes: dict[str, int] = {}

    async def one(body: dict[str, Any]) -> None:
        outcomes[body["requestId"]] = (await h.post(body))[0]

    async with trio.open_nursery() as nursery:
        for body in [goods[0], goods[1], goods[2], bad, goods[3], goods[4], goods[5]]:
            nursery.start_soon(one, body)
    assert outcomes.pop(bad["requestId"]) == 400
    assert set(outcomes.values()) == {200}
    assert _lane_crashes(h) == 0
    assert sorted(r["source_record_id"] for r in h.db.samples("alice")) == [f"g{i}" for i in range(6)]
    assert h.db.watermark("alice") == 6 and len(h.db.events("alice")) == 6



async def test_an_unprepared_refused_request_in_a_group_commit_does_not_sink_its_neighbours(h: Harness) -> None:
    """The lane prepares what arrives unprepared (kernel API callers): data the store refuses then
    fails inside the group's transaction, which is retried one request at a time."""
    service = h.services.ingest

    def batch(record: str, source_id: str = "watch") -> IngestBatch:
        at = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
        return IngestBatch(user_id="alice", request_id=f"req-{record}", payload_hash="0" * 64, lane="cold",
                           samples=(SampleInput(source_id=source_id, source_record_id=record, metric="steps",
                                                value=12.0, unit="count", start_at=at, end_at=at),))

    outcomes: dict[str, Any] = {}

    async def one(b: IngestBatch) -> None:
        try:
            result = await service.submit(b)
            outcomes[b.request_id] = "replayed" if result.replayed else "completed"
        except InvalidData as exc:
            outcomes[b.request_id] = exc.field

    async with trio.open_nursery() as nursery:
        for b in [batch("g0"), batch("bad", source_id="nul\x00"), batch("g1")]:
            nursery.start_soon(one, b)
    assert outcomes == {"req-g0": "completed", "req-bad": "samples[0].source_id", "req-g1": "completed"}
    assert _lane_crashes(h) == 0
    assert sorted(r["source_record_id"] for r in h.db.samples("alice")) == ["g0", "g1"]
    assert h.db.request("alice", "req-bad") is None  # its transaction left nothing behind

# -- reading samples ---------------------------------------------------------------------------------------
async def test_cursor_paging_visits_every_sample_once_in_order(h: Harness) -> None:
    samples = [sample(f"r{i:02d}", metric="heart_rate" if i % 3 else "steps", value=i,
                      unit="bpm" if i % 3 else "count", start=f"2026-11-24T08:{i:02d}:00Z") for i in range(25)]
    assert (await h.post(signed(samples)))[1]["inserted"] == 25
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 10}
        if cursor:
            params["cursor"] = cursor
        status, page = await h.get(SAMPLES, **params)
        assert status == 200 and set(page) == {"items", "nextCursor"}
        pages += 1
        seen += [i["sourceRecordId"] for i in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
        assert len(page["items"]) == 10
    assert pages == 3
    assert seen == [f"r{i:02d}" for i in range(25)]
    item = (await h.get(SAMPLES, limit=1))[1]["items"][0]
    assert set(item) == {"sourceId", "sourceRecordId", "metric", "value", "unit", "startAt", "endAt", "metadata",
                         "updatedAt"}
    assert item["startAt"] == "2026-11-24T08:00:00Z"


async def test_metric_and_time_filters(h: Harness) -> None:
    samples = [sample(f"r{i:02d}", metric="heart_rate" if i % 3 else "steps", value=i,
                      unit="bpm" if i % 3 else "count", start=f"2026-11-24T08:{i:02d}:00Z") for i in range(25)]
    await h.post(signed(samples))
    status, page = await h.get(SAMPLES, metric="steps", limit=100)
    assert [i["sourceRecordId"] for i in page["items"]] == [f"r{i:02d}" for i in range(0, 25, 3)]
    # from is inclusive, to exclusive; offsets other than Z are understood
    status, page = await h.get(SAMPLES, **{"from": "2026-11-24T08:05:00Z", "to": "2026-11-24T09:10:00+01:00"})
    assert [i["sourceRecordId"] for i in page["items"]] == [f"r{i:02d}" for i in range(5, 10)]
    status, page = await h.get(SAMPLES, metric="steps", **{"from": "2026-11-24T08:05:00Z"}, limit=2)
    assert [i["sourceRecordId"] for i in page["items"]] == ["r06", "r09"] and page["nextCursor"]
    status, page = await h.get(SAMPLES, metric="steps", **{"from": "2026-11-24T08:05:00Z"}, limit=2,
                               cursor=page["nextCursor"])
    assert [i["sourceRecordId"] for i in page["items"]] == ["r12", "r15"]


@pytest.mark.parametrize("cursor", ["garbage", "eyJ4IjogMX0", "%%%", "a" * 150, "1.2.3", "1" * 19 + ".5"])
async def test_garbage_cursor_is_400_invalid_cursor(h: Harness, cursor: str) -> None:
    status, out = await h.get(SAMPLES, cursor=cursor)
    err = error_of(status, out, "INVALID_CURSOR", 400)
    assert [(d["in"], d["path"]) for d in err["details"]] == [("query", "cursor")]


async def test_a_bad_cursor_beside_another_bad_parameter_is_a_plain_validation_error(h: Harness) -> None:
    status, out = await h.get(SAMPLES, cursor="garbage", limit=0)
    err = error_of(status, out, "VALIDATION_ERROR", 400)
    assert sorted(d["path"] for d in err["details"]) == ["cursor", "limit"]


@pytest.mark.parametrize("params, path", [
    ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"from": "2026-11-24T08:00:00"}, "from"),
    ({"to": "yesterday"}, "to"),
])
async def test_bad_query_is_400(h: Harness, params: dict[str, Any], path: str) -> None:
    status, out = await h.get(SAMPLES, **params)
    err = error_of(status, out, "VALIDATION_ERROR", 400)
    assert [d["path"] for d in err["details"]] == [path]


# -- tenancy ---------------------------------------------------------------------------------------------
async def test_users_never_see_or_replay_each_other(h: Harness) -> None:
    body = signed([sample("r1"), sample("r2", start="2026-11-24T08:01:00Z")], request_id="shared-id")
    assert (await h.post(body, user="alice"))[0] == 200
    # bob's GET is empty; his upload of the very same body is a fresh request, not alice's replay
    assert await h.get(SAMPLES, user="bob") == (200, {"items": [], "nextCursor": None})
    status, out, hdrs = await h.post(body, user="bob")
    assert (status, out["inserted"], out["updated"]) == (200, 2, 0)
    assert "Idempotent-Replay" not in hdrs
    # the same requestId with another payload is fine for carol (her own request space)
    status, out, _ = await h.post(signed([sample("c1")], request_id="shared-id"), user="carol")
    assert (status, out["inserted"]) == (200, 1)
    assert h.db.sample_count("alice") == 2 and h.db.sample_count("bob") == 2 and h.db.sample_count("carol") == 1
    assert [i["sourceRecordId"] for i in (await h.get(SAMPLES, user="carol"))[1]["items"]] == ["c1"]
    # a deletion by bob does not touch alice's identical sample
    await h.post(signed([], lane="change", deletions=[deletion("r1")]), user="bob")
    assert [r["source_record_id"] for r in h.db.samples("alice")] == ["r1", "r2"]
    assert [r["source_record_id"] for r in h.db.samples("bob")] == ["r2"]
    assert (h.db.watermark("alice"), h.db.watermark("bob"), h.db.watermark("carol")) == (2, 3, 1)


async def test_settings_are_per_user(h: Harness) -> None:
    assert (await h.put_settings("alice", allowHealthDataUpload=False, blockedMetrics=["steps"],
                                 timezone="Asia/Tokyo"))[0] == 200
    assert (await h.get(USER_SETTINGS, user="bob"))[1] == {"allowHealthDataUpload": True, "blockedMetrics": [],
                                                           "timezone": "UTC", "sourcePriority": []}
    status, out, _ = await h.post(signed([sample("s", metric="steps", value=1, unit="count")]), user="bob")
    assert (status, out["inserted"], out["rejected"]) == (200, 1, [])
    error_of(*(await h.post(signed(), user="alice"))[:2], "HEALTH_UPLOAD_DISABLED", 403)



async def test_settings_read_by_another_instance_are_current(tmp_path: Path) -> None:
    """Two app instances over one database (as behind a load balancer): a PUT on one is what the
    other's GET shows — and the GET agrees with what that instance enforces on upload."""
    async with running_app(tmp_path) as a, running_app(tmp_path) as b:
        assert (await b.get(USER_SETTINGS))[1]["allowHealthDataUpload"] is True  # b has read them once
        assert (await a.put_settings(allowHealthDataUpload=False, timezone="Europe/Berlin"))[0] == 200
        assert await b.get(USER_SETTINGS) == (200, {"allowHealthDataUpload": False, "blockedMetrics": [],
                                                    "timezone": "Europe/Berlin", "sourcePriority": []})
        error_of(*(await b.post(signed()))[:2], "HEALTH_UPLOAD_DISABLED", 403)

# -- concurrency -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("copies", [2, 8])
async def test_concurrent_requests_with_one_request_id_write_once(h: Harness, copies: int) -> None:
    body = signed([sample(f"r{i}", start=f"2026-11-24T08:{i:02d}:00Z") for i in range(20)])
    outcomes: list[tuple[int, Any, Any]] = []

    async def one() -> None:
        outcomes.append(await h.post(body))

    async with trio.open_nursery() as nursery:
        for _ in range(copies):
            nursery.start_soon(one)
    statuses = sorted(s for s, _, _ in outcomes)
    assert all(s in (200, 409) for s in statuses), outcomes
    fresh = [o for s, o, hd in outcomes if s == 200 and "Idempotent-Replay" not in hd]
    replays = [o for s, o, hd in outcomes if s == 200 and hd.get("Idempotent-Replay") == "true"]
    conflicts = [o for s, o, _ in outcomes if s == 409]
    assert len(fresh) == 1 and fresh[0]["inserted"] == 20
    assert len(fresh) + len(replays) + len(conflicts) == copies
    assert all(r == fresh[0] for r in replays)
    assert all(c["error"]["code"] == "REQUEST_IN_PROGRESS" for c in conflicts)
    assert h.db.sample_count("alice") == 20
    assert h.db.watermark("alice") == 20
    assert len(h.db.events("alice")) == 1


async def test_one_request_id_raced_with_two_payloads_on_two_lanes_commits_one(h: Harness) -> None:
    hot = signed([sample("hot-1"), sample("hot-2", start="2026-11-24T08:01:00Z")], lane="hot", request_id="same")
    cold = signed([sample("cold-1")], lane="cold", request_id="same")
    outcomes: dict[str, tuple[int, Any, Any]] = {}

    async def one(name: str, body: dict[str, Any]) -> None:
        outcomes[name] = await h.post(body)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "hot", hot)
        nursery.start_soon(one, "cold", cold)
    winner = next(name for name, (status, _, _) in outcomes.items() if status == 200)
    loser = "cold" if winner == "hot" else "hot"
    assert outcomes[loser][0] in (409, 422), outcomes
    assert outcomes[loser][1]["error"]["code"] in ("REQUEST_IN_PROGRESS", "PAYLOAD_HASH_MISMATCH")
    expected = ["hot-1", "hot-2"] if winner == "hot" else ["cold-1"]
    assert [r["source_record_id"] for r in h.db.samples("alice")] == expected
    assert h.db.watermark("alice") == len(expected)
    assert h.db.request("alice", "same")["lane"] == winner


async def test_concurrent_different_requests_in_all_lanes_all_commit(h: Harness) -> None:
    bodies = [signed([sample(f"{lane}-{n}-{i}", start=f"2026-11-2{n % 9}T08:{i:02d}:00Z") for i in range(5)],
                     lane=lane) for lane in ("hot", "cold", "change") for n in range(6)]
    statuses: list[int] = []

    async def one(body: dict[str, Any]) -> None:
        status, out, _ = await h.post(body)
        statuses.append(status)
        assert out["inserted"] == 5, out

    async with trio.open_nursery() as nursery:
        for body in bodies:
            nursery.start_soon(one, body)
    assert statuses == [200] * len(bodies)
    assert h.db.sample_count("alice") == 5 * len(bodies)
    assert h.db.watermark("alice") == 5 * len(bodies)
    assert len(h.db.events("alice")) == len(bodies)


# -- the reaper ------------------------------------------------------------------------------------------
async def test_reaper_frees_a_stale_claim_so_the_retry_succeeds(tmp_path: Path) -> None:
    clock = ManualClock()
    config = fast_tree_config(stale_after=120.0, reap_interval=3600.0)
    async with running_app(tmp_path, config=config, store_config=StoreConfig(clock=clock)) as h:
        reaper = h.system.ref("root/ingest/reaper")
        stale, fresh = signed([sample("r1")]), signed([sample("r2")])
        await claim_directly(h, stale)
        clock.advance(100)
        await claim_directly(h, fresh)
        clock.advance(21)  # stale: 121 s old, fresh: 21 s old
        error_of(*(await h.post(stale))[:2], "REQUEST_IN_PROGRESS", 409)
        assert await reaper.ask(ReapNow()) == 1
        assert h.db.request("alice", stale["requestId"])["status"] == "failed"
        assert h.db.request("alice", fresh["requestId"])["status"] == "processing"
        status, out, hdrs = await h.post(stale)
        assert (status, out["inserted"]) == (200, 1) and "Idempotent-Replay" not in hdrs
        error_of(*(await h.post(fresh))[:2], "REQUEST_IN_PROGRESS", 409)
        assert await reaper.ask(ReapNow()) == 0
        # a different payload cannot take over the reaped id
        clock.advance(200)
        assert await reaper.ask(ReapNow()) == 1
        error_of(*(await h.post(signed([sample("zz")], request_id=fresh["requestId"])))[:2],
                 "PAYLOAD_HASH_MISMATCH", 422)
        assert h.db.sample_count("alice") == 1


# -- OpenAPI ---------------------------------------------------------------------------------------------
def _schema(doc: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    return doc["components"]["schemas"][ref["$ref"].rsplit("/", 1)[-1]]  # type: ignore[no-any-return]


async def test_openapi_lists_ingestion_and_settings_with_their_schemas(h: Harness) -> None:
    response = await h.client.get("/openapi.json")
    assert response.status_code == 200
    doc = await response.get_json()
    paths = doc["paths"]

    upsert = paths["/v1/health/samples/batch-upsert"]["post"]
    body = _schema(doc, upsert["requestBody"]["content"]["application/json"]["schema"])
    assert {"requestId", "payloadHash", "lane", "samples", "deletions"} <= set(body["properties"])
    assert {"requestId", "payloadHash", "lane"} <= set(body["required"])
    assert body["properties"]["lane"]["enum"] == ["hot", "cold", "change"]
    ok = _schema(doc, upsert["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(ok["properties"]) == {"requestId", "status", "inserted", "updated", "deleted", "rejected"}
    rejection = _schema(doc, ok["properties"]["rejected"]["items"])
    for code in ("UNKNOWN_METRIC", "METRIC_BLOCKED", "SAMPLE_DELETED"):  # the codes are documented
        assert code in rejection["properties"]["code"]["description"]
    assert {"400", "401", "403", "409", "413", "415", "422", "429", "503"} <= set(upsert["responses"])
    assert upsert["security"] == [{"userBearer": []}]
    assert upsert["responses"]["429"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    sample_schema = json.dumps(doc["components"]["schemas"])
    for field in ("sourceId", "sourceRecordId", "metric", "value", "unit", "startAt", "endAt", "metadata"):
        assert f'"{field}"' in sample_schema

    listing = paths["/v1/health/samples"]["get"]
    assert {p["name"] for p in listing["parameters"] if p["in"] == "query"} == {"metric", "from", "to", "limit", "cursor"}
    page = _schema(doc, listing["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(page["properties"]) == {"items", "nextCursor"}

    settings = paths["/v1/users/me/settings"]
    assert set(settings) == {"get", "put"}
    put_body = _schema(doc, settings["put"]["requestBody"]["content"]["application/json"]["schema"])
    assert set(put_body["properties"]) == {"allowHealthDataUpload", "blockedMetrics", "timezone", "sourcePriority"}
    got = _schema(doc, settings["get"]["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(got["properties"]) == {"allowHealthDataUpload", "blockedMetrics", "timezone", "sourcePriority"}


async def test_payload_hash_helper_matches_what_the_server_checks(h: Harness) -> None:
    """The exported helper is what a Python client would use: its output is accepted."""
    body = {"requestId": "helper", "lane": "cold", "samples": [sample("r1", value=1.0)]}
    body["payloadHash"] = payload_hash(body)
    status, out, _ = await h.post(body)
    assert (status, out["inserted"]) == (200, 1)

