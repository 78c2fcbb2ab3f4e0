"""The domains' facades as transport sees them: typed values in and out, the domain's own errors,
and each error's place in the HTTP contract (``transport.to_api_error``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.accounts import InvalidCursor, InvalidSettings, settings_problems
from actors.ingest import (
    IngestUnavailable,
    InvalidUpload,
    LaneFull,
    PayloadHashMismatch,
    RequestInProgress,
    TooManyItems,
    UploadDisabled,
    UploadResult,
)
from storage import UserSettings
from tests.ingest_helpers import Harness, running_app, sample, signed
from transport import to_api_error


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_app(tmp_path) as harness:
        yield harness


def raw(body: object) -> bytes:
    import json

    return json.dumps(body).encode()


async def test_accept_upload_answers_a_typed_result_and_a_replay(h: Harness) -> None:
    body = signed([sample("r1"), sample("r2", unit="furlongs")])
    first = await h.services.ingest.accept_upload("alice", raw(body))
    assert isinstance(first, UploadResult)
    assert (first.request_id, first.inserted, first.updated, first.deleted, first.replayed) == (
        body["requestId"], 1, 0, 0, False)
    assert [(r.index, r.code) for r in first.rejected] == [(1, "UNKNOWN_UNIT")]
    again = await h.services.ingest.accept_upload("alice", raw(body))
    assert again.replayed and (again.inserted, again.rejected) == (1, first.rejected)


async def test_accept_upload_raises_the_domains_errors(h: Harness) -> None:
    ingest = h.services.ingest
    with pytest.raises(InvalidUpload) as invalid:
        await ingest.accept_upload("alice", b"{not json")
    assert [p.kind for p in invalid.value.problems] == ["json_invalid"]
    with pytest.raises(InvalidUpload) as missing:
        await ingest.accept_upload("alice", raw({"lane": "hot"}))
    assert {p.path for p in missing.value.problems} >= {"requestId", "payloadHash"}
    body = signed([sample("r1")])
    with pytest.raises(PayloadHashMismatch):
        await ingest.accept_upload("alice", raw({**body, "payloadHash": "0" * 64}))
    with pytest.raises(TooManyItems) as too_many:
        await ingest.accept_upload("alice", raw(signed([sample(f"r{i}") for i in range(5001)])))
    assert (too_many.value.count, too_many.value.limit) == (5001, 5000)
    await h.services.accounts.put_settings("alice", UserSettings(allow_health_data_upload=False))
    with pytest.raises(UploadDisabled):
        await ingest.accept_upload("alice", raw(body))


async def test_accounts_facade_reads_writes_and_refuses(h: Harness) -> None:
    accounts = h.services.accounts
    assert await accounts.get_settings("alice") == UserSettings()
    stored = await accounts.put_settings("alice", UserSettings(blocked_metrics=("steps",), timezone="Asia/Tokyo"))
    assert stored == UserSettings(blocked_metrics=("steps",), timezone="Asia/Tokyo")
    assert await accounts.get_settings("alice") == stored
    assert await accounts.get_settings("bob") == UserSettings()  # nobody else's
    with pytest.raises(InvalidSettings) as bad:
        await accounts.put_settings("alice", UserSettings(blocked_metrics=("nope",), timezone="Mars/Olympus"))
    assert set(bad.value.problems) == {"timezone", "blockedMetrics"}
    assert await accounts.get_settings("alice") == stored  # the refused write changed nothing

    await h.services.ingest.accept_upload("alice", raw(signed([sample(f"r{i}", start=f"2026-11-24T08:0{i}:00Z")
                                                               for i in range(3)])))
    page = await accounts.query_samples("alice", limit=2)
    assert [s.source_record_id for s in page.items] == ["r0", "r1"] and page.next_cursor is not None
    rest = await accounts.query_samples("alice", cursor=page.next_cursor)
    assert [s.source_record_id for s in rest.items] == ["r2"] and rest.next_cursor is None
    with pytest.raises(InvalidCursor):
        await accounts.query_samples("alice", cursor="not-a-cursor!")


def test_settings_problems_is_pure_and_names_each_field() -> None:
    assert settings_problems(UserSettings()) == {}
    assert settings_problems(UserSettings(timezone="Europe/Berlin", blocked_metrics=("steps", "spo2"))) == {}
    assert set(settings_problems(UserSettings(timezone="UTC+1"))) == {"timezone"}
    assert set(settings_problems(UserSettings(blocked_metrics=("steps", "mood")))) == {"blockedMetrics"}


@pytest.mark.parametrize("error, status, code", [
    (InvalidUpload("the request body is invalid"), 400, "VALIDATION_ERROR"),
    (TooManyItems(5001, 5000), 413, "PAYLOAD_TOO_LARGE"),
    (PayloadHashMismatch("no"), 422, "PAYLOAD_HASH_MISMATCH"),
    (UploadDisabled(), 403, "HEALTH_UPLOAD_DISABLED"),
    (RequestInProgress(), 409, "REQUEST_IN_PROGRESS"),
    (LaneFull("cold", 1234), 429, "LANE_BACKPRESSURE"),
    (IngestUnavailable("later"), 503, "UNAVAILABLE"),
    (InvalidCursor(), 400, "INVALID_CURSOR"),
    (InvalidSettings({"timezone": "unknown"}), 400, "VALIDATION_ERROR"),
])
def test_each_domain_error_has_its_place_in_the_http_contract(error: Exception, status: int, code: str) -> None:
    api = to_api_error(error)
    assert (api.status, api.code) == (status, code)
    if isinstance(error, LaneFull):
        assert (api.retry_after_ms, api.retryable, api.details) == (1234, True, {"lane": "cold"})
    if isinstance(error, InvalidSettings):
        assert api.details == [{"in": "body", "path": "timezone", "problem": "unknown"}]
